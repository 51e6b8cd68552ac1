"""``json.loads`` for untrusted form fields, with limits checked before parsing.

The standard parser recurses once per nesting level (a few thousand ``[`` raise
``RecursionError``) and converts integer literals of any length (a 5,000-digit literal
raises ``ValueError`` from Python's int-string limit, after quadratic work). Both were
500s. Here the size, the nesting depth and every number literal are bounded first, and
every failure is one ``JsonLimitError`` (a ``ValueError``) with a message for the client.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

# A JSON string literal (escapes included): brackets inside strings do not nest.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_MAX_NUMBER_CHARS = 40  # a float64 needs at most ~25 characters; ints in our schemas are small


class JsonLimitError(ValueError):
    """The text is not JSON, or is JSON beyond the limits."""


def json_depth(raw: str) -> int:
    """Maximum nesting depth of ``[``/``{`` in a JSON text, ignoring string contents.

    Linear in ``len(raw)`` and non-recursive, so it is safe on hostile input.
    """
    brackets = _BRACKET.findall(_STRING.sub('""', raw))
    return max(accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


def _number(text: str, kind: type) -> Any:
    if len(text) > _MAX_NUMBER_CHARS:
        raise JsonLimitError(f"a number literal has {len(text)} characters (at most {_MAX_NUMBER_CHARS})")
    return kind(text)


def _no_constants(name: str) -> Any:
    raise JsonLimitError(f"{name} is not allowed")


def loads_bounded(raw: str, *, max_chars: int, max_depth: int) -> Any:
    """Parse ``raw`` as JSON if it has at most ``max_chars`` characters, nests at most
    ``max_depth`` levels and has no number literal longer than 40 characters.

    NaN/Infinity literals are refused. Raises ``JsonLimitError`` with a client-facing
    message on any failure; never ``RecursionError``.
    """
    if len(raw) > max_chars:
        raise JsonLimitError(f"{len(raw)} characters; the limit is {max_chars}")
    depth = json_depth(raw)
    if depth > max_depth:
        raise JsonLimitError(f"nested {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(
            raw,
            parse_int=lambda s: _number(s, int),
            parse_float=lambda s: _number(s, float),
            parse_constant=_no_constants,
        )
    except JsonLimitError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise JsonLimitError(f"not valid JSON: {exc}") from None

"""Configs of realism elements drawn with a probability each (heads, world).

`HeadConfig` and `WorldConfig` are frozen dataclasses of floats in [0, 1]; this mixin
gives both the same spec language (command line, environment) and the same "legacy"
meaning (every element off), so the two never drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import fields
from typing import ClassVar, TypeVar

__all__ = ["ElementProbabilities"]

C = TypeVar("C", bound="ElementProbabilities")


class ElementProbabilities:
    """Mixin for a frozen dataclass whose fields are per-element probabilities."""

    #: what one element is called in error messages ("head", "world")
    element_kind: ClassVar[str] = "element"
    #: environment variable `from_env` reads
    env_var: ClassVar[str] = ""

    @classmethod
    def legacy(cls: type[C]) -> C:
        """Every element off: what the earlier generator drew."""
        return cls(**{f.name: 0.0 for f in fields(cls)})  # type: ignore[arg-type]

    @classmethod
    def parse(cls: type[C], spec: str | None) -> C:
        """``"legacy"``/``"off"``, ``"default"``/``"on"``/empty, a JSON object, or comma-separated
        ``name=probability`` overrides of the defaults (``"legacy,hair=1"`` starts from all off;
        the keyword applies wherever it stands)."""
        spec = (spec or "").strip()
        if spec.startswith("{"):
            return cls(**json.loads(spec))
        base, overrides = cls(), {}
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            if part in ("legacy", "off"):
                base = cls.legacy()
            elif part in ("default", "on"):
                base = cls()
            else:
                key, _, value = (s.strip() for s in part.partition("="))
                if key not in names:
                    raise ValueError(f"unknown {cls.element_kind} element {key!r} in {spec!r} "
                                     f"(known: {sorted(names)})")
                try:
                    overrides[key] = float(value)
                except ValueError:
                    raise ValueError(f"{cls.element_kind} element {key!r} in {spec!r}: "
                                     f"expected {key}=<probability in [0, 1]>") from None
        return dataclasses.replace(base, **overrides)  # type: ignore[type-var]

    def __post_init__(self) -> None:
        bad = {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
               if not 0.0 <= getattr(self, f.name) <= 1.0}
        if bad:
            raise ValueError(f"{self.element_kind} element probabilities outside [0, 1]: {bad}")

    @classmethod
    def from_env(cls: type[C]) -> C:
        """`parse` of the class's environment variable (unset: the defaults)."""
        return cls.parse(os.environ.get(cls.env_var))

    @property
    def any(self) -> bool:
        """Whether any element is on (else the legacy pipeline runs, byte for byte)."""
        return any(getattr(self, f.name) > 0 for f in fields(self))  # type: ignore[arg-type]

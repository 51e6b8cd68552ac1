"""The runnable examples of the docs: one ```python block per section, found by its heading."""

from __future__ import annotations

import re
from pathlib import Path


def python_block(path: Path, heading: str) -> str:
    """The one ```python block of the section of ``path`` headed ``heading`` (the whole
    heading line, e.g. ``## Python API``), up to the next ``## `` heading (a ``# `` comment
    inside a block would look like a level-1 heading, so only level 2 ends a section)."""
    text = path.read_text(encoding="utf-8")
    section = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, f"{path.name} has no '{heading}' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), flags=re.S | re.M)
    assert len(blocks) == 1, f"expected one python block in {path.name}'s '{heading}', found {len(blocks)}"
    return blocks[0]

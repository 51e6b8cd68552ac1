"""What every benchmark does with its result: print it, and append it to a markdown file
when asked (``--markdown FILE``)."""

from __future__ import annotations

from pathlib import Path


def publish(text: str, markdown: str | Path | None = None) -> None:
    """Print ``text``; with ``markdown``, also append it to that file after a blank line."""
    print(text)
    if markdown:
        with open(markdown, "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")

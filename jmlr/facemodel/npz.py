"""Writing the face model's npz files (the face model, the topology, the blendshape bases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_npz"]


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to ``path`` as a compressed npz, creating its folder; returns the path.

    Written through an open file so that numpy keeps the name as given (it appends
    ``.npz`` to a bare path that lacks it); equal arrays give identical bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path

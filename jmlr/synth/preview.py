"""Contact sheets: a grid of face tiles, some with the projected topology drawn on."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from jmlr.viz import draw_wireframe

__all__ = ["face_tile", "draw_wireframe", "contact_sheet"]


def face_tile(image: np.ndarray, points: np.ndarray, tile: int = 256,
              margin: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Square crop around ``points (N, 2)`` enlarged by ``margin``, resized to ``tile``.

    Returns the tile and the 2x3 affine image px -> tile px.
    """
    lo, hi = points.min(0), points.max(0)
    c = (lo + hi) / 2
    half = max(hi - lo) * (0.5 + margin)
    s = tile / (2 * half)
    M = np.array([[s, 0, tile / 2 - s * c[0]], [0, s, tile / 2 - s * c[1]]])
    return cv2.warpAffine(image, M, (tile, tile), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT), M


def contact_sheet(tiles: Sequence[np.ndarray], cols: int = 4, gap: int = 4, background: int = 255) -> np.ndarray:
    """Tiles (same size, uint8 RGB) in a grid ``cols`` wide."""
    if not tiles:
        raise ValueError("no tiles")
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * h + (rows + 1) * gap, cols * w + (cols + 1) * gap, 3), background, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        sheet[y:y + h, x:x + w] = t
    return sheet

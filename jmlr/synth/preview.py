"""Contact sheets: a grid of face tiles, some with the projected topology drawn on."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["face_tile", "draw_wireframe", "contact_sheet"]


def draw_wireframe(image: np.ndarray, points: np.ndarray, triangles: np.ndarray,
                   landmarks: np.ndarray | None = None, color=(80, 255, 120), thickness: int = 1) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with mesh edges of ``points (N, 2)`` px and
    ``triangles (F, 3)`` drawn anti-aliased, and optional landmark dots (68, 2)."""
    out = image.copy()
    shift = 4  # sub-pixel precision for cv2 drawing
    pts = np.round(np.asarray(points, np.float64) * (1 << shift)).astype(np.int32)
    tri = np.asarray(triangles)
    # Each edge once: shared edges drawn twice would look twice as heavy.
    edges = np.unique(np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1), axis=0)
    overlay = out.copy()
    cv2.polylines(overlay, list(pts[edges]), False, color, thickness, cv2.LINE_AA, shift)
    out = cv2.addWeighted(overlay, 0.4, out, 0.6, 0)
    if landmarks is not None:
        for x, y in np.asarray(landmarks, np.float64):
            cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), int(1.5 * 16), (255, 60, 60), -1,
                       cv2.LINE_AA, shift)
    return out


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

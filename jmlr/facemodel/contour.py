"""Where a topology's 17 jaw points may slide to follow a face's visible outline.

People put the iBUG jaw points on the outline they see; a mesh vertex is a fixed point of
the face. Each side jaw point therefore gets candidates: the vertices on its horizontal
line of the mean face between it and (part way to) the midline.
`jmlr.inference.landmarks.contour_landmarks_68` picks one per posed face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["JawContour", "jaw_contour", "CHIN_POINTS"]

#: The jaw points that never slide: around the chin a horizontal line is no outline.
CHIN_POINTS = range(6, 11)


@dataclass(frozen=True)
class JawContour:
    """Where each of the 17 jaw points may slide.

    Attributes:
        candidates: 17 int64 arrays of topology vertex indices, each starting with the
            point's own vertex (a chin point has only that one).
        sides: (17,) +1 or -1, the sign of each point's mean-shape x (0 for the midline).
    """

    candidates: tuple[np.ndarray, ...]
    sides: np.ndarray


def jaw_contour(mean_shape: np.ndarray, landmarks68: np.ndarray, band_m: float = 0.005,
                inner: float = 0.5) -> JawContour:
    """The candidates of each jaw point of a topology.

    Args:
        mean_shape: (N, 3) mean face, head frame, metres (y up).
        landmarks68: (68,) topology vertex indices of the iBUG points.
        band_m: a candidate lies within this height (y) of the jaw point's.
        inner: and on the same side, no closer to the midline than ``inner`` times the
            jaw point's own distance from it (keeps the nose and the eyes out).
    """
    V = np.asarray(mean_shape, dtype=np.float64)
    lm = np.asarray(landmarks68, dtype=np.int64)
    ax = np.abs(V[:, 0])
    candidates, sides = [], np.zeros(17, dtype=np.float64)
    for k in range(17):
        v = int(lm[k])
        x, y = V[v, 0], V[v, 1]
        sides[k] = np.sign(x)
        if k in CHIN_POINTS or sides[k] == 0:
            candidates.append(np.array([v], dtype=np.int64))
            continue
        ok = (np.abs(V[:, 1] - y) <= band_m) & (np.sign(V[:, 0]) == sides[k])
        ok &= (ax >= inner * abs(x)) & (ax <= abs(x))
        ok[v] = False
        candidates.append(np.concatenate([[v], np.flatnonzero(ok)]).astype(np.int64))
    return JawContour(tuple(candidates), sides)

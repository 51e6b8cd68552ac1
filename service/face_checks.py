"""Client-located faces checked against the image they claim to be in.

The schema bounds each number; only the image size tells whether a face can be in the
photo at all. A box wholly outside the image used to give ``pose_ok: true``, a stored
mesh and a distance of 28.7 m from a black crop; five identical points made the crop's
similarity singular.
"""

from __future__ import annotations

import numpy as np

from .errors import ApiError
from .schemas import FaceIn

_MIN_SPREAD_PX = 2.0


def _refuse(i: int, why: str) -> ApiError:
    return ApiError(422, "invalid_faces", f"faces[{i}]: {why}")


def check_client_faces(faces: list[FaceIn], width: int, height: int) -> None:
    """Raise 422 ``invalid_faces`` for the first face that cannot be in a ``width`` ×
    ``height`` image: a box that does not overlap it, landmarks all outside it, or
    landmarks too close together to define a crop."""
    for i, face in enumerate(faces):
        if face.bbox is not None:
            x0, y0, x1, y1 = face.bbox
            if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                raise _refuse(i, f"the box {face.bbox} lies entirely outside the {width}x{height} image")
            if min(x1 - x0, y1 - y0) < _MIN_SPREAD_PX:
                raise _refuse(i, f"the box {face.bbox} is smaller than {_MIN_SPREAD_PX:g} pixels")
        if face.landmarks5 is not None:
            pts = np.asarray(face.landmarks5, dtype=np.float64)
            inside = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
            if not inside.any():
                raise _refuse(i, f"all five landmarks lie outside the {width}x{height} image")
            if float(np.ptp(pts, axis=0).max()) < _MIN_SPREAD_PX:
                raise _refuse(i, "the five landmarks are (almost) the same point")

"""Where the faces are: the detector's, or the caller's boxes or five points.

Every face ends up as a :class:`Face`: a box, the five points its crop is aligned on
(left eye, right eye, nose, left mouth, right mouth, in image order; ``docs/design.md``),
the detector's confidence and where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from jmlr.detect import Detector, landmarks_in_box

__all__ = ["Face", "FaceHint", "FaceSource", "bbox_around_landmarks", "locate_faces"]

#: ``detector``: found by the detector; ``client_landmarks``: the caller's five points;
#: ``client_bbox``: the caller's box, with five points from the detector inside it (or
#: the mean face's placement when it finds none); ``tracked``: five points predicted on
#: the previous frame of a video (`jmlr.tracking`).
FaceSource = Literal["detector", "client_landmarks", "client_bbox", "tracked"]


@dataclass(frozen=True)
class Face:
    """A located face.

    Attributes:
        bbox: (4,) float64 ``x0, y0, x1, y1`` image px.
        landmarks5: (5, 2) float64 image px, what the crop is aligned on.
        score: the detector's confidence, or None (the caller's points, the mean face).
        source: see :data:`FaceSource`.
    """

    bbox: np.ndarray
    landmarks5: np.ndarray
    score: float | None
    source: FaceSource


class FaceHintLike(Protocol):
    """Anything with a ``bbox`` and/or ``landmarks5`` (the service's ``FaceIn`` is one)."""

    @property
    def bbox(self) -> Sequence[float] | None: ...

    @property
    def landmarks5(self) -> Sequence[Sequence[float]] | None: ...


@dataclass(frozen=True)
class FaceHint:
    """A face the caller located: a box ``[x0, y0, x1, y1]``, five points, or both (px)."""

    bbox: Sequence[float] | None = None
    landmarks5: Sequence[Sequence[float]] | None = None


def bbox_around_landmarks(landmarks5: np.ndarray) -> np.ndarray:
    """A face box (4,) around five points: they span eyes to mouth, a face is about twice
    that, centred a little higher."""
    lo, hi = landmarks5.min(axis=0), landmarks5.max(axis=0)
    c, s = (lo + hi) / 2, max(hi - lo) * 1.0 + 1.0
    return np.array([c[0] - s, c[1] - 1.1 * s, c[0] + s, c[1] + 0.9 * s])


def locate_faces(image: np.ndarray, detector: Detector, given: Sequence[FaceHintLike] | None = None,
                 max_faces: int | None = None, reduction: int = 1) -> list[Face]:
    """The faces to reconstruct in an RGB uint8 (H, W, 3) image.

    With ``given`` (the caller's faces, in order) each one's five points are used as they
    are, or found by ``detector`` inside its box; without, ``detector`` finds them, best
    score first. At most ``max_faces`` (None: all). ``reduction``: ``image`` is the frame
    decoded at 1/reduction of its size (`crop_faces`); faces are frame px either way, and
    a face given by its box alone needs the full frame (reduction 1).
    """
    if given is not None:
        if reduction != 1 and any(f.landmarks5 is None for f in given[:max_faces]):
            raise ValueError("faces given by their box alone are located in the full frame (reduction 1)")
        return [_given_face(image, detector, f) for f in given[:max_faces]]
    found = detector.detect(image) if reduction == 1 else detector.detect(image, reduction=reduction)
    dets = sorted(found, key=lambda d: -d.score)
    return [Face(d.bbox, d.landmarks5, d.score, "detector") for d in dets[:max_faces]]


def _given_face(image: np.ndarray, detector: Detector, hint: FaceHintLike) -> Face:
    if hint.landmarks5 is not None:
        lm = np.asarray(hint.landmarks5, dtype=np.float64)
        bbox = np.asarray(hint.bbox, dtype=np.float64) if hint.bbox is not None else bbox_around_landmarks(lm)
        return Face(bbox, lm, None, "client_landmarks")
    if hint.bbox is None:
        raise ValueError("a given face needs a bbox or landmarks5")
    bbox = np.asarray(hint.bbox, dtype=np.float64)
    lm, score = landmarks_in_box(detector, image, bbox)
    return Face(bbox, lm, score, "client_bbox")

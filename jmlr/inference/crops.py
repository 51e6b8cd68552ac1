"""The JMLR crop of each face and the way back: image px <-> crop px.

``M`` (2, 3) maps image pixels to crop pixels (a similarity from the five points onto the
JMLR template, ``jmlr.geometry.crop``); the network's 2D points come back to the image
through ``M``'s inverse.

A frame may be decoded at a fraction ``1 / reduction`` of its size (a JPEG's DCT
scaling, 2, 4 or 8 times fewer pixels per side: far cheaper for large photos): the five
points and ``M`` stay in frame pixels, and the crop samples the reduced pixels.
:func:`max_reduction` says how far a set of faces allows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from jmlr.geometry.crop import (
    apply_affine,
    compose_affine,
    crop_transform,
    invert_affine,
    similarity_scale,
    warp_crop,
)

__all__ = ["FaceCrops", "InvalidFacesError", "crop_faces", "uncrop_points", "max_reduction", "REDUCTIONS",
           "reduced_to_frame"]

#: the reductions a JPEG decoder offers (libjpeg's DCT scaling), largest first
REDUCTIONS = (8, 4, 2)


class InvalidFacesError(ValueError):
    """The given five points do not define a usable crop (degenerate or absurd)."""


@dataclass(frozen=True)
class FaceCrops:
    """Aligned crops of F faces at one size S.

    Ms: (F, 2, 3) float64 image px -> crop px. crops: (F, S, S, 3) uint8 RGB.
    """

    Ms: np.ndarray
    crops: np.ndarray

    @property
    def size(self) -> int:
        return int(self.crops.shape[1])

    def __len__(self) -> int:
        return len(self.Ms)


def reduced_to_frame(reduction: int) -> np.ndarray:
    """(2, 3) reduced px -> frame px: reduced pixel ``i`` averages frame pixels
    ``[r i, r i + r)``, so its centre is frame pixel ``r i + (r - 1) / 2``."""
    r = float(reduction)
    return np.array([[r, 0.0, (r - 1) / 2], [0.0, r, (r - 1) / 2]])


def max_reduction(landmarks5: Sequence[np.ndarray] | np.ndarray, size: int) -> int:
    """The largest of 1 and :data:`REDUCTIONS` at which the frame can be decoded without
    any face's crop of ``size`` px sampling it finer than one reduced pixel per crop
    pixel (so the crop keeps every detail it had from the full frame).

    landmarks5: (F, 5, 2) frame px; no faces allows any reduction."""
    Ms = [crop_transform(lm, size) for lm in landmarks5]
    if not Ms:
        return REDUCTIONS[0]
    crop_px_per_frame_px = float(np.max(similarity_scale(np.stack(Ms))))
    if not np.isfinite(crop_px_per_frame_px) or crop_px_per_frame_px <= 0:
        return 1
    return next((r for r in REDUCTIONS if r * crop_px_per_frame_px <= 1.0), 1)


def crop_faces(image: np.ndarray, landmarks5: Sequence[np.ndarray] | np.ndarray, size: int,
               reduction: int = 1) -> FaceCrops:
    """Crop each face of an RGB uint8 image: (F, 5, 2) frame px -> F crops of S px.

    ``image`` is the frame (H, W, 3), or the frame decoded at ``1 / reduction`` of its
    size; the points and the returned ``Ms`` are frame px either way.

    Raises:
        InvalidFacesError: the points give no invertible, finite alignment.
    """
    try:
        Ms = [crop_transform(lm, size) for lm in landmarks5]
        to_frame = reduced_to_frame(reduction)
        crops = [warp_crop(image, M if reduction == 1 else compose_affine(M, to_frame), size) for M in Ms]
    except (np.linalg.LinAlgError, cv2.error, ValueError) as exc:
        raise InvalidFacesError(f"the faces do not define a usable crop: {exc}") from None
    if not crops:
        return FaceCrops(np.zeros((0, 2, 3)), np.zeros((0, size, size, 3), np.uint8))
    return FaceCrops(np.stack(Ms), np.stack(crops))


def uncrop_points(Ms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Crop px (F, N, 2) of faces cropped with Ms (F, 2, 3) -> image px (F, N, 2) float64."""
    if len(Ms) == 0:
        return np.zeros(np.shape(points), np.float64)
    return np.stack([apply_affine(invert_affine(M), p) for M, p in zip(Ms, points)])

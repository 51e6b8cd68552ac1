"""The JMLR crop of each face and the way back: image px <-> crop px.

``M`` (2, 3) maps image pixels to crop pixels (a similarity from the five points onto the
JMLR template, ``jmlr.geometry.crop``); the network's 2D points come back to the image
through ``M``'s inverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from jmlr.geometry.crop import apply_affine, crop_transform, invert_affine, warp_crop

__all__ = ["FaceCrops", "InvalidFacesError", "crop_faces", "uncrop_points"]


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


def crop_faces(image: np.ndarray, landmarks5: Sequence[np.ndarray] | np.ndarray, size: int) -> FaceCrops:
    """Crop each face of an RGB uint8 (H, W, 3) image: (F, 5, 2) image px -> F crops of S px.

    Raises:
        InvalidFacesError: the points give no invertible, finite alignment.
    """
    try:
        Ms = [crop_transform(lm, size) for lm in landmarks5]
        crops = [warp_crop(image, M, size) for M in Ms]
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

"""Face alignment for training and evaluation: 68 landmarks -> crop transform -> targets.

The crop transform ``M`` (2×3, image px -> crop px, a similarity) comes from the five
points of the 68 landmarks fitted to the JMLR template (``jmlr.geometry.crop``). The
training targets are the ground-truth vertices (world metres) and their projections
mapped into the crop by ``M`` (crop px, OpenCV pixel centres).

Train-time jitter perturbs ``M`` by a random similarity about the crop centre, so the
network learns to tolerate the error of a real landmark detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from jmlr.geometry.camera import project_points
from jmlr.geometry.crop import (
    apply_affine,
    compose_affine,
    crop_transform,
    jitter_similarity,
    landmarks5_from_68,
    warp_crop,
)


@dataclass(frozen=True)
class AlignJitter:
    """Ranges of the random similarity applied to an alignment (all uniform, symmetric).

    scale: relative scale change (0.05 -> factor in [0.95, 1.05]).
    rotate_deg: in-plane rotation, degrees.
    shift: translation as a fraction of the crop size.
    """

    scale: float = 0.05
    rotate_deg: float = 5.0
    shift: float = 0.03

    @classmethod
    def from_dict(cls, d: dict | None) -> AlignJitter | None:
        if not d:
            return None
        return cls(**{k: float(v) for k, v in d.items()})

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """One random similarity (2, 3) of ``size`` crop px about the crop centre
        (`jmlr.geometry.crop.jitter_similarity`)."""
        return jitter_similarity(rng, 1, size, self.scale, self.rotate_deg, self.shift)[0]


def alignment_from_landmarks68(landmarks68: np.ndarray, size: int) -> np.ndarray:
    """Crop transform of a face from its 68 landmarks.

    landmarks68: (68, 2) image px. Returns M (2, 3) float64, image px -> crop px of an
    ``size``×``size`` crop, the least-squares similarity of the 5 points onto the template.
    """
    return np.asarray(crop_transform(landmarks5_from_68(np.asarray(landmarks68, np.float64)), size=size),
                      dtype=np.float64)


def crop_points(verts: np.ndarray, R_t: np.ndarray, K: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Crop-pixel projections of world vertices.

    verts (N, 3) world m; R_t (4, 4) row-vector world -> OpenGL camera; K (3, 3) image px;
    M (2, 3) image px -> crop px. Returns (N, 2) float32 crop px.
    """
    uv = project_points(np.asarray(verts, np.float64), np.asarray(R_t, np.float64), np.asarray(K, np.float64))
    return np.asarray(apply_affine(M, uv), dtype=np.float32)


def align_sample(image: np.ndarray, landmarks68: np.ndarray, verts: np.ndarray, R_t: np.ndarray,
                 K: np.ndarray, size: int, rng: np.random.Generator | None = None,
                 jitter: AlignJitter | None = None) -> dict:
    """Crop one face and its targets.

    image (H, W, 3) uint8 RGB; landmarks68 (68, 2) image px; verts (N, 3) world m;
    R_t (4, 4); K (3, 3). With ``rng`` and ``jitter`` the alignment is perturbed.
    Returns a dict of numpy arrays: ``image`` (S, S, 3) uint8, ``points2d`` (N, 2) crop px,
    ``verts`` (N, 3) float32, ``R_t`` (4, 4), ``K`` (3, 3), ``M`` (2, 3), all float32.
    """
    M = alignment_from_landmarks68(landmarks68, size)
    if rng is not None and jitter is not None:
        M = compose_affine(jitter.sample(rng, size), M)
    return {
        "image": warp_crop(image, M, size),
        "points2d": crop_points(verts, R_t, K, M),
        "verts": np.asarray(verts, np.float32),
        "R_t": np.asarray(R_t, np.float32),
        "K": np.asarray(K, np.float32),
        "M": np.asarray(M, np.float32),
    }


def masked_full_image(image: np.ndarray, landmarks68: np.ndarray, size: int,
                      dilate_frac: float = 0.1) -> np.ndarray:
    """The whole image with everything outside the face blackened, letterboxed to S×S.

    Input of the paper's Fig. 1 baselines (6DoF from the whole image). The face region
    is the convex hull of the 68 landmarks, dilated by ``dilate_frac`` of the face's
    bounding-box diagonal. The image is padded at the bottom/right to a square, then
    resized, so pixel positions (hence the pose cue) are kept up to one scale factor.
    image (H, W, 3) uint8; landmarks68 (68, 2) px. Returns (size, size, 3) uint8.
    """
    h, w = image.shape[:2]
    lm = np.asarray(landmarks68, np.float64)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(lm).astype(np.int32)), 255)
    diag = float(np.linalg.norm(lm.max(0) - lm.min(0)))
    r = max(1, int(round(dilate_frac * diag)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    side = max(h, w)
    square = np.zeros((side, side, 3), np.uint8)
    square[:h, :w] = image * (mask[..., None] > 0)
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)

"""The JMLR face crop: a similarity transform from 5 landmarks to a widened ArcFace template.

``M`` (…, 2, 3) maps image pixels to crop pixels as ``cv2.warpAffine`` takes it
(``p_crop = M[:, :2] @ p_img + M[:, 2]``); :func:`invert_affine` gives the crop → image
map. Pixel coordinates follow OpenCV (centre of the top-left pixel at (0, 0)).

The 5 points are (left-eye centre, right-eye centre, nose tip, left mouth corner,
right mouth corner) in *image* order: the first eye is the one on the image's left.
"""

from __future__ import annotations

import cv2
import numpy as np

#: ArcFace 5-point template for 112×112 crops, pixels.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: The JMLR template lives in a 144×144 frame: the ArcFace one shifted by (16, 8).
JMLR_TEMPLATE_BASE = 144
JMLR_TEMPLATE_OFFSET = np.array([16.0, 8.0])


def jmlr_template(size: int = 256) -> np.ndarray:
    """(5, 2) template in pixels of a ``size``×``size`` crop: ``(ArcFace + (16, 8)) * size / 144``."""
    return (ARCFACE_TEMPLATE_112 + JMLR_TEMPLATE_OFFSET) * (size / JMLR_TEMPLATE_BASE)


def landmarks5_from_68(lm68: np.ndarray) -> np.ndarray:
    """(…, 68, 2 or 3) iBUG landmarks → (…, 5, ·): eye centres mean(36, 39), mean(42, 45), nose 30, mouth 48, 54."""
    lm68 = np.asarray(lm68)
    return np.stack(
        [
            0.5 * (lm68[..., 36, :] + lm68[..., 39, :]),
            0.5 * (lm68[..., 42, :] + lm68[..., 45, :]),
            lm68[..., 30, :],
            lm68[..., 48, :],
            lm68[..., 54, :],
        ],
        axis=-2,
    )


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2D similarity (rotation, uniform scale, translation; no reflection), Umeyama 1991.

    Same estimate as ``skimage.transform.SimilarityTransform.estimate``.

    Args:
        src: (…, P, 2) source points.
        dst: (…, P, 2) destination points.

    Returns:
        M (…, 2, 3) with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s = src.mean(axis=-2, keepdims=True)
    mu_d = dst.mean(axis=-2, keepdims=True)
    s_c = src - mu_s
    d_c = dst - mu_d
    cov = np.swapaxes(d_c, -1, -2) @ s_c / src.shape[-2]  # (…, 2, 2)
    U, S, Vt = np.linalg.svd(cov)
    d = np.ones(cov.shape[:-2] + (2,))
    d[..., 1] = np.where(np.linalg.det(cov) < 0, -1.0, 1.0)  # forbid a reflection
    R = (U * d[..., None, :]) @ Vt
    var_s = (s_c**2).sum(axis=(-1, -2)) / src.shape[-2]
    scale = (S * d).sum(axis=-1) / var_s
    A = scale[..., None, None] * R
    t = mu_d[..., 0, :] - (A @ mu_s[..., 0, :, None])[..., 0]
    return np.concatenate([A, t[..., None]], axis=-1)


def crop_transform(landmarks5: np.ndarray, size: int = 256) -> np.ndarray:
    """M (…, 2, 3) image px → crop px aligning 5 landmarks (…, 5, 2) to :func:`jmlr_template`."""
    landmarks5 = np.asarray(landmarks5, dtype=np.float64)[..., :2]
    return estimate_similarity(landmarks5, jmlr_template(size))


def warp_crop(
    image: np.ndarray,
    M: np.ndarray,
    size: int = 256,
    interpolation: int = cv2.INTER_LINEAR,
    border_value=0,
) -> np.ndarray:
    """Warp an image (H, W[, C]) with M (2, 3) to a ``size``×``size`` crop (dtype kept); outside is ``border_value``."""
    return cv2.warpAffine(
        image,
        np.asarray(M, dtype=np.float64),
        (size, size),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


def invert_affine(M: np.ndarray) -> np.ndarray:
    """Inverse (…, 2, 3) of an invertible 2D affine M (…, 2, 3), e.g. crop px → image px."""
    M = np.asarray(M, dtype=np.float64)
    A_inv = np.linalg.inv(M[..., :2, :2])
    t_inv = -(A_inv @ M[..., :2, 2:3])
    return np.concatenate([A_inv, t_inv], axis=-1)


def compose_affine(M2: np.ndarray, M1: np.ndarray) -> np.ndarray:
    """The affine (…, 2, 3) that applies M1 then M2."""
    M1 = np.asarray(M1, dtype=np.float64)
    M2 = np.asarray(M2, dtype=np.float64)
    A = M2[..., :2, :2] @ M1[..., :2, :2]
    t = M2[..., :2, :2] @ M1[..., :2, 2:3] + M2[..., :2, 2:3]
    return np.concatenate([A, t], axis=-1)


def apply_affine(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply M (…, 2, 3) to points (…, N, 2) → (…, N, 2)."""
    M = np.asarray(M, dtype=np.float64)
    return np.asarray(points) @ np.swapaxes(M[..., :2, :2], -1, -2) + M[..., None, :2, 2]


def similarity_scale(M: np.ndarray) -> np.ndarray:
    """Uniform scale (…,) of a similarity M (…, 2, 3): crop px per image px."""
    M = np.asarray(M, dtype=np.float64)
    return np.sqrt(np.abs(np.linalg.det(M[..., :2, :2])))


def jitter_similarity(rng: np.random.Generator, batch: int, size: int, scale: float, rotate_deg: float,
                      shift: float) -> np.ndarray:
    """Random similarities (B, 2, 3) of crop px about the crop centre ((size - 1) / 2 each axis).

    Per sample, uniformly: a scale factor in ``1 ± scale``, a rotation in ``± rotate_deg``
    degrees, a shift in ``± shift * size`` px per axis (drawn in that order, for the whole
    batch at a time). Composed after a crop transform it perturbs the alignment, which
    teaches a network to tolerate a real detector's landmark error.
    """
    s = 1 + rng.uniform(-scale, scale, batch)
    a = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, batch))
    t = rng.uniform(-shift, shift, (batch, 2)) * size
    c = (size - 1) / 2.0
    A = np.stack([np.stack([s * np.cos(a), -s * np.sin(a)], -1), np.stack([s * np.sin(a), s * np.cos(a)], -1)], -2)
    centre = np.array([c, c])
    trans = centre - A @ centre + t
    return np.concatenate([A, trans[..., None]], -1)

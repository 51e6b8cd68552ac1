"""Cameras and the WCPA / ARKitFace conventions.

Conventions (see ``docs/design.md``):

- ``R_t`` (…, 4, 4) is the challenge's *row-vector* world → OpenGL-camera transform:
  ``V_cam = [V, 1] @ R_t = V @ R + T`` with ``R = R_t[..., :3, :3]`` and
  ``T = R_t[..., 3, :3]``. Units: metres.
- OpenGL camera: x right, y up, looking down −z (visible points have z < 0).
- OpenCV camera: x right, y down, z forward, ``X_cv = R_cv @ V + t_cv`` (column vectors).
  ``F = diag(1, -1, -1)``, ``R_cv = F @ R.T``, ``t_cv = F @ T``.
- Pixels: OpenCV convention, the centre of the top-left pixel is (0, 0);
  ``u = fx * x_cv / z_cv + cx``, ``v = fy * y_cv / z_cv + cy``.
- NDC → pixels follows the WCPA toolkit: ``u = (ndc_x + 1) * W / 2``,
  ``v = (1 - ndc_y) * H / 2``, so a centred projection matrix gives ``cx = W / 2``
  (not ``(W - 1) / 2``). This is what makes WCPA ``cx = cy = 400``.

All functions are numpy and broadcast over leading dimensions unless stated; torch
counterparts live in ``jmlr.geometry.torch_ops`` so that this package imports without torch.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

#: The WCPA challenge ``projection_matrix.txt``: OpenGL-style, row-vector
#: (``clip = [x, y, z, 1] @ P``), for 800×800 images.
WCPA_PROJECTION_MATRIX = np.array(
    [
        [1.57443701, 0.0, 0.0, 0.0],
        [0.0, 1.57443701, 0.0, 0.0],
        [0.0, 0.0, -0.99999976, -1.0],
        [0.0, 0.0, -0.001, 0.0],
    ],
    dtype=np.float64,
)

#: (width, height) of WCPA / ARKitFace images in pixels.
WCPA_IMAGE_SIZE = (800, 800)

#: Diagonal of the 36×24 mm "full frame" used by EXIF ``FocalLengthIn35mmFilm``.
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.2666 mm

#: Axis flip between OpenGL and OpenCV camera frames (its own inverse).
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
OPENGL_TO_OPENCV_4x4 = np.diag([1.0, -1.0, -1.0, 1.0])


# --------------------------------------------------------------------------- intrinsics


def make_intrinsics(fx, fy, cx, cy) -> np.ndarray:
    """K (…, 3, 3) ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` from broadcastable scalars/arrays (px)."""
    fx, fy, cx, cy = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (fx, fy, cx, cy)))
    K = np.zeros(fx.shape + (3, 3))
    K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = fx, fy, cx, cy, 1.0
    return K


def intrinsics_from_projection(P: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel intrinsics K (…, 3, 3) from an OpenGL-style row-vector projection matrix.

    Args:
        P: (…, 4, 4) projection, ``clip = [x, y, z, 1] @ P`` with camera looking down −z
           (``w_clip = -z``). The column-vector form is ``P.T``.
        width, height: size in pixels of the image the projection renders.

    Returns:
        K (…, 3, 3) in pixels. For the WCPA matrix and 800×800: fx = fy = 629.775,
        cx = cy = 400.
    """
    P = np.asarray(P, dtype=np.float64)
    # ndc_x = P00 x/(-z) - P20 ; u = (ndc_x + 1) W/2 = (W/2 P00) x_cv/z_cv + W/2 (1 - P20)
    fx = 0.5 * width * P[..., 0, 0]
    fy = 0.5 * height * P[..., 1, 1]
    cx = 0.5 * width * (1.0 - P[..., 2, 0])
    # ndc_y = P11 y/(-z) - P21 ; v = (1 - ndc_y) H/2 and y_cv = -y
    cy = 0.5 * height * (1.0 + P[..., 2, 1])
    return make_intrinsics(fx, fy, cx, cy)


def projection_from_intrinsics(
    K: np.ndarray, width: int, height: int, near: float = 0.01, far: float = 100.0
) -> np.ndarray:
    """OpenGL-style row-vector projection P (…, 4, 4) from K; inverse of :func:`intrinsics_from_projection`.

    Args:
        K: (…, 3, 3) intrinsics in pixels (skew is ignored).
        width, height: image size in pixels.
        near, far: clip planes in metres (positive distances), standard OpenGL depth mapping.
    """
    K = np.asarray(K, dtype=np.float64)
    P = np.zeros(K.shape[:-2] + (4, 4))
    P[..., 0, 0] = 2.0 * K[..., 0, 0] / width
    P[..., 1, 1] = 2.0 * K[..., 1, 1] / height
    P[..., 2, 0] = 1.0 - 2.0 * K[..., 0, 2] / width
    P[..., 2, 1] = 2.0 * K[..., 1, 2] / height - 1.0
    P[..., 2, 2] = -(far + near) / (far - near)
    P[..., 3, 2] = -2.0 * far * near / (far - near)
    P[..., 2, 3] = -1.0
    return P


def wcpa_intrinsics() -> np.ndarray:
    """K (3, 3) of the WCPA challenge images (800×800)."""
    return intrinsics_from_projection(WCPA_PROJECTION_MATRIX, *WCPA_IMAGE_SIZE)


def rescale_intrinsics(
    K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int], half_pixel: bool = True
) -> np.ndarray:
    """K for an image resized from ``from_size`` to ``to_size`` (both (width, height)).

    With ``half_pixel=True`` (default) this matches ``cv2.resize``'s sampling for the
    pixel-centre convention: ``u' = s * (u + 0.5) - 0.5``. With ``False``, ``u' = s * u``
    (the convention of a renderer mapping NDC to ``[0, W]``).
    """
    K = np.array(K, dtype=np.float64, copy=True)
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    off = 0.5 if half_pixel else 0.0
    K[..., 0, 0] *= sx
    K[..., 0, 1] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = sx * (K[..., 0, 2] + off) - off
    K[..., 1, 2] = sy * (K[..., 1, 2] + off) - off
    return K


def crop_intrinsics(K: np.ndarray, x0, y0) -> np.ndarray:
    """K for the axis-aligned crop whose top-left pixel is (x0, y0) of the original image."""
    K = np.array(K, dtype=np.float64, copy=True)
    K[..., 0, 2] -= np.asarray(x0, dtype=np.float64)
    K[..., 1, 2] -= np.asarray(y0, dtype=np.float64)
    return K


def intrinsics_from_focal_35mm(f35_mm, width: int, height: int) -> np.ndarray:
    """K from an EXIF 35 mm-equivalent focal length (``FocalLengthIn35mmFilm``).

    Convention: the *diagonal* of the image corresponds to the 43.27 mm diagonal of a
    36×24 mm frame (this is how EXIF defines the equivalence, and it is independent of
    the aspect ratio): ``f_px = f35 * hypot(W, H) / 43.27``. Square pixels, principal
    point at the image centre (W/2, H/2).
    """
    f = np.asarray(f35_mm, dtype=np.float64) * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
    return make_intrinsics(f, f, 0.5 * width, 0.5 * height)


def intrinsics_from_fov(
    fov_deg,
    width: int,
    height: int,
    axis: Literal["horizontal", "vertical", "diagonal"] = "horizontal",
) -> np.ndarray:
    """K from a full field of view in degrees along ``axis``; square pixels, centred.

    ``f_px = (extent / 2) / tan(fov / 2)`` with extent W, H or hypot(W, H) pixels.
    """
    extent = {"horizontal": width, "vertical": height, "diagonal": math.hypot(width, height)}
    if axis not in extent:
        raise ValueError(f"axis must be horizontal, vertical or diagonal, not {axis!r}")
    f = 0.5 * extent[axis] / np.tan(np.deg2rad(np.asarray(fov_deg, dtype=np.float64)) / 2.0)
    return make_intrinsics(f, f, 0.5 * width, 0.5 * height)


def fov_from_intrinsics(K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(horizontal, vertical) full field of view in degrees from K (uses fx, fy only)."""
    K = np.asarray(K, dtype=np.float64)
    return (
        np.rad2deg(2.0 * np.arctan(0.5 * width / K[..., 0, 0])),
        np.rad2deg(2.0 * np.arctan(0.5 * height / K[..., 1, 1])),
    )


# --------------------------------------------------------------------------- extrinsics


def rt_from_rotation_translation(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Challenge R_t (…, 4, 4) from row-vector R (…, 3, 3) and T (…, 3): ``V_cam = V @ R + T``."""
    R = np.asarray(R, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    shape = np.broadcast_shapes(R.shape[:-2], T.shape[:-1])
    R_t = np.zeros(shape + (4, 4))
    R_t[..., :3, :3] = R
    R_t[..., 3, :3] = T
    R_t[..., 3, 3] = 1.0
    return R_t


def rt_to_opencv(R_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Challenge R_t (…, 4, 4) → OpenCV column-vector pose ``(R_cv (…, 3, 3), t_cv (…, 3))``.

    ``X_cv = R_cv @ V + t_cv`` with ``R_cv = F @ R.T``, ``t_cv = F @ T``, F = diag(1, -1, -1).
    """
    R_t = np.asarray(R_t, dtype=np.float64)
    R = R_t[..., :3, :3]
    T = R_t[..., 3, :3]
    R_cv = OPENGL_TO_OPENCV @ np.swapaxes(R, -1, -2)
    t_cv = T * np.array([1.0, -1.0, -1.0])
    return R_cv, t_cv


def opencv_to_rt(R_cv: np.ndarray, t_cv: np.ndarray) -> np.ndarray:
    """OpenCV pose (R_cv (…, 3, 3), t_cv (…, 3) or (…, 3, 1)) → challenge R_t (…, 4, 4)."""
    R_cv = np.asarray(R_cv, dtype=np.float64)
    t_cv = np.asarray(t_cv, dtype=np.float64)
    if t_cv.shape[-2:] == (3, 1):  # cv2 returns tvec as a column
        t_cv = t_cv[..., 0]
    R = np.swapaxes(OPENGL_TO_OPENCV @ R_cv, -1, -2)
    T = t_cv * np.array([1.0, -1.0, -1.0])
    return rt_from_rotation_translation(R, T)


def opengl_to_opencv_points(X: np.ndarray) -> np.ndarray:
    """Camera-frame points (…, 3) OpenGL → OpenCV (flip y and z); the map is its own inverse."""
    return np.asarray(X) * np.array([1.0, -1.0, -1.0])


opencv_to_opengl_points = opengl_to_opencv_points


# --------------------------------------------------------------------------- projection


def transform_points(V, R_t):
    """World points V (…, N, 3) m → OpenGL camera points (…, N, 3) m: ``V @ R + T``.

    Numpy arrays (or anything ``np.asarray`` takes) or torch tensors (kept as tensors,
    on their device, differentiable): the one place the challenge's row-vector pose is
    applied.
    """
    if not hasattr(R_t, "shape"):
        R_t = np.asarray(R_t)
    if not hasattr(V, "shape"):
        V = np.asarray(V)
    return V @ R_t[..., :3, :3] + R_t[..., None, 3, :3]


def world_to_opencv(V: np.ndarray, R_cv: np.ndarray, t_cv: np.ndarray) -> np.ndarray:
    """World points V (…, N, 3) m → OpenCV camera points (…, N, 3) m: ``R_cv @ V + t_cv``
    per point, R_cv (…, 3, 3), t_cv (…, 3)."""
    R_cv = np.asarray(R_cv, dtype=np.float64)
    t_cv = np.asarray(t_cv, dtype=np.float64)
    return np.asarray(V, dtype=np.float64) @ np.swapaxes(R_cv, -1, -2) + t_cv[..., None, :]


def project_camera_points(X_cv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """OpenCV camera points (…, N, 3) → pixels (…, N, 2) with K (…, 3, 3); z must be > 0."""
    p = np.asarray(X_cv) @ np.swapaxes(np.asarray(K), -1, -2)
    return p[..., :2] / p[..., 2:3]


def project_points(V: np.ndarray, R_t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project world points V (…, N, 3) m with challenge R_t (…, 4, 4) and K (…, 3, 3) → (…, N, 2) px."""
    X_gl = transform_points(V, R_t)
    return project_camera_points(opengl_to_opencv_points(X_gl), K)


def project_points_opengl(V: np.ndarray, R_t: np.ndarray, P: np.ndarray, width: int, height: int) -> np.ndarray:
    """Project through OpenGL clip space with a row-vector projection P (…, 4, 4) → (…, N, 2) px.

    ``clip = [V_cam, 1] @ P``, ``ndc = clip[:3] / clip[3]``, then the WCPA viewport
    ``u = (ndc_x + 1) W / 2``, ``v = (1 - ndc_y) H / 2``. Equals :func:`project_points`
    with ``K = intrinsics_from_projection(P, W, H)``.
    """
    X = transform_points(V, R_t)
    X_h = np.concatenate([X, np.ones_like(X[..., :1])], axis=-1)
    clip = X_h @ np.asarray(P)
    ndc = clip[..., :2] / clip[..., 3:4]
    u = (ndc[..., 0] + 1.0) * 0.5 * width
    v = (1.0 - ndc[..., 1]) * 0.5 * height
    return np.stack([u, v], axis=-1)

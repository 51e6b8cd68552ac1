"""Torch counterparts of the numpy geometry, for differentiable and batched GPU use.

Kept apart so that ``jmlr.geometry`` imports without torch (the service's request path
never needs these). Conventions as in ``jmlr.geometry.camera`` and ``jmlr.geometry.crop``;
``jmlr.geometry.camera.transform_points`` itself already accepts tensors.
"""

from __future__ import annotations

import torch

from .camera import transform_points

__all__ = ["project_points_torch", "apply_affine_torch", "invert_affine_torch"]


def project_points_torch(V: torch.Tensor, R_t: torch.Tensor, K: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Differentiable :func:`jmlr.geometry.camera.project_points` in torch.

    Args:
        V: (…, N, 3) world points, metres.
        R_t: (…, 4, 4) challenge row-vector world → OpenGL camera transform.
        K: (…, 3, 3) intrinsics, pixels.
        eps: clamp on the OpenCV depth so points at/behind the camera do not divide by 0.

    Returns:
        (…, N, 2) pixel coordinates (OpenCV pixel-centre convention).
    """
    X = transform_points(V, R_t)
    flip = X.new_tensor([1.0, -1.0, -1.0])
    p = (X * flip) @ K.transpose(-1, -2)
    z = p[..., 2:3].clamp_min(eps)
    return p[..., :2] / z


def apply_affine_torch(M: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Torch :func:`jmlr.geometry.crop.apply_affine`: M (…, 2, 3), points (…, N, 2) → (…, N, 2); differentiable."""
    return points @ M[..., :2, :2].transpose(-1, -2) + M[..., None, :2, 2]


def invert_affine_torch(M: torch.Tensor) -> torch.Tensor:
    """Torch :func:`jmlr.geometry.crop.invert_affine` for M (…, 2, 3)."""
    A_inv = torch.linalg.inv(M[..., :2, :2])
    return torch.cat([A_inv, -(A_inv @ M[..., :2, 2:3])], dim=-1)

"""Training augmentations: horizontal flip through the topology's mirror map, colour jitter.

Flip convention (crop of size S, image of width W):
- crop pixels: x -> S-1-x (OpenCV pixel centres), then vertex i takes the value of
  vertex ``flip_index[i]`` (the mirror partner), so vertex semantics are kept;
- world vertices: x -> -x, then permuted by ``flip_index`` likewise;
- pose: ``R' = Sx R Sx``, ``T' = T Sx`` with ``Sx = diag(-1, 1, 1)`` (a mirrored head seen
  by a mirrored camera), ``K'`` with ``cx' = W-1-cx``; ``M' = Fc ∘ M ∘ Fi`` with ``Fc``/``Fi``
  the x-flips of the crop/the image. These keep every target consistent with the flipped
  image, and the flip applied twice is the identity.
"""

from __future__ import annotations

import numpy as np
import torch

_SX = np.diag([-1.0, 1.0, 1.0])


def _xflip_affine(width: int) -> np.ndarray:
    """3×3 homogeneous map x -> width-1-x."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def flip_sample(sample: dict, flip_index: np.ndarray, image_width: int | None = None) -> dict:
    """Mirror one aligned sample (numpy arrays as ``jmlr.data.align.align_sample`` gives).

    Keys handled when present: ``image`` (S, S, 3), ``points2d`` (N, 2) crop px,
    ``verts`` (N, 3) world m, ``R_t`` (4, 4), ``K`` (3, 3), ``M`` (2, 3),
    ``landmarks68`` (68, 2) image px. ``image_width`` (W of
    the original image) is needed for ``K``, ``M`` and ``landmarks68``. 68-landmark order is
    not mirrored (only its x); callers needing semantic 68 points recompute them.
    Returns a new dict; other keys are copied unchanged.
    """
    flip_index = np.asarray(flip_index)
    out = dict(sample)
    S = sample["image"].shape[0]
    out["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
    if "points2d" in sample:
        p = np.array(sample["points2d"], copy=True)
        p[:, 0] = (S - 1) - p[:, 0]
        out["points2d"] = p[flip_index]
    if "verts" in sample:
        v = np.array(sample["verts"], copy=True)
        v[:, 0] = -v[:, 0]
        out["verts"] = v[flip_index]
    if "R_t" in sample:
        Rt = np.array(sample["R_t"], dtype=np.float64, copy=True)
        Rt[:3, :3] = _SX @ Rt[:3, :3] @ _SX
        Rt[3, :3] = Rt[3, :3] @ _SX
        out["R_t"] = Rt.astype(np.asarray(sample["R_t"]).dtype)
    if image_width is not None:
        W = image_width
        if "K" in sample:
            K = np.array(sample["K"], copy=True)
            K[0, 2] = (W - 1) - K[0, 2]
            out["K"] = K
        if "M" in sample:
            M = _xflip_affine(S) @ np.vstack([np.asarray(sample["M"], np.float64), [0, 0, 1]]) @ _xflip_affine(W)
            out["M"] = M[:2].astype(np.asarray(sample["M"]).dtype)
        if "landmarks68" in sample:
            lm = np.array(sample["landmarks68"], copy=True)
            lm[:, 0] = (W - 1) - lm[:, 0]
            out["landmarks68"] = lm
    return out


def flip_batch(image: torch.Tensor, points2d: torch.Tensor, verts: torch.Tensor,
               flip_index: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mirror the samples of a batch where ``mask`` is true (torch, for streamed batches).

    image (B, 3, S, S); points2d (B, N, 2) crop px; verts (B, N, 3) world m;
    flip_index (N,) long; mask (B,) bool. Returns new (image, points2d, verts).
    Pose/K/M are not updated: the loss does not use them.
    """
    S = image.shape[-1]
    m = mask.view(-1, 1, 1, 1)
    image = torch.where(m, image.flip(-1), image)
    p = points2d.clone()
    p[..., 0] = (S - 1) - p[..., 0]
    v = verts.clone()
    v[..., 0] = -v[..., 0]
    points2d = torch.where(mask.view(-1, 1, 1), p[:, flip_index], points2d)
    verts = torch.where(mask.view(-1, 1, 1), v[:, flip_index], verts)
    return image, points2d, verts


def flip_expression(expression: torch.Tensor, expression_flip_index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Expression weights (B, E) of the samples ``flip_batch`` mirrored where ``mask`` (B,)
    is true: left and right shapes swap (``expression_flip_index`` (E,) long, from
    `jmlr.facemodel.blendshapes.expression_flip_index`)."""
    return torch.where(mask.view(-1, 1), expression[:, expression_flip_index], expression)


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.2,
                 contrast: float = 0.2, saturation: float = 0.2) -> np.ndarray:
    """Random brightness/contrast/saturation of an (H, W, 3) uint8 RGB image.

    Each strength s draws a factor uniform in [1-s, 1+s]; order brightness, contrast,
    saturation. Returns uint8 of the same shape.
    """
    x = image.astype(np.float32)
    x = x * rng.uniform(1 - brightness, 1 + brightness)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - gray[..., None]) * rng.uniform(1 - saturation, 1 + saturation) + gray[..., None]
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def color_jitter_batch(image: torch.Tensor, generator: torch.Generator | None = None,
                       brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2) -> torch.Tensor:
    """Per-sample colour jitter of a float batch (B, 3, H, W) in [0, 1]; same factors as
    :func:`color_jitter`. Returns a new tensor clamped to [0, 1]."""
    B = image.shape[0]

    def u(s):
        r = torch.rand(B, 1, 1, 1, generator=generator, device="cpu").to(image.device)
        return 1 - s + 2 * s * r

    x = image * u(brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(contrast) + mean
    w = torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    gray = (x * w).sum(1, keepdim=True)
    x = (x - gray) * u(saturation) + gray
    return x.clamp(0, 1)

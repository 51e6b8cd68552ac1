"""The paper's Fig. 1 baselines: direct 6DoF regression instead of 2D points + PnP.

(a) ``baseline_a`` — :class:`DirectRegressionNet`: one backbone on the *whole* image with
    everything outside the face blackened (``jmlr.data.align.masked_full_image``, S×S)
    regresses the world vertices and the 6DoF pose.
(b) ``baseline_b`` — :class:`TwoStreamNet`: the aligned face crop gives the vertices, a
    second backbone on the blackened whole image gives the 6DoF pose.

Output layout (B, 3N + 6): world vertices in metres ×10 (as the JMLR network), then the
normalised pose vector ``pose6`` of :func:`encode_pose`:
``[yaw, pitch, roll] / 90°`` (``jmlr.geometry.rotation.head_pose_euler`` of ``R_t``) and
``(T - T_MEAN) / T_STD`` with ``T = R_t[3, :3]`` the OpenGL-camera translation in metres.
The constants centre WCPA-like selfie distances (≈ 0.3–1 m in front of the camera).

``jmlr.models.tasks`` registers both as tasks (their inputs, targets, loss and decoder),
so one training loop and one evaluation serve every task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from jmlr.geometry.rotation import euler_to_matrix, head_pose_euler

from .jmlr_net import VERTEX_SCALE
from .registry import create_backbone, load_model_config

ANGLE_SCALE_DEG = 90.0
T_MEAN = np.array([0.0, 0.0, -0.6])
T_STD = 0.2


def encode_pose(R_t: np.ndarray) -> np.ndarray:
    """R_t (…, 4, 4) -> normalised pose6 (…, 6) float32 (see module docstring)."""
    R_t = np.asarray(R_t, np.float64)
    yaw, pitch, roll = head_pose_euler(R_t)
    ang = np.stack([yaw, pitch, roll], axis=-1) / ANGLE_SCALE_DEG
    t = (R_t[..., 3, :3] - T_MEAN) / T_STD
    return np.concatenate([ang, t], axis=-1).astype(np.float32)


def decode_pose(pose6: np.ndarray) -> np.ndarray:
    """Normalised pose6 (…, 6) -> R_t (…, 4, 4) float64; inverse of :func:`encode_pose`."""
    p = np.asarray(pose6, np.float64)
    ang = p[..., :3] * ANGLE_SCALE_DEG
    R_col = euler_to_matrix(ang[..., 0], ang[..., 1], ang[..., 2])
    out = np.zeros(p.shape[:-1] + (4, 4))
    out[..., :3, :3] = np.swapaxes(R_col, -1, -2)
    out[..., 3, :3] = p[..., 3:6] * T_STD + T_MEAN
    out[..., 3, 3] = 1.0
    return out


def decode_baseline_output(out, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3N + 6) output -> (verts (B, N, 3) m, R_t (B, 4, 4)), numpy float64/32."""
    out = out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    n = int(num_vertices)
    if out.shape[-1] != 3 * n + 6:
        raise ValueError(f"baseline output has {out.shape[-1]} values, expected 3*{n}+6")
    verts = out[:, : 3 * n].reshape(-1, n, 3) / VERTEX_SCALE
    return verts.astype(np.float32), decode_pose(out[:, 3 * n :])


def _init_common(net: nn.Module, config: Mapping[str, Any] | str, num_vertices: int,
                 input_size: int | None) -> dict:
    """Resolve the architecture config (``input_size`` overrides it) and set the
    attributes every task network carries; returns the config."""
    cfg = load_model_config(config)
    if input_size is not None:
        cfg["input_size"] = int(input_size)
    net.config = cfg
    net.num_vertices = int(num_vertices)
    net.input_size = int(cfg["input_size"])
    return cfg


class DirectRegressionNet(nn.Module):
    """Baseline (a): ``forward(whole (B, 3, S, S))`` -> (B, 3N + 6)."""

    def __init__(self, config: Mapping[str, Any] | str, num_vertices: int, input_size: int | None = None):
        super().__init__()
        cfg = _init_common(self, config, num_vertices, input_size)
        self.backbone, dim = create_backbone(cfg)
        self.fc = nn.Linear(dim, 3 * self.num_vertices + 6)

    def forward(self, whole: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(whole))


class TwoStreamNet(nn.Module):
    """Baseline (b): ``forward(image (B, 3, S, S) crop, whole (B, 3, S, S))`` -> (B, 3N + 6).

    The crop stream regresses the vertices, the whole-image stream the pose.
    """

    def __init__(self, config: Mapping[str, Any] | str, num_vertices: int, input_size: int | None = None):
        super().__init__()
        cfg = _init_common(self, config, num_vertices, input_size)
        self.crop_backbone, dim_c = create_backbone(cfg)
        self.whole_backbone, dim_w = create_backbone(cfg)
        self.fc_verts = nn.Linear(dim_c, 3 * self.num_vertices)
        self.fc_pose = nn.Linear(dim_w, 6)

    def forward(self, image: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.fc_verts(self.crop_backbone(image)),
                          self.fc_pose(self.whole_backbone(whole))], dim=1)

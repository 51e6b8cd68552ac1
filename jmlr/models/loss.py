"""The JMLR training loss and the baselines' loss.

``L = L_vert + λ0·L_edge + λ1·L_land`` (paper defaults λ0 = 0.25, λ1 = 2), where

- ``L_vert``: mean absolute error over all (B, N, 3) vertex coordinates in the network's
  output space, world metres ×10 (so 1.0 = 10 cm);
- ``L_edge``: mean absolute error of the lengths of the mesh's unique triangle edges,
  same ×10 space;
- ``L_land``: mean absolute error over all (B, N, 2) crop-point coordinates in the
  normalised space ``p_norm = p_px / S * 2 - 1`` (so 1.0 = half the crop).

A network with an expression head (`jmlr.models.JMLRHead`) adds
``λ_expr·L_expr``, the mean absolute error of its E expression weights (:func:`expression_loss`).

The baselines replace ``L_land`` by ``λ_pose·L_pose``, the mean absolute error of the
normalised 6DoF vector (see ``jmlr.models.baselines``).

The losses live beside the output layouts they read; ``jmlr.models.tasks`` names the
loss of each task, so the trainer never branches on the task itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .jmlr_net import VERTEX_SCALE


@dataclass(frozen=True)
class LossWeights:
    """λ0 (edge), λ1 (2D points), λ_pose (baselines' 6DoF), λ_expr (expression head)."""

    lambda_edge: float = 0.25
    lambda_land: float = 2.0
    lambda_pose: float = 1.0
    lambda_expression: float = 1.0

    @classmethod
    def from_dict(cls, d: dict | None) -> LossWeights:
        return cls(**{k: float(v) for k, v in (d or {}).items()})


def unique_edges(triangles: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2) int64, sorted, of triangles (F, 3)."""
    t = np.asarray(triangles, dtype=np.int64)
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]], axis=0)
    e = np.sort(e, axis=1)
    return np.unique(e, axis=0)


def edge_lengths(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Lengths (B, E) of edges (E, 2) of vertices (B, N, 3), in the vertices' units."""
    return (verts[:, edges[:, 0]] - verts[:, edges[:, 1]]).norm(dim=-1)


def encode_points(points_px: torch.Tensor, input_size: int) -> torch.Tensor:
    """Crop px -> normalised [-1, 1] space: ``p / S * 2 - 1``."""
    return points_px / input_size * 2.0 - 1.0


def vertex_edge_loss(pred_v10: torch.Tensor, gt_verts_m: torch.Tensor, edges: torch.Tensor,
                     scale: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_vert, L_edge) of predicted vertices (B, N, 3) already ×10 against gt in metres.

    ``scale``: the spread of the vertex outputs (a scalar, or (N, 3) per coordinate);
    errors are divided by it (edge errors by its mean), see `jmlr.models.JMLRHead`.
    """
    gt10 = gt_verts_m * VERTEX_SCALE
    l_vert = ((pred_v10 - gt10).abs() / scale).mean()
    edge_scale = scale.mean() if isinstance(scale, torch.Tensor) else scale
    l_edge = F.l1_loss(edge_lengths(pred_v10, edges), edge_lengths(gt10, edges)) / edge_scale
    return l_vert, l_edge


def jmlr_loss(out: torch.Tensor, verts: torch.Tensor, points2d: torch.Tensor, edges: torch.Tensor,
              input_size: int, weights: LossWeights = LossWeights(),
              out_scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The JMLR loss of a raw network output.

    out (B, N*5): N*3 vertices (m ×10) then N*2 normalised crop points, as the network
    gives them; verts (B, N, 3) gt world m; points2d (B, N, 2) gt crop px; edges (E, 2)
    long from :func:`unique_edges`; input_size S; out_scale (N*5,) the network's output
    spread (`jmlr.models.JMLRHead.out_scale`): each term is measured in those units, so
    that 3D and 2D weigh by their spread, not by their units. None: the paper's units.
    Computed in float32.
    Returns ``loss`` (scalar to minimise), its terms ``vert``, ``edge``, ``land``, and,
    for logging, ``vert_mm`` (mean vertex L2 error, mm) and ``land_px`` (mean 2D L2
    error, crop px).
    """
    out = out.float()
    B, N = verts.shape[:2]
    pred_v = out[:, : N * 3].reshape(B, N, 3)
    pred_p = out[:, N * 3 : N * 5].reshape(B, N, 2)
    v_scale: torch.Tensor | float = 1.0
    p_scale: torch.Tensor | float = 1.0
    if out_scale is not None:
        v_scale = out_scale[: N * 3].float().reshape(N, 3)
        p_scale = out_scale[N * 3 : N * 5].float().reshape(N, 2)
    l_vert, l_edge = vertex_edge_loss(pred_v, verts.float(), edges, v_scale)
    gt_p = encode_points(points2d.float(), input_size)
    l_land = ((pred_p - gt_p).abs() / p_scale).mean()
    loss = l_vert + weights.lambda_edge * l_edge + weights.lambda_land * l_land
    with torch.no_grad():
        vert_mm = (pred_v / VERTEX_SCALE - verts.float()).norm(dim=-1).mean() * 1000.0
        land_px = (pred_p - gt_p).norm(dim=-1).mean() * (input_size / 2.0)
    return {"loss": loss, "vert": l_vert.detach(), "edge": l_edge.detach(), "land": l_land.detach(),
            "vert_mm": vert_mm, "land_px": land_px}


def expression_loss(pred: torch.Tensor, target: torch.Tensor, active: float = 0.1) -> dict[str, torch.Tensor]:
    """L_expr of predicted expression weights (B, E) (raw, unclamped) against the truth
    (B, E) in [0, 1].

    Most weights of a face are 0, so a plain mean would be won by predicting 0 everywhere;
    the error is averaged separately over the active weights (truth > ``active``) and the
    rest, and the two means are added (an empty group counts 0). The prediction is not
    clamped here (it is when served), so that a weight pushed out of [0, 1] still has a
    gradient back. Returns ``expression`` (the term), and for logging ``expression_active`` and
    ``expression_inactive`` (the two means, in weight units).
    """
    err = (pred.float() - target.float()).abs()
    on = target.float() > active
    err_on = (err * on).sum() / on.sum().clamp_min(1)
    err_off = (err * ~on).sum() / (~on).sum().clamp_min(1)
    return {"expression": err_on + err_off, "expression_active": err_on.detach(),
            "expression_inactive": err_off.detach()}


def baseline_loss(out: torch.Tensor, verts: torch.Tensor, pose6: torch.Tensor, edges: torch.Tensor,
                  weights: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """Loss of the Fig. 1 baselines.

    out (B, N*3 + 6): vertices (m ×10) then the normalised 6DoF vector; verts (B, N, 3)
    gt m; pose6 (B, 6) gt normalised (``jmlr.models.baselines.encode_pose``).
    Returns ``loss``, ``vert``, ``edge``, ``pose``.
    """
    out = out.float()
    B, N = verts.shape[:2]
    pred_v = out[:, : N * 3].reshape(B, N, 3)
    l_vert, l_edge = vertex_edge_loss(pred_v, verts.float(), edges)
    l_pose = F.l1_loss(out[:, N * 3 : N * 3 + 6], pose6.float())
    loss = l_vert + weights.lambda_edge * l_edge + weights.lambda_pose * l_pose
    return {"loss": loss, "vert": l_vert.detach(), "edge": l_edge.detach(), "pose": l_pose.detach()}

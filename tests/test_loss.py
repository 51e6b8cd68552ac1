"""The JMLR loss, hand-checked on one triangle."""

from __future__ import annotations

import numpy as np
import torch

from jmlr.models.loss import LossWeights, baseline_loss, jmlr_loss, unique_edges


def test_unique_edges_of_two_triangles():
    e = unique_edges(np.array([[0, 1, 2], [2, 1, 3]]))
    assert e.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]


def test_single_triangle_by_hand():
    S = 100
    gt_v = torch.tensor([[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]])  # metres
    gt_p = torch.tensor([[[50.0, 50.0], [75.0, 50.0], [50.0, 25.0]]])  # crop px
    # prediction: vertex 1 moved +0.05 m in x (×10 -> 0.5); points all +10 px in x (-> +0.2 normalised)
    pred_v10 = gt_v * 10
    pred_v10[0, 1, 0] += 0.5
    pred_p = (gt_p + torch.tensor([10.0, 0.0])) / S * 2 - 1
    out = torch.cat([pred_v10.reshape(1, -1), pred_p.reshape(1, -1)], 1)
    edges = torch.from_numpy(unique_edges(np.array([[0, 1, 2]])))
    res = jmlr_loss(out, gt_v, gt_p, edges, S)
    # L_vert: one of 9 coordinates off by 0.5
    assert abs(res["vert"].item() - 0.5 / 9) < 1e-6
    # L_edge (×10 space): |01| 1 -> 1.5, |02| unchanged 1, |12| sqrt2 -> sqrt(1.5²+1)
    d = (0.5 + 0 + abs(np.sqrt(1.5**2 + 1) - np.sqrt(2))) / 3
    assert abs(res["edge"].item() - d) < 1e-6
    # L_land: half of 6 coordinates off by 0.2
    assert abs(res["land"].item() - 0.1) < 1e-6
    assert abs(res["loss"].item() - (0.5 / 9 + 0.25 * d + 2 * 0.1)) < 1e-6
    w = LossWeights(lambda_edge=1.0, lambda_land=0.0)
    assert abs(jmlr_loss(out, gt_v, gt_p, edges, S, w)["loss"].item() - (0.5 / 9 + d)) < 1e-6


def test_perfect_prediction_has_zero_loss_and_gradient_flows():
    S, N = 64, 4
    v = torch.randn(2, N, 3) * 0.05
    p = torch.rand(2, N, 2) * S
    target = torch.cat([(v * 10).reshape(2, -1), (p / S * 2 - 1).reshape(2, -1)], 1)
    edges = torch.from_numpy(unique_edges(np.array([[0, 1, 2], [1, 2, 3]])))
    assert jmlr_loss(target, v, p, edges, S)["loss"].item() < 1e-6
    out = (target + 0.1).requires_grad_()
    jmlr_loss(out, v, p, edges, S)["loss"].backward()
    assert out.grad.abs().sum() > 0


def test_baseline_loss_pose_term():
    v = torch.zeros(1, 3, 3)
    pose = torch.zeros(1, 6)
    out = torch.zeros(1, 9 + 6)
    out[0, 9] = 0.6
    edges = torch.from_numpy(unique_edges(np.array([[0, 1, 2]])))
    res = baseline_loss(out, v, pose, edges, LossWeights(lambda_pose=2.0))
    assert abs(res["pose"].item() - 0.1) < 1e-7 and abs(res["loss"].item() - 0.2) < 1e-6

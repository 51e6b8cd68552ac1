"""The task registry: every kind of network the project trains, stores and evaluates.

A task says what a network predicts and how it learns it, so that the model store, the
trainer and the evaluation ask here instead of branching on the task's name:

- ``build(config, num_vertices, input_size) -> nn.Module``: a randomly initialised network
  from a model config (registry name, YAML path or dict; `jmlr.models.registry`);
- ``inputs``: the batch keys its ``forward`` takes, in order (``image``: the aligned face
  crop; ``whole``: the whole image with everything but the face blackened);
- ``decode(out, num_vertices, input_size) -> TaskOutput``: raw outputs to metric units;
- ``targets(batch, input_size) -> (B, D)``: the regression target in the output layout;
- ``loss(out, batch, edges, input_size, weights, net) -> dict`` (``loss`` to minimise and
  terms for the log);
- ``output_layers(net) -> [(linear, slice of the output)]``: the final layer(s), for
  initialising their biases on the first batch;
- ``pose_by_pnp``: the network predicts 2D points and the pose comes from PnP (else it
  regresses the pose itself).

Registered here: ``jmlr`` (the paper's network: N world vertices and their N crop points;
the pose comes from PnP) and the paper's Fig. 1 baselines ``baseline_a`` / ``baseline_b``
(vertices and a direct 6DoF pose). A new backbone is not a new task: it is a family in
`jmlr.models.registry` and works for every task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .baselines import DirectRegressionNet, TwoStreamNet, decode_baseline_output
from .jmlr_net import VERTEX_SCALE, decode_output, encode_targets, split_expression
from .loss import LossWeights, baseline_loss, expression_loss, jmlr_loss
from .registry import create_model

__all__ = ["Task", "TaskOutput", "TASKS", "register_task", "get_task", "create_task_model"]

ModelConfig = str | Path | Mapping[str, Any]
Batch = Mapping[str, torch.Tensor]


class TaskOutput(NamedTuple):
    """Decoded predictions for B faces (torch tensors or numpy arrays).

    verts: (B, N, 3) world (head-frame) vertices, metres.
    points: (B, N, 2) crop pixels, or None; with them the pose comes from PnP.
    R_t: (B, 4, 4) challenge row-vector pose regressed directly, or None.
    expression: (B, E) expression weights in [0, 1] (the network's ``expression_names``),
        or None for a network without expression head.
    """

    verts: Any
    points: Any = None
    R_t: Any = None
    expression: Any = None


def _single_fc(net: nn.Module) -> list[tuple[nn.Linear, slice]]:
    fc = net.fc
    return [(fc, slice(0, fc.out_features))]


@dataclass(frozen=True)
class Task:
    """One task (see the module docstring for each field's contract)."""

    name: str
    build: Callable[[ModelConfig, int, int | None], nn.Module]
    inputs: tuple[str, ...]
    decode: Callable[[torch.Tensor, int, int], TaskOutput]
    targets: Callable[[Batch, int], torch.Tensor]
    loss: Callable[[torch.Tensor, Batch, torch.Tensor, int, LossWeights, nn.Module], dict[str, torch.Tensor]]
    pose_by_pnp: bool
    output_layers: Callable[[nn.Module], list[tuple[nn.Linear, slice]]] = _single_fc


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add (or replace) a task; returns it."""
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None


def create_task_model(task: str, config: ModelConfig, num_vertices: int, input_size: int | None = None) -> nn.Module:
    """``get_task(task).build(config, num_vertices, input_size)``."""
    return get_task(task).build(config, num_vertices, input_size)


# ----------------------------------------------------------------------------- jmlr
def _jmlr_decode(out: torch.Tensor, num_vertices: int, input_size: int) -> TaskOutput:
    jmlr_out, expression = split_expression(out, num_vertices)
    verts, points = decode_output(jmlr_out, num_vertices, input_size)
    return TaskOutput(verts, points, None, expression)


def _jmlr_targets(b: Batch, input_size: int) -> torch.Tensor:
    return encode_targets(b["verts"].float(), b["points2d"].float(), input_size)


def _jmlr_loss(out: torch.Tensor, b: Batch, edges: torch.Tensor, input_size: int, weights: LossWeights,
               net: nn.Module) -> dict[str, torch.Tensor]:
    # The loss is measured in the head's output units when it has the output affine.
    jmlr_out, _ = split_expression(out, int(b["verts"].shape[1]))
    res = jmlr_loss(jmlr_out, b["verts"], b["points2d"], edges, input_size, weights,
                    out_scale=getattr(net, "out_scale", None))
    if jmlr_out.shape[1] < out.shape[1]:
        if "expression" not in b:
            raise ValueError("the network has an expression head but the batch has no 'expression' targets "
                             "(packed data holds them: data.source packed)")
        res.update(expression_loss(out[:, jmlr_out.shape[1]:], b["expression"]))
        res["loss"] = res["loss"] + weights.lambda_expression * res["expression"]
    return res


# ----------------------------------------------------------------------------- baselines
def _baseline_decode(out: torch.Tensor, num_vertices: int, input_size: int) -> TaskOutput:
    verts, R_t = decode_baseline_output(out, num_vertices)
    return TaskOutput(verts, None, R_t)


def _baseline_targets(b: Batch, input_size: int) -> torch.Tensor:
    # pose6 (`jmlr.models.baselines.encode_pose`) comes with the batch, from its R_t.
    verts = b["verts"].float()
    return torch.cat([verts.reshape(len(verts), -1) * VERTEX_SCALE, b["pose6"].float()], 1)


def _baseline_loss(out: torch.Tensor, b: Batch, edges: torch.Tensor, input_size: int, weights: LossWeights,
                   net: nn.Module) -> dict[str, torch.Tensor]:
    return baseline_loss(out, b["verts"], b["pose6"], edges, weights)


def _two_stream_layers(net: nn.Module) -> list[tuple[nn.Linear, slice]]:
    n3 = net.fc_verts.out_features
    return [(net.fc_verts, slice(0, n3)), (net.fc_pose, slice(n3, n3 + net.fc_pose.out_features))]


register_task(Task("jmlr", create_model, ("image",), _jmlr_decode, _jmlr_targets, _jmlr_loss, pose_by_pnp=True))
register_task(Task("baseline_a", DirectRegressionNet, ("whole",), _baseline_decode, _baseline_targets,
                   _baseline_loss, pose_by_pnp=False))
register_task(Task("baseline_b", TwoStreamNet, ("image", "whole"), _baseline_decode, _baseline_targets,
                   _baseline_loss, pose_by_pnp=False, output_layers=_two_stream_layers))


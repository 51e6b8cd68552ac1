"""The JMLR network: a CNN (ResNet-D or MobileNetV2) regressing, per face, N world vertices
and N crop points.

Output layout (per sample, ``N = num_vertices``, ``S = input_size``), as in the
reference code of the paper so that its checkpoints import 1:1:

* ``out[:, :3N]``  -> world vertices, metres x ``VERTEX_SCALE`` (x, y, z interleaved),
  so values are roughly in [-1, 1] for a head of ~0.1 m.
* ``out[:, 3N:5N]`` -> crop points, normalised ``p_norm = p_px / S * 2 - 1`` (u, v
  interleaved), pixel centres as in OpenCV (top-left pixel centre = (0, 0)).
* ``out[:, 5N:]`` -> only for a network with an expression head (model config
  ``expression_names``, E names): the face model's E expression weights, ARKit semantics
  (0 = rest, 1 = full), unclamped.

``decode_output`` and ``encode_targets`` convert between this layout and metric units.
"""

from __future__ import annotations

import torch
from torch import nn

from .mobilenet import MobileNetV2
from .resnet import ResNet

__all__ = ["VERTEX_SCALE", "OUTPUTS_PER_VERTEX", "JMLRHead", "JMLRNet", "JMLRMobileNet", "jmlr_network_class",
           "decode_output", "encode_targets", "split_expression"]

VERTEX_SCALE = 10.0
OUTPUTS_PER_VERTEX = 5


class JMLRHead(nn.Module):
    """What every JMLR network shares, whatever its backbone: an ``fc`` of ``5 N`` outputs
    and an output affine ``y = fc(f) * out_scale + out_mean`` (buffers, saved with the
    weights).

    Why the affine: a face's vertices differ from the mean face by a few millimetres,
    while a randomly initialised ``fc`` outputs values of the order of the whole range;
    the network would spend its first thousands of steps unlearning that noise. With
    ``out_mean`` the training set's mean output and ``out_scale`` the spread of each
    block (vertices, 2D points), the ``fc`` regresses offsets from the mean face in
    units of their spread, which also balances the loss terms
    (``jmlr.models.loss.jmlr_loss`` divides by the same scale). The defaults (0, 1) are the
    raw layout, as in the paper's code and imported checkpoints.

    With ``expression_names`` in the config, a second linear layer ``expression_fc`` reads
    the same pooled features and its E outputs follow the 5N (see the module docstring):
    the expression is learned from the image with the mesh, instead of being fitted to a
    mesh that carries only part of it (docs/blendshapes.md).
    """

    num_vertices: int
    input_size: int
    expression_names: tuple[str, ...]

    def _init_head(self, num_vertices: int, input_size: int, config: dict | None) -> None:
        self.num_vertices = int(num_vertices)
        self.input_size = int(input_size)
        self.config = dict(config or {})
        n5 = self.num_vertices * OUTPUTS_PER_VERTEX
        self.register_buffer("out_mean", torch.zeros(n5))
        self.register_buffer("out_scale", torch.ones(n5))
        self.expression_names = tuple(str(n) for n in self.config.get("expression_names") or ())
        if self.expression_names:
            self.expression_fc = nn.Linear(self.fc.in_features, len(self.expression_names))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        f = self.global_pool(x).flatten(1)
        out = self.fc(f) * self.out_scale + self.out_mean
        if self.expression_names:
            out = torch.cat([out, self.expression_fc(f)], dim=1)
        return out

    def decode(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_output(split_expression(out, self.num_vertices)[0], self.num_vertices, self.input_size)

    @torch.no_grad()
    def init_expression_head(self, expression: torch.Tensor, fc_std: float = 1e-3) -> None:
        """Start the expression head at the mean of ``expression`` (B, E) targets, its
        weights small, so that a network trained without it keeps its other outputs and
        starts from the average expression."""
        nn.init.normal_(self.expression_fc.weight, std=fc_std)
        self.expression_fc.bias.copy_(expression.float().mean(0).to(self.expression_fc.bias))

    @torch.no_grad()
    def set_output_statistics(self, mean: torch.Tensor, scale: torch.Tensor, fc_std: float = 1e-3) -> None:
        """Centre the outputs on ``mean`` (5N,) with spread ``scale`` (5N,) and restart the
        ``fc`` small, so that the untrained network predicts the mean face."""
        self.out_mean.copy_(mean.to(self.out_mean))
        self.out_scale.copy_(scale.to(self.out_scale))
        nn.init.normal_(self.fc.weight, std=fc_std)
        nn.init.zeros_(self.fc.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the output affine (and the paper's) are in the raw layout.
        for name, fill in (("out_mean", 0.0), ("out_scale", 1.0)):
            key = prefix + name
            if key not in state_dict:
                state_dict[key] = torch.full_like(getattr(self, name), fill)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class JMLRNet(JMLRHead, ResNet):
    """ResNet-D with the JMLR head (``fc`` of ``num_vertices * 5`` outputs + output affine).

    Subclasses ``ResNet`` (instead of wrapping it) so the state-dict keys stay those of a
    timm ResNet: ``conv1.0.weight`` ... ``fc.bias`` (plus ``out_mean``, ``out_scale``).

    Args:
        num_vertices: N, the topology's vertex count.
        input_size: S, the square crop size the network is meant for (used by
            ``decode``; the convolutions themselves accept any size >= 32).
        config: the registry config dict it was built from (kept for export).
        **resnet_kwargs: ``block``, ``depths``, ``widths``, ``stem_width``, ...

    ``forward``: ``(B, 3, S, S)`` float, normalised as in the config -> ``(B, 5N)``.
    """

    def __init__(self, num_vertices: int, input_size: int, config: dict | None = None,
                 **resnet_kwargs) -> None:
        ResNet.__init__(self, num_classes=num_vertices * OUTPUTS_PER_VERTEX, **resnet_kwargs)
        self._init_head(num_vertices, input_size, config)


class JMLRMobileNet(JMLRHead, MobileNetV2):
    """MobileNetV2 with the JMLR head; the CPU-class network (see ``docs/training.md``).

    Args as :class:`JMLRNet`; ``**mobilenet_kwargs`` go to
    `jmlr.models.mobilenet.MobileNetV2` (``settings``, ``stem_width``, ``head_width``).
    """

    def __init__(self, num_vertices: int, input_size: int, config: dict | None = None,
                 **mobilenet_kwargs) -> None:
        MobileNetV2.__init__(self, num_classes=num_vertices * OUTPUTS_PER_VERTEX, **mobilenet_kwargs)
        self._init_head(num_vertices, input_size, config)


def jmlr_network_class(backbone: type[nn.Module]) -> type[JMLRHead]:
    """The JMLR network over a backbone class, as :class:`JMLRNet` is over ``ResNet``.

    ``backbone`` is built with ``num_classes = 5 N`` (plus its own keywords) and must have
    ``global_pool``, ``fc`` and ``forward_features`` (see
    `jmlr.models.registry.BackboneFamily`); its state-dict keys stay its own.
    """

    def __init__(self, num_vertices: int, input_size: int, config: dict | None = None, **backbone_kwargs) -> None:
        backbone.__init__(self, num_classes=num_vertices * OUTPUTS_PER_VERTEX, **backbone_kwargs)
        self._init_head(num_vertices, input_size, config)

    return type(f"JMLR{backbone.__name__}", (JMLRHead, backbone),
                {"__init__": __init__, "__doc__": f"{backbone.__name__} with the JMLR head (see JMLRNet)."})


def decode_output(out: torch.Tensor, num_vertices: int,
                  input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Network output -> metric vertices and crop pixels.

    Args:
        out: ``(B, 5N)`` tensor (or numpy array).
        num_vertices: N.
        input_size: S, crop side in pixels.

    Returns:
        verts: ``(B, N, 3)`` world (head-frame) vertices in metres.
        points: ``(B, N, 2)`` crop pixel coordinates (OpenCV pixel centres).
    """
    n = int(num_vertices)
    if out.shape[-1] != n * OUTPUTS_PER_VERTEX:
        raise ValueError(f"output has {out.shape[-1]} values, expected {n} * 5 = {n * 5}")
    verts = out[:, : 3 * n].reshape(-1, n, 3) / VERTEX_SCALE
    points = (out[:, 3 * n:].reshape(-1, n, 2) + 1.0) * (float(input_size) / 2.0)
    return verts, points


def split_expression(out: torch.Tensor, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(B, 5N [+ E])`` network output -> the JMLR part ``(B, 5N)`` and the expression
    weights ``(B, E)`` clamped to [0, 1] (None for a network without expression head).
    Works on numpy arrays too."""
    n5 = int(num_vertices) * OUTPUTS_PER_VERTEX
    if out.shape[-1] < n5:
        raise ValueError(f"output has {out.shape[-1]} values, expected at least {num_vertices} * 5 = {n5}")
    if out.shape[-1] == n5:
        return out, None
    extra = out[:, n5:]
    return out[:, :n5], (extra.clamp(0.0, 1.0) if isinstance(extra, torch.Tensor) else extra.clip(0.0, 1.0))


def encode_targets(verts: torch.Tensor, points: torch.Tensor,
                   input_size: int) -> torch.Tensor:
    """Inverse of ``decode_output``: the regression target for a batch.

    Args:
        verts: ``(B, N, 3)`` world vertices in metres.
        points: ``(B, N, 2)`` crop pixel coordinates.
        input_size: S.

    Returns:
        ``(B, 5N)`` in the network's output layout.
    """
    b = verts.shape[0]
    v = verts.reshape(b, -1) * VERTEX_SCALE
    p = points.reshape(b, -1) / (float(input_size) / 2.0) - 1.0
    if isinstance(v, torch.Tensor):
        return torch.cat([v, p], dim=1)
    import numpy as np

    return np.concatenate([v, p], axis=1)

"""The JMLR network: a ResNet-D regressing, per face, N world vertices and N crop points.

Output layout (per sample, ``N = num_vertices``, ``S = input_size``), as in the
reference code of the paper so that its checkpoints import 1:1:

* ``out[:, :3N]``  -> world vertices, metres x ``VERTEX_SCALE`` (x, y, z interleaved),
  so values are roughly in [-1, 1] for a head of ~0.1 m.
* ``out[:, 3N:]``  -> crop points, normalised ``p_norm = p_px / S * 2 - 1`` (u, v
  interleaved), pixel centres as in OpenCV (top-left pixel centre = (0, 0)).

``decode_output`` and ``encode_targets`` convert between this layout and metric units.
"""

from __future__ import annotations

import torch

from .resnet import ResNet

__all__ = ["VERTEX_SCALE", "OUTPUTS_PER_VERTEX", "JMLRNet", "decode_output", "encode_targets"]

VERTEX_SCALE = 10.0
OUTPUTS_PER_VERTEX = 5


class JMLRNet(ResNet):
    """ResNet-D with an ``fc`` of ``num_vertices * 5`` outputs.

    Subclasses ``ResNet`` (instead of wrapping it) so the state-dict keys stay those of a
    timm ResNet: ``conv1.0.weight`` ... ``fc.bias``.

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
        super().__init__(num_classes=num_vertices * OUTPUTS_PER_VERTEX, **resnet_kwargs)
        self.num_vertices = int(num_vertices)
        self.input_size = int(input_size)
        self.config = dict(config or {})

    def decode(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_output(out, self.num_vertices, self.input_size)


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

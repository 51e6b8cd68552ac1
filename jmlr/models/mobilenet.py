"""MobileNetV2 backbone (inverted residuals, linear bottlenecks), written without timm.

The layout is torchvision's / the paper's (Sandler et al., "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018) with width multiplier 1.0: a 3x3 stride-2
stem, 17 inverted-residual blocks in 7 stages (t, c, n, s) =
(1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1), then a
1x1 conv to ``head_width`` channels. Overall stride 32.

``act`` is ReLU by default (not ReLU6) because the pretrained network we can initialise
from, the MobileNetV2 inside CenterFace (``jmlr.models.centerface_init``), uses ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .init import init_conv_bn_

__all__ = ["InvertedResidual", "MobileNetV2", "MOBILENETV2_SETTINGS"]

# (expansion t, output channels c, repeats n, first stride s), width multiplier 1.0
MOBILENETV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1) -> 3x3 depthwise -> 1x1 linear projection,
    with an identity shortcut when stride 1 and cin == cout."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_shortcut else y


class MobileNetV2(nn.Module):
    """MobileNetV2 features + global average pool + optional linear ``fc``.

    Args:
        settings: the (t, c, n, s) table (default width 1.0).
        stem_width: channels of the first 3x3 stride-2 conv.
        head_width: channels of the final 1x1 conv (0: no head conv, features are the last
            block's output).
        num_classes: ``fc`` outputs; 0 means ``forward`` returns pooled features.
        in_chans: input channels.

    Input ``(B, in_chans, H, W)``; ``forward_features`` gives ``(B, num_features, H/32, W/32)``.
    """

    def __init__(self, settings: Sequence[Sequence[int]] = MOBILENETV2_SETTINGS, stem_width: int = 32,
                 head_width: int = 1280, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.stem = _conv_bn(in_chans, stem_width, 3, 2)
        blocks: list[nn.Module] = []
        cin = stem_width
        for t, c, n, s in settings:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head_conv: nn.Module = _conv_bn(cin, head_width, 1) if head_width > 0 else nn.Identity()
        self.num_features = head_width if head_width > 0 else cin
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        init_conv_bn_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_conv(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.global_pool(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

"""ResNet-D backbones (deep 3x3 stem, average-pool downsample), written without timm.

The module and parameter names follow timm's ``ResNet`` (``conv1.0``, ``conv1.1``,
``conv1.3``, ``conv1.4``, ``conv1.6``, ``bn1``, ``layer{i}.{j}.conv1``, ...,
``layer{i}.0.downsample.1`` (conv), ``layer{i}.0.downsample.2`` (BN), ``fc``) so that a
timm ``resnet18d/34d/50d`` state dict, or one of the JMLR reference code (which wraps
timm), loads 1:1 without renaming.

Reference: He et al., "Bag of Tricks for Image Classification with Convolutional Neural
Networks", CVPR 2019 (the "D" tweak).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .init import init_conv_bn_

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "BLOCKS"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs; output channels = ``planes``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1; output channels = ``4 * planes``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _downsample_avg(cin: int, cout: int, stride: int) -> nn.Sequential:
    # ResNet-D: pool first so the 1x1 projection sees every input pixel instead of
    # skipping 3 in 4. Index 0 is kept (as Identity) at stride 1 so that parameter names
    # stay ``downsample.1`` / ``downsample.2`` as in timm.
    pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            if stride != 1 else nn.Identity())
    return nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """ResNet-D: deep stem, four stages, global average pool, optional linear ``fc``.

    Args:
        block: ``"basic"`` or ``"bottleneck"`` (or the class).
        depths: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-34.
        widths: ``planes`` per stage (stage output = ``planes * block.expansion``).
        stem_width: width of the first two stem convs; the stem outputs ``2 * stem_width``.
        num_classes: ``fc`` outputs; 0 means no ``fc`` and ``forward`` returns the pooled
            features ``(B, num_features)``.
        in_chans: input channels.
        zero_init_last: zero the last BN gamma of every block (timm's default for
            training from scratch); False keeps gamma = 1 everywhere.

    Input ``(B, in_chans, H, W)``; stride 32 overall, so any H, W >= 32 works.
    """

    def __init__(self, block: str | type[nn.Module] = "basic",
                 depths: Sequence[int] = (3, 4, 6, 3),
                 widths: Sequence[int] = (64, 128, 256, 512),
                 stem_width: int = 32, num_classes: int = 1000, in_chans: int = 3,
                 zero_init_last: bool = False) -> None:
        super().__init__()
        block_cls = BLOCKS[block] if isinstance(block, str) else block
        if len(depths) != len(widths):
            raise ValueError(f"depths {list(depths)} and widths {list(widths)} differ in length")
        inplanes = stem_width * 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            _conv3x3(stem_width, stem_width),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            _conv3x3(stem_width, inplanes),
        )
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        for i, (depth, planes) in enumerate(zip(depths, widths)):
            stride = 1 if i == 0 else 2
            out = planes * block_cls.expansion
            down = _downsample_avg(inplanes, out, stride) if (stride != 1 or inplanes != out) else None
            blocks = [block_cls(inplanes, planes, stride, down)]
            blocks += [block_cls(out, planes) for _ in range(depth - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = out
        self.num_stages = len(depths)
        self.num_features = inplanes
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(inplanes, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(zero_init_last)

    def init_weights(self, zero_init_last: bool = False) -> None:
        init_conv_bn_(self)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> feature map ``(B, num_features, H/32, W/32)``."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.global_pool(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

"""Weight initialisation shared by the backbones."""

from __future__ import annotations

from torch import nn


def init_conv_bn_(module: nn.Module) -> None:
    """He (fan-out) normal for every ``Conv2d`` under ``module``; BatchNorm to the identity
    (scale 1, shift 0). In place, like ``torch.nn.init``; the same as timm's and torchvision's
    ResNet and MobileNetV2."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

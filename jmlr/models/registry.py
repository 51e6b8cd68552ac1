"""Model registry: one plain YAML file per architecture in ``jmlr/configs/models/``.

A config is a dict::

    name: jmlr_resnet34d
    backbone: {family: resnet, block: basic|bottleneck, depths: [..], widths: [..],
               stem_width: 32, zero_init_last: false}
    # or
    backbone: {family: mobilenetv2, stem_width: 32, head_width: 1280}
    init: {centerface: true}   # optional pretrained initialisation (jmlr.models.pretrained)
    expression_names: [browDown_L, ...]  # optional expression head (jmlr.models.JMLRHead)
    input_size: 256
    normalisation: {mean: [r, g, b], std: [r, g, b], color: RGB}

Anything that takes a model accepts a registry name (``jmlr_resnet34d``, or its short
form ``resnet34d``), a path to a YAML file, or the config dict itself (as stored inline
in a model-store manifest, so a stored model never depends on the registry's files).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from jmlr.paths import configs_dir

from .jmlr_net import JMLRHead, JMLRMobileNet, JMLRNet, jmlr_network_class
from .mobilenet import MobileNetV2
from .resnet import BLOCKS, ResNet

__all__ = ["models_dir", "list_models", "load_model_config", "create_model", "create_backbone", "BackboneFamily",
           "FAMILIES", "register_family"]

DEFAULT_NORMALISATION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "color": "RGB"}
DEFAULT_INPUT_SIZE = 256


def models_dir() -> Path:
    return configs_dir() / "models"


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(p.stem for p in models_dir().glob("*.yaml"))


class UnknownNameError(KeyError):
    """A config name that is neither a file nor registered (a KeyError, as a lookup by name)."""

    def __str__(self) -> str:  # KeyError's own quotes the message
        return str(self.args[0]) if self.args else ""


def _resolve(name: str) -> Path:
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    for candidate in (name, f"jmlr_{name}"):
        p = models_dir() / f"{candidate}.yaml"
        if p.is_file():
            return p
    raise UnknownNameError(f"unknown model {name!r}: not a YAML file and not one of {list_models()}")


def _resnet_kwargs(bb: Mapping[str, Any], origin: str) -> dict[str, Any]:
    for key in ("block", "depths", "widths"):
        if key not in bb:
            raise ValueError(f"model config {origin}: backbone.{key} missing")
    if bb["block"] not in BLOCKS:
        raise ValueError(f"model config {origin}: backbone.block {bb['block']!r} not in {list(BLOCKS)}")
    if len(bb["depths"]) != len(bb["widths"]):
        raise ValueError(f"model config {origin}: depths and widths differ in length")
    return {
        "block": bb["block"],
        "depths": list(bb["depths"]),
        "widths": list(bb["widths"]),
        "stem_width": int(bb.get("stem_width", 32)),
        "zero_init_last": bool(bb.get("zero_init_last", False)),
    }


def _mobilenetv2_kwargs(bb: Mapping[str, Any], origin: str) -> dict[str, Any]:
    unknown = set(bb) - {"family", "stem_width", "head_width", "settings"}
    if unknown:
        raise ValueError(f"model config {origin}: unknown mobilenetv2 keys {sorted(unknown)}")
    kw: dict[str, Any] = {"stem_width": int(bb.get("stem_width", 32)), "head_width": int(bb.get("head_width", 1280))}
    if "settings" in bb:
        kw["settings"] = [tuple(int(v) for v in row) for row in bb["settings"]]
    return kw


@dataclass(frozen=True)
class BackboneFamily:
    """How a config's ``backbone: {family: NAME, ...}`` becomes networks.

    Attributes:
        backbone: the bare backbone class. Its constructor takes ``num_classes`` (0: no
            ``fc``, ``forward`` returns pooled features) plus the keywords below; an instance
            has ``num_features``, ``global_pool``, ``fc``, ``forward_features`` and
            ``forward_head`` (as timm's models have).
        kwargs: ``(backbone mapping, origin) -> constructor keywords``; raises
            ``ValueError`` naming ``origin`` for a bad mapping.
        network: the JMLR network, `JMLRHead` on top of ``backbone``.
    """

    backbone: type[nn.Module]
    kwargs: Callable[[Mapping[str, Any], str], dict[str, Any]]
    network: type[JMLRHead]


FAMILIES: dict[str, BackboneFamily] = {}


def register_family(name: str, backbone: type[nn.Module], kwargs: Callable[[Mapping[str, Any], str], dict[str, Any]],
                    network: type[JMLRHead] | None = None) -> BackboneFamily:
    """Register a backbone family under ``name`` (what configs write as ``backbone.family``).

    Every task can use it at once: the JMLR network (``network``, by default
    `jmlr_network_class(backbone)`) and the baselines (`create_backbone`). A new family
    is this call plus a YAML file in ``jmlr/configs/models/``.
    """
    family = BackboneFamily(backbone, kwargs, network or jmlr_network_class(backbone))
    FAMILIES[name] = family
    return family


register_family("resnet", ResNet, _resnet_kwargs, JMLRNet)
register_family("mobilenetv2", MobileNetV2, _mobilenetv2_kwargs, JMLRMobileNet)


def _family(cfg: Mapping[str, Any]) -> BackboneFamily:
    return FAMILIES[cfg["backbone"].get("family", "resnet")]


def _validate(cfg: dict[str, Any], origin: str) -> dict[str, Any]:
    bb = cfg.get("backbone")
    if not isinstance(bb, Mapping):
        raise ValueError(f"model config {origin}: missing 'backbone' mapping")
    family = bb.get("family", "resnet")
    if family not in FAMILIES:
        raise ValueError(f"model config {origin}: backbone.family {family!r} not in {sorted(FAMILIES)}")
    FAMILIES[family].kwargs(bb, origin)
    cfg.setdefault("input_size", DEFAULT_INPUT_SIZE)
    norm = {**DEFAULT_NORMALISATION, **(cfg.get("normalisation") or {})}
    if len(norm["mean"]) != 3 or len(norm["std"]) != 3:
        raise ValueError(f"model config {origin}: normalisation mean/std need 3 values")
    cfg["normalisation"] = norm
    names = cfg.get("expression_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
                              or len(set(names)) != len(names)):
        raise ValueError(f"model config {origin}: expression_names must be a list of distinct names")
    return cfg


def load_model_config(name_or_path: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A validated, independent copy of a model config (defaults filled in)."""
    if isinstance(name_or_path, Mapping):
        cfg = copy.deepcopy(dict(name_or_path))
        origin = repr(cfg.get("name", "<dict>"))
    else:
        path = _resolve(str(name_or_path))
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
        cfg.setdefault("name", path.stem)
        origin = str(path)
    return _validate(cfg, origin)


def create_model(name_or_path: str | Path | Mapping[str, Any], num_vertices: int,
                 input_size: int | None = None) -> JMLRHead:
    """Build a randomly initialised JMLR network.

    Args:
        name_or_path: registry name, YAML path or config dict.
        num_vertices: N; the ``fc`` has ``5 N`` outputs.
        input_size: crop side S; default the config's ``input_size``.

    Returns:
        A `JMLRHead` network (``JMLRNet``, ``JMLRMobileNet``) whose ``.config`` is the
        resolved config (with ``input_size`` = S). A config's ``init`` (pretrained
        weights) is applied by the trainer, not here: a stored model loads its own weights.
    """
    cfg = load_model_config(name_or_path)
    if input_size is not None:
        cfg["input_size"] = int(input_size)
    family = _family(cfg)
    kwargs = family.kwargs(cfg["backbone"], repr(cfg.get("name", "<dict>")))
    return family.network(num_vertices, cfg["input_size"], config=cfg, **kwargs)


def create_backbone(name_or_config: str | Path | Mapping[str, Any]) -> tuple[nn.Module, int]:
    """A backbone without head, for other heads (the baselines).

    Returns:
        ``(module, feature_dim)``; ``module(x (B, 3, H, W))`` -> pooled features
        ``(B, feature_dim)``; ``module.forward_features`` gives the ``(B, C, H/32, W/32)`` map.
    """
    cfg = load_model_config(name_or_config)
    family = _family(cfg)
    net = family.backbone(num_classes=0, **family.kwargs(cfg["backbone"], repr(cfg.get("name", "<dict>"))))
    return net, int(net.num_features)

"""Write a model-store folder from a network, a training checkpoint, or a random init."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from jmlr.paths import REPO_ROOT, default_model_store

from .load import load_topology
from .manifest import (
    FORMAT,
    FORMAT_VERSION,
    ICT_ATTRIBUTION,
    OUTPUT_SPEC,
    TOPOLOGY_NAME,
    WEIGHTS_NAME,
    ModelStoreError,
    sha256_file,
    write_manifest,
)

__all__ = ["export_model", "export_checkpoint", "make_random_model", "set_default_model",
           "clean_state_dict", "DEFAULT_LICENCE"]

DEFAULT_LICENCE = {"weights": "MIT", "attribution": ICT_ATTRIBUTION}

# Prefixes added by DataParallel/DDP ("module."), torch.compile ("_orig_mod.") and the
# reference code's wrapper ("net."): stripped so the keys are those of the bare network.
_PREFIXES = ("module.", "_orig_mod.", "net.")


def clean_state_dict(state: Mapping[str, torch.Tensor],
                     prefixes: tuple[str, ...] = _PREFIXES) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes, repeatedly, when every key carries the same one."""
    state = dict(state)
    changed = True
    while changed and state:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in state):
                state = {k[len(p):]: v for k, v in state.items()}
                changed = True
    return state


def _resolve_arch(arch: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    from jmlr.models import load_model_config

    cfg = load_model_config(arch)
    return str(cfg.get("name", "custom")), cfg


_FP32_BUFFERS = (".running_mean", ".running_var")


def _cast(state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    # BN statistics stay fp32 (tiny, and their rounding shifts every activation); integer
    # buffers (num_batches_tracked) keep their dtype; clone() also breaks any shared
    # storage, which safetensors refuses to write.
    def cast(k: str, v: torch.Tensor) -> torch.Tensor:
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.to(torch.float32 if k.endswith(_FP32_BUFFERS) else dtype)
        return v.contiguous().clone()

    return {k: cast(k, v) for k, v in state.items()}


def export_model(
    state_dict_or_module: nn.Module | Mapping[str, torch.Tensor],
    arch: str | Mapping[str, Any],
    topology_path: str | Path,
    store_dir: str | Path | None,
    name: str,
    version: str = "1",
    metrics: dict | None = None,
    training_data: Any = None,
    task: str = "jmlr",
    dtype: torch.dtype = torch.float16,
    extra: dict | None = None,
    *,
    input_size: int | None = None,
    licence: Any = None,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``<store_dir>/<name>/`` (manifest, weights, topology) and return that folder.

    Args:
        state_dict_or_module: the trained network or its state dict (wrapper prefixes
            such as ``module.`` are stripped).
        arch: registry name, YAML path or config dict. The weights are checked by
            loading them into the task's network (`jmlr.models.tasks`) built from it.
        topology_path: the ``Topology`` npz the outputs index (copied byte for byte).
        store_dir: the store (default ``jmlr.paths.default_model_store()``).
        name: folder name; must not exist unless ``overwrite``.
        dtype: ``torch.float16`` halves the file; loading always computes in fp32.
        input_size: crop size S; default the config's ``input_size``.
        licence: free text or dict; default MIT + the ICT-FaceKit attribution.
        description: one line for humans (shown by tools listing the store).

    Raises:
        ModelStoreError: the weights do not fit the architecture / topology, or the
            folder exists.
    """
    if not name or Path(name).name != name or name.startswith("."):
        raise ModelStoreError(f"bad model name {name!r}: use a plain folder name")
    store = Path(store_dir) if store_dir is not None else default_model_store()
    out_dir = store / name
    if out_dir.exists() and not overwrite:
        raise ModelStoreError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")

    state = (state_dict_or_module.state_dict() if isinstance(state_dict_or_module, nn.Module)
             else state_dict_or_module)
    # "net." is only a wrapper for the JMLR net; a baseline may own a real "net" child.
    state = clean_state_dict(state, _PREFIXES if task == "jmlr" else _PREFIXES[:2])
    arch_name, cfg = _resolve_arch(arch)
    if input_size is not None:
        cfg["input_size"] = int(input_size)
    size = int(cfg.get("input_size", 256))
    topo = load_topology(topology_path)
    n = int(topo.num_vertices)

    from jmlr.models.tasks import TASKS, get_task

    if task not in TASKS:
        raise ModelStoreError(f"task {task!r} unknown to this code (known: {sorted(TASKS)})")
    net = get_task(task).build(cfg, n, size)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelStoreError(
            f"weights do not fit {arch_name} ({task}) with N={n} vertices (topology "
            f"{topology_path}): {exc}") from exc
    cfg = net.config

    store.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling folder and rename at the end, so a crash never
    # leaves a half-written model that a server could pick up.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=store))
    try:
        save_file(_cast(state, dtype), str(tmp / WEIGHTS_NAME),
                  metadata={"format": "pt", "name": name, "version": str(version)})
        shutil.copyfile(topology_path, tmp / TOPOLOGY_NAME)
        files = {"weights": WEIGHTS_NAME, "topology": TOPOLOGY_NAME}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": str(version),
            "task": task,
            "description": description,
            "architecture": {"name": arch_name, "config": cfg},
            "input_size": size,
            "num_vertices": n,
            "normalisation": dict(cfg.get("normalisation")
                                  or {"mean": [0.5] * 3, "std": [0.5] * 3, "color": "RGB"}),
            "output": dict(OUTPUT_SPEC),
            "files": files,
            "sha256": {f: sha256_file(tmp / f) for f in files.values()},
            "dtype": str(dtype).replace("torch.", ""),
            "training_data": training_data,
            "metrics": dict(metrics or {}),
            "licence": licence if licence is not None else dict(DEFAULT_LICENCE),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "extra": dict(extra or {}),
        }
        write_manifest(tmp, manifest)
        # mkdtemp makes the folder private (0700); a store is meant to be shared/served.
        os.chmod(tmp, 0o755)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _checkpoint_files(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path / "last.safetensors", path / "last.json"
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    return path, path.with_suffix(".json")


def _find(p: str | Path, *bases: Path) -> Path:
    p = Path(p).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for base in bases:
        if (base / p).exists():
            return base / p
    return p


def export_checkpoint(ckpt: str | Path, name: str, store_dir: str | Path | None = None,
                      version: str = "1", dtype: torch.dtype = torch.float16,
                      overwrite: bool = False, metrics: dict | None = None,
                      description: str | None = None) -> Path:
    """Export a training checkpoint (``last.safetensors`` + ``last.json``) to the store.

    ``last.json``: ``{"model": name or config dict, "num_vertices", "input_size",
    "topology": npz path (absolute, or relative to the checkpoint or the repo),
    "task", "step"}``; optional ``metrics`` and ``training_data`` are carried over.
    ``metrics`` (e.g. a ``jmlr eval`` result) replaces the checkpoint's own.
    """
    weights, meta_path = _checkpoint_files(Path(ckpt))
    for p in (weights, meta_path):
        if not p.is_file():
            raise ModelStoreError(f"checkpoint file missing: {p}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    topo = _find(meta["topology"], meta_path.parent, REPO_ROOT)
    if not topo.is_file():
        raise ModelStoreError(f"topology {meta['topology']!r} named in {meta_path} not found")
    state = load_file(str(weights))
    n = meta.get("num_vertices")
    if n is not None and int(n) != load_topology(topo).num_vertices:
        raise ModelStoreError(f"{meta_path}: num_vertices {n} differs from topology {topo}")
    # What the training run recorded travels on, so that a model exported by hand can be
    # continued (`jmlr train --init`) with its cumulative image count, like one the
    # trainer exported itself.
    cfg = meta.get("config") or {}
    extra = {k: v for k, v in (("checkpoint", Path(ckpt).name), ("step", meta.get("step")),
                               ("images_seen", meta.get("images_seen")),
                               ("images_seen_total", meta.get("images_seen_total")),
                               ("train_config", meta.get("config")), ("init", cfg.get("init"))) if v is not None}
    return export_model(
        state, meta["model"], topo, store_dir, name, version=version,
        metrics=metrics if metrics is not None else meta.get("metrics"),
        training_data=meta.get("training_data"),
        task=meta.get("task", "jmlr"), dtype=dtype, extra=extra,
        input_size=meta.get("input_size"), overwrite=overwrite,
        **({"description": description} if description else {}))


def _placeholder_head(net: nn.Module, mean_shape: np.ndarray, input_size: int) -> None:
    """Make an untrained net output a plausible frontal face instead of noise.

    The fc bias becomes the mean shape and its orthographic projection filling ~55% of
    the crop, and the weights shrink, so downstream code (PnP, rendering) sees a sane
    face whatever the input. It is still a placeholder: the output barely depends on
    the image.
    """
    from jmlr.models import encode_targets

    v = torch.as_tensor(mean_shape, dtype=torch.float32)
    c = v.mean(0)
    scale = 0.55 * input_size / float((v[:, 0].max() - v[:, 0].min()).clamp_min(1e-6))
    u = input_size / 2 + (v[:, 0] - c[0]) * scale
    w = input_size / 2 - (v[:, 1] - c[1]) * scale  # image v grows downwards, world y up
    target = encode_targets(v[None], torch.stack([u, w], -1)[None], input_size)[0]
    with torch.no_grad():
        net.fc.weight.mul_(0.01)
        net.fc.bias.copy_(target)


def make_random_model(
    arch: str = "jmlr_resnet18d",
    input_size: int | None = 128,
    name: str = "jmlr_r18d_128_untrained",
    store_dir: str | Path | None = None,
    topology_path: str | Path | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    set_default: bool = False,
    overwrite: bool = False,
) -> Path:
    """A randomly initialised (fixed ``seed``) placeholder model in the store.

    Used so that the service runs before any training; the manifest says so loudly.
    ``topology_path`` defaults to ``jmlr.facemodel.default_topology_path()``.
    """
    if topology_path is None:
        from jmlr.facemodel.topology import default_topology_path

        topology_path = default_topology_path()
    topo = load_topology(topology_path)
    from jmlr.models import create_model

    torch.manual_seed(seed)
    net = create_model(arch, topo.num_vertices, input_size)
    _placeholder_head(net, np.asarray(topo.mean_shape), net.input_size)
    out = export_model(
        net, net.config, topology_path, store_dir, name, version="0",
        training_data=f"none: UNTRAINED PLACEHOLDER (random init, seed {seed})",
        dtype=dtype, overwrite=overwrite,
        description="UNTRAINED PLACEHOLDER: random weights; replace with a trained model",
        extra={"untrained_placeholder": True, "seed": seed,
               "note": "UNTRAINED PLACEHOLDER: random weights, fc bias = mean shape and its "
                       "frontal orthographic projection. Outputs do not depend meaningfully "
                       "on the image. Replace with a trained model."})
    if set_default:
        set_default_model(name, store_dir=store_dir)
    return out


def set_default_model(name: str, devices: tuple[str, ...] = ("cpu", "cuda"),
                      store_dir: str | Path | None = None) -> Path:
    """Point ``index.json``'s default for ``devices`` at ``name`` (other entries kept)."""
    store = Path(store_dir) if store_dir is not None else default_model_store()
    if not (store / name / "manifest.json").is_file():
        raise ModelStoreError(f"no model {name!r} in {store}")
    path = store / "index.json"
    index = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    index.setdefault("default", {})
    for d in devices:
        index["default"][d] = name
    path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return path

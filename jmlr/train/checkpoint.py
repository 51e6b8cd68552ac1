"""Resumable training checkpoints: safetensors for the weights and the optimizer's tensors,
JSON for the rest (no pickle), each file written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from jmlr.models.vertex_basis import plain_state_dict, vertex_basis_of

__all__ = ["save_checkpoint", "checkpoint_basis", "load_checkpoint", "load_optimizer_state"]


def save_checkpoint(ckpt_dir: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    meta: dict) -> Path:
    """Write ``last.safetensors`` (net, plain layout), ``last.optim.safetensors`` (optimizer
    tensors), ``last.json`` (meta + optimizer scalars) and, for a head trained on a vertex
    basis, ``last.basis.safetensors`` (the basis its optimizer state refers to), each
    atomically. Returns ``ckpt_dir``."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in plain_state_dict(net).items()}
    basis = vertex_basis_of(net)
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{idx}.{k}"] = v
    meta = dict(meta, optimizer={"param_groups": opt["param_groups"], "scalars": scalars})
    files: list[tuple[str, Callable[[str], Any]]] = [
        ("last.safetensors", lambda p: save_file(state, p)),
        ("last.optim.safetensors", lambda p: save_file(tensors, p))]
    if basis is not None:
        files.append(("last.basis.safetensors", lambda p: save_file({"basis": basis.detach().cpu().contiguous()}, p)))
    else:
        (ckpt_dir / "last.basis.safetensors").unlink(missing_ok=True)
    files.append(("last.json", lambda p: Path(p).write_text(json.dumps(meta, indent=1), "utf-8")))
    for name, write in files:
        tmp = ckpt_dir / f".{name}.tmp"
        write(str(tmp))
        os.replace(tmp, ckpt_dir / name)
    return ckpt_dir


def checkpoint_basis(ckpt_dir: Path) -> torch.Tensor | None:
    """The vertex basis a checkpoint's head was trained on (None: a plain head)."""
    path = Path(ckpt_dir) / "last.basis.safetensors"
    return load_file(str(path))["basis"] if path.is_file() else None


def load_checkpoint(ckpt_dir: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore net (and optimizer) from :func:`save_checkpoint` files; returns the meta.

    The weights are loaded in the plain layout: a net with a vertex basis attached gets
    them projected onto its basis (exact when it is the checkpoint's own)."""
    meta = json.loads((ckpt_dir / "last.json").read_text("utf-8"))
    state = load_file(str(ckpt_dir / "last.safetensors"))
    basis = vertex_basis_of(net)
    if basis is not None:
        with torch.no_grad():
            net.fc.weight = state.pop("fc.weight").to(basis.device)
            net.fc.bias = state.pop("fc.bias").to(basis.device)
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.parametrizations.")]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {ckpt_dir}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    else:
        net.load_state_dict(state)
    if optimizer is not None:
        load_optimizer_state(ckpt_dir, optimizer, meta)
    return meta


def load_optimizer_state(ckpt_dir: Path, optimizer: torch.optim.Optimizer, meta: dict | None = None) -> None:
    """Restore the optimizer tensors and scalars of :func:`save_checkpoint` (if saved)."""
    meta = meta if meta is not None else json.loads((ckpt_dir / "last.json").read_text("utf-8"))
    if (ckpt_dir / "last.optim.safetensors").is_file():
        tensors = load_file(str(ckpt_dir / "last.optim.safetensors"))
        state: dict[int, dict] = {}
        for key, v in tensors.items():
            idx, k = key.split(".", 1)
            state.setdefault(int(idx), {})[k] = v
        for key, v in meta["optimizer"]["scalars"].items():
            idx, k = key.split(".", 1)
            state.setdefault(int(idx), {})[k] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})

"""Import a checkpoint of the paper's public training code (insightface ``reconstruction/jmlr``).

That code trains ``OneNetwork``, which wraps timm's ``resnet34d`` (or its searched
``resnet_jmlr``) as ``self.net``; its ``fc`` outputs ``N*3`` world vertices (x10) then
``N*2`` crop points in [-1, 1] (N = 1220 for ARKit's mesh), inputs RGB normalised with
0.5/0.5 at 256x256. Our ResNet-D keeps timm's parameter names, so after stripping the
``module.`` / ``net.`` prefixes the state dict loads as is.

The ``.pth`` is a pickle: it is opened only with ``torch.load(..., weights_only=True)``,
which refuses anything but tensors and plain containers.

The topology comes from the challenge's ``example.obj`` (vertices -> ``mean_shape``,
faces -> ``triangles``) and the given ``flip_index``. ``ict_index`` is all -1 (the ARKit
mesh is not a subset of ICT-FaceKit) and, without ``landmarks68``, so are the landmarks:
a service using such a model cannot return the 68 landmarks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jmlr.facemodel.topology import Topology

from .export import clean_state_dict, export_model
from .manifest import ModelStoreError

__all__ = ["read_insightface_state_dict", "guess_arch", "topology_from_obj", "import_insightface",
           "ARCH_ALIASES", "INSIGHTFACE_LICENCE"]

ARCH_ALIASES = {"resnet34d": "jmlr_resnet34d", "searched": "jmlr_searched",
                "resnet_jmlr": "jmlr_searched", "resnet18d": "jmlr_resnet18d",
                "resnet50d": "jmlr_resnet50d"}

INSIGHTFACE_LICENCE = {
    "code": "insightface training code: MIT",
    "weights": ("as released with the source checkpoint; models trained on ARKitFace / the WCPA "
                "challenge data are for non-commercial research only -- check before any other use"),
}


def read_insightface_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The bare network's state dict from a reference ``.pth`` (pickle-safe load)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelStoreError(f"{path}: cannot read as a weights-only torch checkpoint ({exc})") from exc
    for key in ("model", "state_dict", "backbone"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelStoreError(f"{path}: no state dict of tensors found")
    return clean_state_dict(obj)


def guess_arch(state: Mapping[str, torch.Tensor]) -> str:
    """``jmlr_resnet34d`` or ``jmlr_searched`` from the blocks in ``layer1`` and widths."""
    n_layer1 = len({k.split(".")[1] for k in state if k.startswith("layer1.")})
    layer2_width = state["layer2.0.conv1.weight"].shape[0] if "layer2.0.conv1.weight" in state else None
    if n_layer1 == 5 and layer2_width == 160:
        return "jmlr_searched"
    if "layer1.0.conv3.weight" in state:
        return "jmlr_resnet50d"
    return {2: "jmlr_resnet18d", 3: "jmlr_resnet34d"}.get(n_layer1, "jmlr_resnet34d")


def _read_ints(path: str | Path) -> np.ndarray:
    path = Path(path)
    if path.suffix == ".npy":
        return np.asarray(np.load(path, allow_pickle=False)).astype(np.int64).ravel()
    return np.loadtxt(path, dtype=np.int64).ravel()


def topology_from_obj(obj_path: str | Path, flip_index: np.ndarray,
                      landmarks68: np.ndarray | None = None) -> Topology:
    """A ``Topology`` over an arbitrary mesh (not ICT-indexed: ``ict_index`` = -1)."""
    # mirror_tol=inf: the caller's flip_index replaces the nearest-neighbour guess.
    topo = Topology.from_obj(obj_path, mirror_tol=float("inf"))
    n = topo.num_vertices
    flip = np.asarray(flip_index, np.int64).ravel()
    if flip.shape != (n,) or flip.min() < 0 or flip.max() >= n:
        raise ModelStoreError(f"flip_index must be {n} indices in [0, {n}), got shape {flip.shape}")
    if not np.array_equal(np.sort(flip), np.arange(n)) or not np.array_equal(flip[flip], np.arange(n)):
        raise ModelStoreError("flip_index must be an involution (a permutation that is its own inverse)")
    lm = np.full(68, -1, np.int64) if landmarks68 is None else np.asarray(landmarks68, np.int64).ravel()
    if lm.shape != (68,) or lm.max() >= n:
        raise ModelStoreError(f"landmarks68 must be 68 vertex indices < {n}")
    return Topology(ict_index=np.full(n, -1, np.int64), triangles=topo.triangles, flip_index=flip,
                    landmarks68=lm, mean_shape=topo.mean_shape.astype(np.float32))


def import_insightface(
    ckpt: str | Path,
    topology_obj: str | Path,
    flip_index: str | Path | np.ndarray,
    name: str,
    store_dir: str | Path | None = None,
    arch: str | None = None,
    landmarks68: str | Path | np.ndarray | None = None,
    input_size: int = 256,
    version: str = "1",
    dtype: torch.dtype = torch.float16,
    overwrite: bool = False,
    training_data: Any = "ARKitFace (WCPA challenge), trained with insightface reconstruction/jmlr",
) -> Path:
    """Convert a reference checkpoint into ``<store>/<name>/``; returns the folder.

    Args:
        arch: ``resnet34d`` / ``searched`` (or a registry name); default guessed from
            the state dict.
        input_size: the crop size it was trained at (the reference uses 256).
    """
    state = read_insightface_state_dict(ckpt)
    arch_name = ARCH_ALIASES.get(arch, arch) if arch else guess_arch(state)
    flip = flip_index if isinstance(flip_index, np.ndarray) else _read_ints(flip_index)
    lm = None
    if landmarks68 is not None:
        lm = landmarks68 if isinstance(landmarks68, np.ndarray) else _read_ints(landmarks68)
    topo = topology_from_obj(topology_obj, flip, lm)
    out_features = state["fc.weight"].shape[0] if "fc.weight" in state else None
    if out_features != 5 * topo.num_vertices:
        raise ModelStoreError(
            f"{ckpt}: fc has {out_features} outputs, the OBJ has {topo.num_vertices} vertices "
            f"(expected {5 * topo.num_vertices}); is it a JMLR (task 0) checkpoint for this mesh?")
    with tempfile.TemporaryDirectory() as tmp:
        topo_path = topo.save(Path(tmp) / "topology.npz")
        return export_model(
            state, arch_name, topo_path, store_dir, name, version=version,
            training_data=training_data, dtype=dtype, input_size=input_size,
            licence=dict(INSIGHTFACE_LICENCE), overwrite=overwrite,
            extra={"source": "insightface reconstruction/jmlr", "source_checkpoint": Path(ckpt).name,
                   "landmarks68": "given" if lm is not None else
                   "absent (-1): the service cannot return 68 landmarks with this model"})

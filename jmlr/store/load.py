"""Load a model-store folder: verify, build the network, run it on crops."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from jmlr.facemodel.topology import Topology
from jmlr.models.tasks import TASKS, Task, TaskOutput, get_task
from jmlr.paths import default_model_store

from .manifest import MANIFEST_NAME, ModelStoreError, read_manifest, sha256_file

__all__ = ["LoadedModel", "CropPrediction", "load_model", "list_models", "default_model_name", "load_topology",
           "unflip_predictions", "crop_batch"]


class CropPrediction(NamedTuple):
    """What a backend's ``infer`` returns for B aligned crops (numpy float32).

    verts: (B, N, 3) world (head-frame) vertices, metres.
    points: (B, N, 2) crop pixels.
    expression: (B, E) expression weights in [0, 1], in the order of the backend's
        ``expression_names``; None for a model without expression head.
    """

    verts: np.ndarray
    points: np.ndarray
    expression: np.ndarray | None = None


def average_flipped(both: CropPrediction, flip_index: np.ndarray, expression_flip_index: np.ndarray | None,
                    input_size: int) -> CropPrediction:
    """Flip test-time augmentation: ``both`` holds the predictions for 2B crops, the B
    crops then their B mirror images (one forward pass: one batch of 2B costs less than
    two of B); returns the B means, the mirrored half un-mirrored first
    (`unflip_predictions`; the expression's left and right shapes swapped back by
    ``expression_flip_index``)."""
    b = len(both.verts) // 2
    vf, pf = unflip_predictions(both.verts[b:], both.points[b:], flip_index, input_size)
    expression = None if both.expression is None else both.expression[:b]
    if expression is not None and expression_flip_index is not None:
        expression = (expression + both.expression[b:, expression_flip_index]) / 2
    return CropPrediction((both.verts[:b] + vf) / 2, (both.points[:b] + pf) / 2, expression)


def load_topology(path: str | Path) -> Topology:
    """``Topology.load(path)``, with any failure reported as ``ModelStoreError``."""
    try:
        return Topology.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelStoreError(f"{path}: not a readable topology npz ({exc!r})") from exc


def _task(name: str) -> Task:
    try:
        return get_task(name)
    except KeyError:
        raise ModelStoreError(f"task {name!r} unknown to this code (known: {sorted(TASKS)})") from None


def crop_batch(crops: np.ndarray, size: int) -> np.ndarray:
    """What every backend's ``predict`` takes, checked: uint8 ``(B, S, S, 3)`` (or one
    ``(S, S, 3)``) RGB crops -> a C-contiguous uint8 ``(B, S, S, 3)`` array.

    Raises:
        ValueError: another shape or dtype.
    """
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise ValueError(f"crops must be (B, {size}, {size}, 3) RGB, got {crops.shape}")
    if crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8, got {crops.dtype}")
    return np.ascontiguousarray(crops)


def unflip_predictions(verts, points, flip_index, input_size: int):
    """Map the predictions for a horizontally flipped crop back to the original crop.

    Mirroring the image mirrors the head (x -> -x in the head frame, u -> S-1-u in the
    crop, pixel centres at integers) and swaps left/right vertices, which
    ``flip_index`` (an involution) undoes. Applying this twice is the identity.

    Args:
        verts: ``(B, N, 3)`` torch or numpy.
        points: ``(B, N, 2)`` crop px.
        flip_index: ``(N,)`` ints, the mirror partner of each vertex.
        input_size: S.
    """
    idx = flip_index if isinstance(verts, np.ndarray) else torch.as_tensor(
        np.asarray(flip_index), dtype=torch.long, device=verts.device)
    v = verts[:, idx].clone() if isinstance(verts, torch.Tensor) else verts[:, idx].copy()
    p = points[:, idx].clone() if isinstance(points, torch.Tensor) else points[:, idx].copy()
    v[..., 0] = -v[..., 0]
    p[..., 0] = (input_size - 1) - p[..., 0]
    return v, p


class LoadedModel:
    """A verified stored model, ready to predict on aligned crops.

    Attributes: ``manifest`` (dict), ``name``, ``version``, ``task`` (its name),
    ``task_spec`` (the registered `jmlr.models.tasks.Task`), ``topology``, ``input_size``
    (S), ``num_vertices`` (N), ``device``, ``net`` (eval mode, fp32), ``path`` (the folder),
    ``expression_names`` (the face-model expressions its head predicts; empty: no head).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], topology: Topology, net: nn.Module,
                 task: Task, device: torch.device) -> None:
        self.path = path
        self.manifest = manifest
        self.name = str(manifest["name"])
        self.version = str(manifest["version"])
        self.task = task.name
        self.task_spec = task
        self.topology = topology
        self.input_size = int(manifest["input_size"])
        self.num_vertices = int(topology.num_vertices)
        self.device = device
        self.net = net
        self.expression_names: tuple[str, ...] = tuple(getattr(net, "expression_names", ()))
        self.expression_flip_index: np.ndarray | None = None
        if self.expression_names:
            from jmlr.facemodel.blendshapes import expression_flip_index

            self.expression_flip_index = expression_flip_index(self.expression_names)
        norm = manifest["normalisation"]
        self._mean = torch.tensor(norm["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(norm["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return (f"LoadedModel(name={self.name!r}, version={self.version!r}, task={self.task!r}, "
                f"input_size={self.input_size}, N={self.num_vertices}, device={self.device})")

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 ``(B, S, S, 3)`` RGB -> normalised float32 ``(B, 3, S, S)`` on ``device``."""
        x = torch.from_numpy(crop_batch(crops, self.input_size)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self._mean) / self._std

    def predict(self, crops: np.ndarray, flip_tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Run the network on aligned crops.

        Args:
            crops: uint8 ``(B, S, S, 3)`` (or one ``(S, S, 3)``) RGB crops.
            flip_tta: also run the mirrored crops, un-mirror and average.

        Returns:
            verts ``(B, N, 3)`` float32 world (head-frame) vertices in metres and points
            ``(B, N, 2)`` float32 crop pixels.
        """
        return self.infer(crops, flip_tta)[:2]

    def infer(self, crops: np.ndarray, flip_tta: bool = False) -> CropPrediction:
        """As :meth:`predict`, with everything the network predicts: a `CropPrediction`
        (``expression`` too for a model with an expression head)."""
        if not self.task_spec.pose_by_pnp:
            raise NotImplementedError(f"task {self.task!r} predicts no 2D points; use .run")
        x = self.preprocess(crops)
        with torch.inference_mode():
            if not flip_tta:
                return self._infer(x)
            return average_flipped(self._infer(torch.cat([x, x.flip(3)])), self.topology.flip_index,
                                   self.expression_flip_index, self.input_size)

    def _infer(self, x: torch.Tensor) -> CropPrediction:
        out = self.task_spec.decode(self.net(x), self.num_vertices, self.input_size)
        return CropPrediction(_numpy32(out.verts), _numpy32(out.points),
                              None if out.expression is None else _numpy32(out.expression))

    def run(self, images: Mapping[str, np.ndarray]) -> TaskOutput:
        """Run the network once on the uint8 ``(B, S, S, 3)`` images its task takes
        (``images[k]`` for ``k`` in ``task_spec.inputs``); the decoded outputs as numpy."""
        xs = [self.preprocess(images[k]) for k in self.task_spec.inputs]
        with torch.inference_mode():
            out = self.task_spec.decode(self.net(*xs), self.num_vertices, self.input_size)
        return TaskOutput(*(v.float().cpu().numpy() if isinstance(v, torch.Tensor) else v for v in out))


def _numpy32(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy().astype(np.float32, copy=False)


def _verify(model_dir: Path, manifest: dict[str, Any]) -> None:
    names = set(manifest["files"].values()) | set(manifest["sha256"])
    for fname in sorted(names):
        path = model_dir / fname
        if not path.is_file():
            raise ModelStoreError(f"{path}: missing (listed in {MANIFEST_NAME})")
        expected = str(manifest["sha256"].get(fname, "")).lower()
        actual = sha256_file(path)
        if actual != expected:
            raise ModelStoreError(
                f"{path}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...): "
                "the file is corrupt or was modified; re-export or re-download the model")


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load and verify ``model_dir`` (a store folder, or a model name in the default store).

    Every file's sha256 is checked before anything is parsed; weights are read with
    safetensors (no pickle) and cast to fp32.

    Raises:
        ModelStoreError: missing folder or file, hash mismatch, unsupported manifest, or
            weights that do not fit the architecture.
    """
    path = Path(model_dir).expanduser()
    if not path.exists() and Path(str(model_dir)).name == str(model_dir):
        path = default_model_store() / str(model_dir)
    if not path.is_dir():
        raise ModelStoreError(f"{path}: no such model folder")
    manifest = read_manifest(path)
    _verify(path, manifest)
    files = manifest["files"]
    topology = load_topology(path / files["topology"])
    try:
        state = load_file(str(path / files["weights"]))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelStoreError(f"{path / files['weights']}: unreadable safetensors ({exc})") from exc
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}

    task = _task(str(manifest["task"]))
    cfg = manifest["architecture"]["config"]
    try:
        net = task.build(cfg, int(topology.num_vertices), int(manifest["input_size"]))
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelStoreError(f"{path}: weights do not fit the manifest's architecture ({exc})") from exc
    dev = torch.device(device)
    net.to(dev).eval()
    net.requires_grad_(False)
    return LoadedModel(path, manifest, topology, net, task, dev)


def list_models(store_dir: str | Path | None = None) -> list[str]:
    """Names of the model folders (those with a manifest) in the store, sorted."""
    store = Path(store_dir) if store_dir is not None else default_model_store()
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file())


def default_model_name(device: str = "cpu", store_dir: str | Path | None = None) -> str:
    """The store's default model for ``device`` ('cuda' or 'cpu', 'cuda:1' counts as cuda).

    Reads ``index.json`` ``{"default": {"cpu": NAME, "cuda": NAME}}``; a missing device
    entry falls back to the cpu one; no index falls back to the only / first model.
    """
    store = Path(store_dir) if store_dir is not None else default_model_store()
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    index_path = store / "index.json"
    if index_path.is_file():
        try:
            defaults = json.loads(index_path.read_text(encoding="utf-8")).get("default", {})
        except json.JSONDecodeError as exc:
            raise ModelStoreError(f"{index_path}: not valid JSON ({exc})") from exc
        name = defaults.get(kind) or defaults.get("cpu")
        if name:
            return str(name)
    names = list_models(store)
    if not names:
        raise ModelStoreError(f"no models in {store} (see `jmlr export --help`)")
    return names[0]

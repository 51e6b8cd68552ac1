"""Backends run a stored model on aligned crops; an ensemble averages several.

A backend is anything with the :class:`Backend` attributes and ``predict``; one whose
network predicts more (expression weights) also has ``infer`` and ``expression_names``
(:func:`infer_crops` asks each backend for what it has).
:data:`BACKENDS` maps a name to a loader: ``torch`` (`jmlr.store.LoadedModel`, CPU or
CUDA), ``ort`` and ``ort-int8`` (ONNX Runtime, fp32 or static int8;
`jmlr.inference.ort_backend`), and ``auto``, which picks per device
(:func:`resolve_backend`). Flip
test-time augmentation is the backend's ``predict(..., flip_tta=True)``
(`jmlr.store.unflip_predictions` works on numpy too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jmlr.facemodel.topology import Topology

from .crops import FaceCrops, uncrop_points

if TYPE_CHECKING:
    from jmlr.store.load import CropPrediction


def infer_crops(backend: Any, crops: np.ndarray, flip_tta: bool = False) -> CropPrediction:
    """Everything ``backend`` predicts for uint8 (B, S, S, 3) crops, as a
    `jmlr.store.CropPrediction`: its ``infer`` when it has one, else its ``predict`` (then
    ``expression`` is None)."""
    from jmlr.store.load import CropPrediction  # torch comes with it, only when a model runs

    infer = getattr(backend, "infer", None)
    if infer is not None:
        return CropPrediction(*infer(crops, flip_tta=flip_tta))
    verts, points = backend.predict(crops, flip_tta=flip_tta)
    return CropPrediction(verts, points, None)

__all__ = ["Backend", "BACKENDS", "AUTO_BACKENDS", "resolve_backend", "load_backend", "Ensemble", "infer_crops"]


class Backend(Protocol):
    """A model predicting, per aligned crop, world vertices and their crop points."""

    name: str
    version: str
    input_size: int
    topology: Topology

    def predict(self, crops: np.ndarray, flip_tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, S, S, 3) RGB crops -> (verts (B, N, 3) head-frame m, points (B, N, 2) crop px)."""
        ...


def _load_torch(model: str | Path, device: str, **_: Any) -> Backend:
    from jmlr.store import load_model  # torch comes with it, only when a model is loaded

    loaded = load_model(model, device=device)
    if not loaded.task_spec.pose_by_pnp:
        raise ValueError(f"{loaded.name}: task {loaded.task!r} predicts no 2D points; it cannot be reconstructed "
                         "from (use jmlr eval for the baselines)")
    return loaded


def _load_ort(model: str | Path, device: str, **options: Any) -> Backend:
    from .ort_backend import load_ort

    return load_ort(model, device, variant="fp32", **options)


def _load_ort_int8(model: str | Path, device: str, **options: Any) -> Backend:
    from .ort_backend import load_ort

    return load_ort(model, device, variant="int8", **options)


#: backend name -> loader(model folder or store name, device, **options). Options a
#: loader does not use are ignored: ``cache_dir`` and ``calibration`` (ONNX graphs,
#: `jmlr.inference.onnx_export`), ``ort_options`` (`jmlr.onnxrt.OrtOptions`).
BACKENDS: dict[str, Callable[..., Backend]] = {"torch": _load_torch, "ort": _load_ort, "ort-int8": _load_ort_int8}

#: what ``auto`` means per device kind: PyTorch on CUDA, ONNX Runtime fp32 on the CPU
#: (faster than PyTorch at the same outputs; docs/bench_service.md)
AUTO_BACKENDS = {"cuda": "torch", "cpu": "ort"}


def resolve_backend(backend: str, device: str) -> str:
    """The backend ``backend`` names on ``device``: itself, or for ``auto`` the entry of
    :data:`AUTO_BACKENDS` for the device's kind."""
    if backend == "auto":
        return AUTO_BACKENDS["cuda" if str(device).startswith("cuda") else "cpu"]
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {sorted(BACKENDS)} or 'auto'")
    return backend


def load_backend(model: str | Path, backend: str = "torch", device: str = "cpu", **options: Any) -> Backend:
    """Load ``model`` (a model-store folder, or a name in the default store) with
    ``backend`` (a :data:`BACKENDS` name or ``auto``); ``options`` go to its loader."""
    return BACKENDS[resolve_backend(backend, device)](model, device, **options)


def _same_topology(a: Topology, b: Topology) -> bool:
    return (a.num_vertices == b.num_vertices and np.array_equal(a.triangles, b.triangles)
            and np.array_equal(a.flip_index, b.flip_index))


class Ensemble:
    """One or more backends of one topology whose predictions are averaged: the vertices
    in metres and the 2D points in image pixels (each member sees its own crop size, so
    points are averaged after leaving the crop). One member is just that model. The
    expression weights are averaged when every member predicts the same ones
    (``expression_names``), else the ensemble predicts none.

    Raises ``ValueError`` for no members or different topologies.
    """

    def __init__(self, members: Sequence[Backend]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one model")
        for m in members[1:]:
            if not _same_topology(members[0].topology, m.topology):
                raise ValueError(f"ensemble needs one topology: {members[0].name} and {m.name} differ")
        self.members = list(members)
        names = {tuple(getattr(m, "expression_names", ())) for m in self.members}
        self.expression_names: tuple[str, ...] = names.pop() if len(names) == 1 else ()

    @property
    def topology(self) -> Topology:
        return self.members[0].topology

    @property
    def sizes(self) -> list[int]:
        """The distinct crop sizes the members take, ascending."""
        return sorted({int(m.input_size) for m in self.members})

    def predict(self, crops: Mapping[int, FaceCrops], flip_tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Predict F faces from their crops at every size in :attr:`sizes`.

        Returns (verts (F, N, 3) float64 head-frame m, points (F, N, 2) float64 image px).
        """
        pred = self.infer(crops, flip_tta)
        return pred.verts, pred.points

    def infer(self, crops: Mapping[int, FaceCrops], flip_tta: bool = False) -> CropPrediction:
        """As :meth:`predict`, with the expression weights (F, E) float64 when the members
        predict them (:attr:`expression_names`)."""
        vs: list[np.ndarray] = []
        ps: list[np.ndarray] = []
        es: list[np.ndarray] = []
        for m in self.members:
            c = crops[int(m.input_size)]
            pred = infer_crops(m, c.crops, flip_tta)
            vs.append(pred.verts.astype(np.float64))
            ps.append(uncrop_points(c.Ms, pred.points.astype(np.float64)))
            if pred.expression is not None:
                es.append(pred.expression.astype(np.float64))
        from jmlr.store.load import CropPrediction

        expression = np.mean(es, axis=0) if self.expression_names and len(es) == len(vs) else None
        return CropPrediction(np.mean(vs, axis=0), np.mean(ps, axis=0), expression)

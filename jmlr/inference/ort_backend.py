"""The network through ONNX Runtime: the CPU backends ``ort`` (fp32) and ``ort-int8``.

The graph comes from `jmlr.inference.onnx_export` (exported from the store's verified
weights on first use, then cached); the session is made with `jmlr.onnxrt.OrtOptions`
(fixed threads, no spin-waiting). Same attributes and ``predict`` as the PyTorch
backend, so the service, ``jmlr eval`` and `FaceReconstructor` take either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jmlr.facemodel.topology import Topology
from jmlr.onnxrt import OrtOptions, create_session
from jmlr.store.load import CropPrediction

from .onnx_export import INPUT_NAME, cached_onnx, output_names

__all__ = ["OrtModel", "load_ort"]


class OrtModel:
    """A stored JMLR model run by an ONNX Runtime session.

    Attributes as `jmlr.store.LoadedModel` (``name``, ``version``, ``task``,
    ``task_spec``, ``topology``, ``input_size``, ``num_vertices``, ``manifest``, ``path``,
    ``device``, ``expression_names``) plus ``variant`` ('fp32' or 'int8'), ``onnx_path``
    and ``session``.
    """

    def __init__(self, loaded: Any, session: Any, variant: str, onnx_path: Path) -> None:
        self.path: Path = loaded.path
        self.manifest: dict[str, Any] = loaded.manifest
        self.name = str(loaded.name)
        self.version = str(loaded.version)
        self.task = loaded.task
        self.task_spec = loaded.task_spec
        self.topology: Topology = loaded.topology
        self.input_size = int(loaded.input_size)
        self.num_vertices = int(loaded.num_vertices)
        self.variant = variant
        self.onnx_path = onnx_path
        self.session = session
        self.device = "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"
        self._flip_index = np.asarray(self.topology.flip_index)
        self.expression_names: tuple[str, ...] = tuple(loaded.expression_names)
        self.expression_flip_index = loaded.expression_flip_index
        self._outputs = list(output_names(loaded))

    def __repr__(self) -> str:
        return (f"OrtModel(name={self.name!r}, version={self.version!r}, variant={self.variant!r}, "
                f"input_size={self.input_size}, N={self.num_vertices}, providers={self.session.get_providers()})")

    def _run(self, crops: np.ndarray) -> CropPrediction:
        return CropPrediction(*(a.astype(np.float32, copy=False)
                                for a in self.session.run(self._outputs, {INPUT_NAME: crops})))

    def predict(self, crops: np.ndarray, flip_tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, S, S, 3) (or one (S, S, 3)) RGB crops -> verts (B, N, 3) float32
        head-frame m, points (B, N, 2) float32 crop px; ``flip_tta`` also runs the mirrored
        crops and averages (as `jmlr.store.LoadedModel.predict`)."""
        return self.infer(crops, flip_tta)[:2]

    def infer(self, crops: np.ndarray, flip_tta: bool = False) -> CropPrediction:
        """As :meth:`predict`, with the expression weights too (`jmlr.store.CropPrediction`)."""
        from jmlr.store import average_flipped, crop_batch

        s = self.input_size
        crops = crop_batch(crops, s)
        if not flip_tta:
            return self._run(crops)
        return average_flipped(self._run(np.concatenate([crops, crops[:, :, ::-1]])), self._flip_index,
                               self.expression_flip_index, s)


def load_ort(model: str | Path, device: str = "cpu", variant: str = "fp32", cache_dir: str | Path | None = None,
             calibration: str | Path | None = None, ort_options: OrtOptions | None = None,
             **_: Any) -> OrtModel:
    """Load ``model`` (a store folder or name) as an ONNX Runtime backend.

    The store's files are verified as for PyTorch; the graph is read from the cache
    (`jmlr.inference.onnx_export.cached_onnx`) or exported into it. ``device`` 'cuda'
    asks for ORT's CUDA provider first (CPU where it is not installed).
    """
    from jmlr.store import load_model

    loaded = load_model(model, device="cpu")
    if not loaded.task_spec.pose_by_pnp:
        raise ValueError(f"{loaded.name}: task {loaded.task!r} predicts no 2D points; it cannot be reconstructed "
                         "from (use jmlr eval for the baselines)")
    onnx_path = cached_onnx(loaded, variant, cache_dir, calibration)[0]
    options = ort_options or OrtOptions()
    if options.providers is None:
        cuda = str(device).startswith("cuda")
        providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if cuda else ("CPUExecutionProvider",)
        options = OrtOptions(options.threads, options.spinning, providers)
    session = create_session(onnx_path, options)
    del loaded.net  # the graph has the weights now; free the PyTorch copy
    return OrtModel(loaded, session, variant, onnx_path)

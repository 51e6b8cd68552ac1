"""A stored model as an ONNX graph, fp32 or int8, cached beside the model store.

The graph is the whole per-crop computation, so a runtime only feeds crops and reads
metric outputs::

    crops uint8 (B, S, S, 3) RGB -> normalise -> network -> decode ->
        verts (B, N, 3) float32 head-frame metres, points (B, N, 2) float32 crop px
        [, expression (B, E) float32 in [0, 1]: models with an expression head]

It is exported from the store's verified safetensors and manifest (never committed:
it would duplicate the weights) into a cache folder, ``$JMLR_ONNX_CACHE`` or
``~/.cache/jmlr/onnx``, once per model version; a JSON sidecar records the source
weights' sha256 and the graph's own, checked on every load.

int8 is static post-training quantisation (QDQ, per-channel symmetric int8 weights,
uint8 activations) of the convolutions only, calibrated on aligned crops of synthetic
renders (``jmlr pack`` data or a ``jmlr synth`` folder, never the held-out set). The
fully connected head and the output affine stay fp32: one int8 scale for the 5N outputs
would quantise the vertices in steps of about a millimetre.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VARIANTS", "EXPORT_VERSION", "OPSET", "default_cache_dir", "cached_onnx", "export_onnx",
           "quantize_int8", "calibration_crops", "OnnxCacheError"]

#: variant name -> what it is
VARIANTS = {"fp32": "float32 graph", "int8": "static int8 (QDQ) convolutions, fp32 head"}
#: bump when the exported graph changes, so older cache entries are not used
EXPORT_VERSION = 1
OPSET = 17
INPUT_NAME = "crops"
OUTPUT_NAMES = ("verts", "points")
EXPRESSION_OUTPUT = "expression"


def output_names(model: Any) -> tuple[str, ...]:
    """The graph outputs of a loaded model: :data:`OUTPUT_NAMES`, plus
    :data:`EXPRESSION_OUTPUT` for a model with an expression head."""
    return OUTPUT_NAMES + ((EXPRESSION_OUTPUT,) if getattr(model, "expression_names", ()) else ())
CACHE_ENV = "JMLR_ONNX_CACHE"


class OnnxCacheError(RuntimeError):
    """The ONNX graph is not in the cache and cannot be made (e.g. int8 without calibration data)."""


def default_cache_dir() -> Path:
    """``$JMLR_ONNX_CACHE``, else ``$XDG_CACHE_HOME/jmlr/onnx`` (``~/.cache/jmlr/onnx``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jmlr" / "onnx"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _weights_sha256(manifest: dict[str, Any]) -> str:
    return str(manifest["sha256"][manifest["files"]["weights"]]).lower()


def cache_paths(manifest: dict[str, Any], variant: str, cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(graph path, sidecar JSON path) of ``variant`` of the model ``manifest`` describes."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r}; known: {sorted(VARIANTS)}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = (f"{manifest['name']}-v{manifest['version']}-{_weights_sha256(manifest)[:16]}"
            f"-{variant}-e{EXPORT_VERSION}")
    return root / f"{stem}.onnx", root / f"{stem}.json"


# --------------------------------------------------------------------------- export


def export_onnx(model: Any) -> bytes:
    """The fp32 ONNX graph (bytes) of a loaded JMLR model (`jmlr.store.LoadedModel`),
    preprocessing and decoding included; the batch dimension is dynamic."""
    import io

    import torch
    from torch import nn

    if not model.task_spec.pose_by_pnp:
        raise ValueError(f"{model.name}: task {model.task!r} has no ONNX export (JMLR models only)")
    norm = model.manifest["normalisation"]
    n, s, decode = int(model.num_vertices), int(model.input_size), model.task_spec.decode
    names = output_names(model)

    class CropsToOutputs(nn.Module):
        shift: torch.Tensor  # buffers, registered below
        gain: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.net = model.net
            # (u8 / 255 - mean) / std with the constants folded.
            self.register_buffer("shift", torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("gain", 1.0 / (torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1)
                                                * 255.0))

        def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = (crops.permute(0, 3, 1, 2).float() - self.shift) * self.gain
            out = decode(self.net(x), n, s)
            return (out.verts, out.points) + (() if out.expression is None else (out.expression,))

    wrapper = CropsToOutputs().eval().to("cpu")
    buf = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            # f= is typed as a path, but the legacy exporter (dynamo=False) writes to file objects too
            wrapper, (torch.zeros(1, s, s, 3, dtype=torch.uint8),), buf,  # type: ignore[arg-type]
            dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=list(names), do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "B"}, **{k: {0: "B"} for k in names}},
        )
    return buf.getvalue()


# --------------------------------------------------------------------------- int8


def calibration_crops(source: str | Path, size: int, count: int = 128, seed: int = 0) -> np.ndarray:
    """``count`` aligned uint8 crops (count, S, S, 3) to calibrate int8 ranges on.

    ``source``: packed training data (``jmlr pack``: crops aligned exactly as the service
    aligns them, on the ground truth's five points) or a challenge-layout folder
    (``jmlr synth``: the image's 68 landmarks give the five points). Samples are drawn
    evenly spread with ``seed``.
    """
    from jmlr.inference.crops import crop_faces

    root = Path(source)
    rng = np.random.default_rng(seed)
    if (root / "list").is_dir() and (root / "image").is_dir():
        from jmlr.data.datasets import load_challenge_samples, read_image_rgb
        from jmlr.geometry.crop import landmarks5_from_68

        samples, _ = load_challenge_samples(root)
        pick = np.sort(rng.choice(len(samples), size=min(count, len(samples)), replace=False))
        crops = [crop_faces(read_image_rgb(samples[i].image_path),
                            [landmarks5_from_68(np.asarray(samples[i].landmarks68, np.float64))], size).crops[0]
                 for i in pick]
        return np.stack(crops)
    from jmlr.data.packed import PackedCrops

    pack = PackedCrops(root, size)
    pick = np.sort(rng.choice(len(pack), size=min(count, len(pack)), replace=False))
    return np.stack([pack.sample(int(i))["image"] for i in pick])


class _CropReader:
    """onnxruntime.quantization's CalibrationDataReader over crops, in batches."""

    def __init__(self, crops: np.ndarray, batch: int = 16) -> None:
        self._batches: Iterator[np.ndarray] = (np.ascontiguousarray(crops[i:i + batch])
                                               for i in range(0, len(crops), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._batches, None)
        return None if b is None else {INPUT_NAME: b}


def quantize_int8(fp32: bytes, crops: np.ndarray) -> bytes:
    """Static int8 quantisation (QDQ) of the convolutions of an exported graph,
    calibrated (min/max) on uint8 crops (B, S, S, 3).

    Per-channel int8 weights with ``reduce_range`` (7 bits): without VNNI, x86's u8 x s8
    dot product saturates 16-bit sums with full-range weights.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(crops) == 0:
        raise ValueError("int8 calibration needs at least one crop")
    with tempfile.TemporaryDirectory(prefix="jmlr-int8-") as tmp:
        src, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out), _CropReader(crops), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"], per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return out.read_bytes()


# --------------------------------------------------------------------------- cache


def _read_cached(graph: Path, sidecar: Path, manifest: dict[str, Any]) -> bytes | None:
    if not (graph.is_file() and sidecar.is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    data = graph.read_bytes()
    # A graph from other weights, or a truncated/modified file, is exported again.
    if meta.get("source_sha256") != _weights_sha256(manifest) or meta.get("onnx_sha256") != _sha256_bytes(data):
        return None
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_onnx(model: Any, variant: str = "fp32", cache_dir: str | Path | None = None,
                calibration: str | Path | None = None, calibration_count: int = 128,
                force: bool = False) -> tuple[Path, bool]:
    """The ONNX graph of ``variant`` for a loaded model: from the cache, else exported
    (and for int8 quantised on ``calibration``) and cached.

    Returns (graph path, True when it was made now).

    Raises:
        OnnxCacheError: int8 is not cached and no calibration data was given.
    """
    manifest = model.manifest
    graph, sidecar = cache_paths(manifest, variant, cache_dir)
    if not force and _read_cached(graph, sidecar, manifest) is not None:
        return graph, False
    meta: dict[str, Any] = {"model": manifest["name"], "version": manifest["version"], "variant": variant,
                            "source_sha256": _weights_sha256(manifest), "export_version": EXPORT_VERSION,
                            "opset": OPSET, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if variant == "fp32":
        data = export_onnx(model)
    else:
        if calibration is None:
            raise OnnxCacheError(
                f"no int8 graph of {manifest['name']} in {graph.parent}, and no calibration data to make one: "
                f"run `jmlr export-onnx {manifest['name']} --int8 --calibration PACK_OR_SYNTH_DIR` "
                "(or set JMLR_ONNX_CALIBRATION)")
        fp32_graph, _ = cached_onnx(model, "fp32", cache_dir)
        crops = calibration_crops(calibration, int(model.input_size), calibration_count)
        data = quantize_int8(fp32_graph.read_bytes(), crops)
        meta["calibration"] = {"source": str(calibration), "crops": len(crops),
                               "sha256": _sha256_bytes(crops.tobytes())}
    meta["onnx_sha256"] = _sha256_bytes(data)
    _write_atomic(graph, data)
    _write_atomic(sidecar, (json.dumps(meta, indent=1) + "\n").encode())
    return graph, True

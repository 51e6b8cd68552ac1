"""``jmlr export-onnx NAME [--int8 --calibration PACK_OR_SYNTH_DIR] [--cache-dir DIR]``.

Puts a stored model's ONNX graphs into the cache the ``ort`` / ``ort-int8`` backends read
(`jmlr.inference.onnx_export.cached_onnx`), ahead of time: the fp32 graph always, the
static int8 graph with ``--int8`` (calibrated on aligned crops of ``jmlr pack`` data or a
``jmlr synth`` folder, never the held-out set). A graph already cached for the same
weights is kept unless ``--force``. Prints one JSON object with the paths.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

#: the service's setting for int8 calibration data (`service.settings.Settings.onnx_calibration`)
CALIBRATION_ENV = "JMLR_ONNX_CALIBRATION"


def _model_path(name: str, store: str | None) -> str | Path:
    return Path(store) / name if store else name


def _graph_entry(path: Path, made: bool) -> dict[str, Any]:
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    entry = {"path": str(path), "sidecar": str(meta_path), "made": made, "bytes": path.stat().st_size,
             "sha256": meta.get("onnx_sha256")}
    if "calibration" in meta:
        entry["calibration"] = meta["calibration"]
    return entry


def _check(model: Any, graphs: dict[str, Path], crops: Any) -> dict[str, dict[str, float]]:
    """Each graph against PyTorch on the same crops: vertex and crop-point differences."""
    import numpy as np

    from jmlr.onnxrt import create_session

    v_ref, p_ref, e_ref = model.infer(crops)
    out = {}
    for variant, path in graphs.items():
        v, p, *rest = create_session(path).run(None, {"crops": np.ascontiguousarray(crops)})
        dv = np.linalg.norm(v - v_ref, axis=-1) * 1000.0
        dp = np.linalg.norm(p - p_ref, axis=-1)
        out[variant] = {"crops": len(crops), "vertex_mean_mm": float(dv.mean()), "vertex_max_mm": float(dv.max()),
                        "points_mean_px": float(dp.mean()), "points_max_px": float(dp.max())}
        if e_ref is not None and rest:  # models with an expression head: its weights too
            out[variant]["expression_max"] = float(np.abs(rest[0] - e_ref).max())
    return out


def run_export_onnx(args: argparse.Namespace) -> int:
    from jmlr.store import ModelStoreError, load_model

    from .onnx_export import OnnxCacheError, cached_onnx, calibration_crops, default_cache_dir

    calibration = args.calibration or os.environ.get(CALIBRATION_ENV) or None
    if calibration is not None and not Path(calibration).exists():
        print(f"jmlr export-onnx: error: calibration data {calibration} does not exist")
        return 2
    try:
        model = load_model(_model_path(args.name, args.store), device="cpu")
    except ModelStoreError as exc:
        print(f"jmlr export-onnx: error: {exc}")
        return 2
    if not model.task_spec.pose_by_pnp:
        print(f"jmlr export-onnx: error: {model.name}: task {model.task!r} has no ONNX export (JMLR models only)")
        return 2
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    graphs: dict[str, Path] = {}
    result: dict[str, Any] = {"model": model.name, "version": model.version, "model_path": str(model.path),
                              "cache_dir": str(cache_dir)}
    try:
        path, made = cached_onnx(model, "fp32", cache_dir, force=args.force)
        graphs["fp32"] = path
        result["fp32"] = _graph_entry(path, made)
        if args.int8:
            path, made = cached_onnx(model, "int8", cache_dir, calibration=calibration,
                                     calibration_count=args.calibration_count, force=args.force)
            graphs["int8"] = path
            result["int8"] = _graph_entry(path, made)
    except OnnxCacheError as exc:
        print(f"jmlr export-onnx: error: {exc}")
        return 2
    except (OSError, ValueError) as exc:  # unreadable or empty calibration data
        print(f"jmlr export-onnx: error: {type(exc).__name__}: {exc}")
        return 2
    if args.check:
        import numpy as np

        S = int(model.input_size)
        if calibration is not None:
            crops = calibration_crops(calibration, S, args.check, seed=1)
        else:  # no data: parity on noise still shows a broken graph
            crops = np.random.default_rng(0).integers(0, 256, size=(args.check, S, S, 3), dtype=np.uint8)
        result["check"] = _check(model, graphs, crops)
    print(json.dumps(result, indent=1))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-onnx", help="export a stored model's ONNX graphs (fp32, and int8 with --int8) into the cache",
        description="Writes the graphs the `ort` and `ort-int8` backends load into the ONNX cache "
                    "($JMLR_ONNX_CACHE or ~/.cache/jmlr/onnx unless --cache-dir), checked against the store's "
                    "weights on every load; prints their paths as JSON.")
    p.add_argument("name", help="model name in the store, or a model-store folder")
    p.add_argument("--store", default=None,
                   help="store folder NAME is in (default: a folder path as given, else $JMLR_MODEL_STORE or "
                        "./model_store)")
    p.add_argument("--cache-dir", default=None, help="ONNX cache folder (default $JMLR_ONNX_CACHE or "
                                                     "~/.cache/jmlr/onnx, as the service)")
    p.add_argument("--int8", action="store_true", help="also the static int8 graph (needs --calibration unless "
                                                       "already cached)")
    p.add_argument("--calibration", default=None, metavar="PACK_OR_SYNTH_DIR",
                   help=f"`jmlr pack` folder or `jmlr synth` (challenge-layout) folder to calibrate int8 on; "
                        f"training data, not the held-out set (default ${CALIBRATION_ENV})")
    p.add_argument("--calibration-count", type=int, default=128, help="crops to calibrate on (default 128)")
    p.add_argument("--force", action="store_true", help="export again even when the cache has a valid graph")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="compare each graph with PyTorch on N crops (from the calibration data, else noise) and "
                        "add the differences to the JSON")
    p.set_defaults(func=run_export_onnx)

"""Accuracy and speed of one stored model through each inference backend, in one run.

For ``torch`` (PyTorch), ``ort`` (ONNX Runtime fp32) and ``ort-int8`` (static int8 QDQ
convolutions, `jmlr.inference.onnx_export`):

- accuracy on a held-out challenge-layout folder, as ``jmlr eval --backend B`` scores it
  (`jmlr.eval.evaluate.evaluate`: ground-truth 68 landmarks align the crop, PnP with the
  data's K): WCPA score, rotation and translation MAE, vertex error;
- how far each backend's outputs are from PyTorch's on the same crops (vertices in mm,
  crop points in px);
- the raw network's throughput at batch 1 and 8 (``backend.predict`` on aligned crops
  of the same folder; no decode, crop or PnP), measured in interleaved rounds so that
  drift of the machine hits every backend alike.

The int8 graph comes from the ONNX cache (``jmlr export-onnx NAME --int8 --calibration
DIR``) or is made here from ``--calibration`` (training data: a ``jmlr pack`` folder or a
``jmlr synth`` folder, never the held-out one). Writes a markdown report (default
docs/bench_backends.md) and optionally the raw numbers as JSON.

    python bench/backend_accuracy.py --data data/synth_test --calibration data/pack_v2
    python bench/backend_accuracy.py --data /tmp/tiny_test --limit 16 --seconds 1 --out /tmp/b.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("torch", "ort", "ort-int8")
ACCURACY_KEYS = ("score", "mae_r_deg", "mae_t_mm", "vertex_mean_mm")


def model_path(model: str | None, store: str | None) -> Path:
    from jmlr.paths import default_model_store
    from jmlr.store import default_model_name

    root = Path(store) if store else default_model_store()
    if model and Path(model).is_dir():
        return Path(model)
    return root / (model or default_model_name("cpu", root))


def load(path: Path, backend: str, args: argparse.Namespace) -> Any:
    from jmlr.inference import load_backend
    from jmlr.onnxrt import OrtOptions

    return load_backend(path, backend, "cpu", cache_dir=args.onnx_cache_dir, calibration=args.calibration,
                        ort_options=OrtOptions(threads=args.threads))


def accuracy(path: Path, backend: str, args: argparse.Namespace) -> dict:
    from jmlr.eval.evaluate import evaluate
    from jmlr.onnxrt import OrtOptions

    t0 = time.perf_counter()
    res = evaluate([path], args.data, args.lists, limit=args.limit, batch_size=args.eval_batch_size,
                   num_workers=args.workers, backend=backend,
                   backend_options={"cache_dir": args.onnx_cache_dir, "calibration": args.calibration,
                                    "ort_options": OrtOptions(threads=args.threads)})
    res["wall_s"] = time.perf_counter() - t0
    return res


def outputs_vs_torch(models: dict[str, Any], crops: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean/max distance of each backend's vertices (mm) and crop points (px) from PyTorch's."""
    if "torch" not in models:
        return {}
    v_ref, p_ref = models["torch"].predict(crops)
    out = {}
    for name, m in models.items():
        v, p = m.predict(crops)
        dv = np.linalg.norm(v.astype(np.float64) - v_ref, axis=-1) * 1000.0
        dp = np.linalg.norm(p.astype(np.float64) - p_ref, axis=-1)
        out[name] = {"vertex_mean_mm": float(dv.mean()), "vertex_max_mm": float(dv.max()),
                     "points_mean_px": float(dp.mean()), "points_max_px": float(dp.max())}
    return out


def throughput(models: dict[str, Any], crops: np.ndarray, batches: list[int], seconds: float,
               rounds: int) -> dict[str, dict[int, dict[str, float]]]:
    """Per backend and batch size: ms per ``predict`` call (median, p90 over every call)
    and faces/s (batch / median). Backends and batch sizes take turns, ``rounds`` times,
    each turn about ``seconds / rounds`` long."""
    inputs = {b: np.ascontiguousarray(np.resize(crops, (b, *crops.shape[1:]))) for b in batches}
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in models}
    for m in models.values():  # warm-up: first-call allocations, thread pools
        for b in batches:
            for _ in range(3):
                m.predict(inputs[b])
    turn = seconds / max(rounds, 1)
    for _ in range(max(rounds, 1)):
        for name, m in models.items():
            for b in batches:
                end = time.perf_counter() + turn
                while True:
                    t = time.perf_counter()
                    m.predict(inputs[b])
                    now = time.perf_counter()
                    times[name][b].append((now - t) * 1000.0)
                    if now >= end:
                        break
    out: dict[str, dict[int, dict[str, float]]] = {}
    for name, per in times.items():
        out[name] = {}
        for b, ms in per.items():
            med = float(np.median(ms))
            out[name][b] = {"calls": len(ms), "ms_p50": med, "ms_p90": float(np.percentile(ms, 90)),
                            "faces_per_s": b * 1000.0 / med}
    return out


def _fmt(x: float | None, nd: int = 2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def markdown(report: dict, args: argparse.Namespace) -> str:
    acc, speed, diff = report["accuracy"], report["throughput"], report["vs_torch"]
    names = list(acc) or list(speed)
    ref = acc.get("torch")
    lines = [
        "# Inference backends: accuracy and speed",
        "",
        f"Generated by `python bench/backend_accuracy.py` on {report['date']}.",
        "",
        f"- Machine: {report['machine']}",
        f"- Model: `{report['model']}` ({report['input_size']} px crops, N={report['num_vertices']})",
        f"- Held-out data: `{report['data']}`, {report['count']} images"
        + (f" (`--limit {args.limit}`)" if args.limit else "") + "; aligned on the ground truth's 68 landmarks, "
        "PnP with the data's K (`jmlr eval --backend B`).",
        f"- int8: static QDQ convolutions, fp32 head; calibration: {report['calibration'] or 'from the cache'}.",
        f"- Threads: {report['threads']} (torch intra-op and ONNX Runtime intra-op, spinning off).",
        "",
        "## Accuracy",
        "",
        "| backend | score mm | MAE_r deg | MAE_t mm | vertex mean mm | Δ score vs torch | "
        "vertex Δ vs torch mm (mean / max) | PnP failures |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        r = acc.get(n)
        if r is None:
            continue
        d = diff.get(n, {})
        delta = _fmt(r["score"] - ref["score"], 3) if ref and n != "torch" else "–"
        vd = (f"{d['vertex_mean_mm']:.4f} / {d['vertex_max_mm']:.4f}" if d and n != "torch" else "–")
        lines.append(f"| {n} | {_fmt(r['score'])} | {_fmt(r['mae_r_deg'])} | {_fmt(r['mae_t_mm'])} | "
                     f"{_fmt(r['vertex_mean_mm'])} | {delta} | {vd} | {r['pnp_failures']} |")
    batches = sorted({b for per in speed.values() for b in per})
    head = " | ".join(f"batch {b}: ms/batch (p50 / p90) | batch {b}: faces/s" for b in batches)
    lines += [
        "",
        "## Raw network throughput (same run)",
        "",
        f"`backend.predict` on aligned uint8 crops of the data (no decode, crop or PnP); {args.rounds} interleaved "
        f"rounds, about {args.seconds:g} s per backend and batch size in all; faces/s = batch / median call time.",
        "",
        f"| backend | {head} | speed-up vs torch (batch {batches[-1]}) |" if batches else "| backend |",
        "|---|" + "---:|---:|" * len(batches) + "---:|",
    ]
    for n in speed:
        cells = " | ".join(f"{speed[n][b]['ms_p50']:.2f} / {speed[n][b]['ms_p90']:.2f} | "
                           f"{speed[n][b]['faces_per_s']:.1f}" for b in batches)
        t = speed.get("torch", {}).get(batches[-1]) if batches else None
        up = f"{speed[n][batches[-1]]['faces_per_s'] / t['faces_per_s']:.2f}×" if t else "–"
        lines.append(f"| {n} | {cells} | {up} |")
    lines += [
        "",
        "Score and errors are means over the images (docs/eval_json.md). Δ vs torch on the same crops is the "
        "backend's own numerical change, apart from the data's difficulty; a score change well under the "
        "spread between models (docs/accuracy.md) leaves the model's ranking as it is.",
    ]
    return "\n".join(lines) + "\n"


def machine_info(threads: int) -> dict:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                       f"onnxruntime {onnxruntime.__version__}",
            "threads": threads or os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model name in the store or a model folder (default: the store's CPU default)")
    p.add_argument("--model-store", help="store folder (default $JMLR_MODEL_STORE or ./model_store)")
    p.add_argument("--data", default=str(REPO_ROOT / "data" / "synth_test"), help="held-out challenge-layout folder")
    p.add_argument("--list", action="append", dest="lists", metavar="CSV", help="list CSV(s) (default: all)")
    p.add_argument("--limit", type=int, help="only the first N images (smoke runs)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--calibration", help="training data to make the int8 graph from when it is not cached")
    p.add_argument("--onnx-cache-dir", help="ONNX cache (default $JMLR_ONNX_CACHE or ~/.cache/jmlr/onnx)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads, torch and ORT (0 = one per core)")
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="image-loading processes of the evaluation")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes timed (default 1 8)")
    p.add_argument("--seconds", type=float, default=20.0, help="timing per backend and batch size (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    p.add_argument("--skip-accuracy", action="store_true", help="throughput and output differences only")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench_backends.md")
    p.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = p.parse_args(argv)

    import torch

    from jmlr.inference.onnx_export import OnnxCacheError, calibration_crops

    if args.threads:
        torch.set_num_threads(args.threads)
    path = model_path(args.model, args.model_store)
    try:
        models = {b: load(path, b, args) for b in args.backends}  # int8 is made now if it has to be
    except OnnxCacheError as exc:
        print(f"backend_accuracy: {exc}", file=sys.stderr)
        return 2
    first = next(iter(models.values()))
    S = int(first.input_size)
    info = machine_info(args.threads)
    report: dict[str, Any] = {**info, "model": f"{first.name} v{first.version}", "model_path": str(path),
                              "input_size": S, "num_vertices": int(first.topology.num_vertices),
                              "data": str(args.data), "calibration": args.calibration, "accuracy": {},
                              "count": 0}
    report["onnx"] = {n: str(m.onnx_path) for n, m in models.items() if hasattr(m, "onnx_path")}

    crops = calibration_crops(args.data, S, count=max(8, *args.batches), seed=0)
    print(f"timing {list(models)} at batch {args.batches} on {len(crops)} crops of {args.data}", flush=True)
    report["vs_torch"] = outputs_vs_torch(models, crops)
    report["throughput"] = throughput(models, crops, args.batches, args.seconds, args.rounds)
    for n, per in report["throughput"].items():
        print(f"  {n:8s} " + "  ".join(f"b{b}: {v['ms_p50']:.2f} ms, {v['faces_per_s']:.1f} faces/s"
                                       for b, v in per.items()), flush=True)
    del models

    if not args.skip_accuracy:
        for b in args.backends:
            res = accuracy(path, b, args)
            report["accuracy"][b] = res
            report["count"] = res["count"]
            print(f"  {b:8s} " + ", ".join(f"{k} {res[k]:.3f}" for k in ACCURACY_KEYS)
                  + f" ({res['count']} images, {res['wall_s']:.0f} s)", flush=True)

    text = markdown(report, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

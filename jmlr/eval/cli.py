"""``jmlr eval --model DIR --data DIR [--list CSV] [--flip-tta] [--ensemble DIR ...] [--backend B] --json OUT``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="score stored model(s) on challenge-layout data (WCPA score, pose, vertices)",
        description="Align with the data's 68 landmarks, predict, PnP with the data's K, and report "
                    "the challenge score and pose/vertex errors (keys: docs/eval_json.md).")
    p.add_argument("--model", help="model-store folder or name (optional with --oracle)")
    p.add_argument("--data", required=True, help="challenge-layout folder")
    p.add_argument("--list", action="append", dest="lists", metavar="CSV",
                   help="list CSV (repeatable); default every CSV in DATA/list")
    p.add_argument("--flip-tta", action="store_true", help="mirror test-time augmentation")
    p.add_argument("--pnp-stride", type=int, default=None, metavar="K",
                   help="PnP on every K-th point (default: the service's, jmlr.inference.poses.PNP_STRIDE)")
    p.add_argument("--ensemble", nargs="+", default=[], metavar="MODEL_DIR",
                   help="more models averaged with --model (same topology)")
    p.add_argument("--limit", type=int, help="only the first N samples")
    p.add_argument("--oracle", action="store_true", help="use the ground truth as prediction (pipeline test)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2, help="image-loading worker processes")
    p.add_argument("--backend", default="torch",
                   help="torch (default), ort, ort-int8 (ONNX Runtime; JMLR models only) or auto")
    p.add_argument("--onnx-cache-dir", default=None, help="ONNX graph cache (default $JMLR_ONNX_CACHE or "
                                                          "~/.cache/jmlr/onnx)")
    p.add_argument("--calibration", default=None, metavar="PACK_OR_SYNTH_DIR",
                   help="ort-int8 without a cached graph: training data to calibrate it on")
    p.add_argument("--json", dest="json_out", help="write the result JSON here (default: stdout only)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from jmlr.inference.onnx_export import OnnxCacheError
    from jmlr.inference.poses import PNP_STRIDE

    from .evaluate import EvalDataError, evaluate

    models = ([args.model] if args.model else []) + list(args.ensemble)
    try:
        res = evaluate(models, args.data, args.lists, flip_tta=args.flip_tta, limit=args.limit,
                       oracle=args.oracle, batch_size=args.batch_size, device=args.device,
                       num_workers=args.workers, progress=True, backend=args.backend,
                       backend_options={"cache_dir": args.onnx_cache_dir, "calibration": args.calibration},
                       pnp_stride=PNP_STRIDE if args.pnp_stride is None else args.pnp_stride)
    except (EvalDataError, ValueError, OnnxCacheError) as exc:
        print(f"jmlr eval: error: {exc}")
        return 2
    text = json.dumps(res, indent=1)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0

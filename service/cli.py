"""``jmlr serve``: run the HTTP service with uvicorn (one process; batching does the rest)."""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the reconstruction service. Every option also reads from JMLR_* env vars "
        "(see service/settings.py); command-line values win.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind; anything but loopback needs JMLR_API_KEYS (or JMLR_ALLOW_UNAUTHENTICATED=true)",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", dest="model_name", help="model name in the store (default: index.json)")
    p.add_argument("--model-store", help="model store folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-dir", help="where meshes and devices are kept (sqlite)")
    p.add_argument("--detector", help="'centerface', 'none' or an SCRFD .onnx path")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-queue-delay-ms", type=float)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .exposure import exposure_problem
    from .settings import Settings

    overrides = {
        k: getattr(args, k)
        for k in ("model_name", "model_store", "device", "data_dir", "detector", "max_batch_size", "max_queue_delay_ms")
        if getattr(args, k, None) is not None
    }
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(**overrides)
    problem = exposure_problem(args.host, settings)
    if problem:
        print(f"jmlr serve: {problem}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0

"""``jmlr pack``: render a packed training set (`jmlr.data.packed`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..cli import positive_int

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pack",
        help="render a big synthetic training set as memory-mapped arrays (fast to train from)",
        description="Render synthetic face crops in chunks of .npy arrays (uint8 images with a margin for "
                    "re-jittering, vertices, 2D points, pose, intrinsics, identity/expression weights). "
                    "Each chunk has its own recorded seed; an interrupted run resumes; the same arguments "
                    "give the same bytes whatever --workers is. Read with `jmlr train --packs DIR`.",
    )
    p.add_argument("--out", required=True, type=Path, help="pack folder")
    p.add_argument("--images", type=positive_int, required=True, help="total number of crops (one new person each)")
    p.add_argument("--size", type=int, default=160, help="stored crop side S0 in px (train at S <= S0)")
    p.add_argument("--zoom", type=float, default=0.8,
                   help="scale of the aligned face in the stored crop (< 1 leaves a margin for jitter)")
    p.add_argument("--chunk-size", type=positive_int, default=1000, help="crops per chunk (the unit of resume)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=positive_int, default=16, help="crops rendered together")
    p.add_argument("--no-effects", action="store_true", help="no blur/noise/colour cast/JPEG")
    p.add_argument("--workers", type=int, default=2, help="processes (rasterization is single-threaded)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--facemodel", type=Path, default=None,
                   help="ICT-FaceKit npz (default $JMLR_FACEMODEL or ../shared)")
    p.add_argument("--topology", type=Path, default=None, help="topology npz (default the packaged one)")
    p.add_argument("--heads", default=None, metavar="SPEC",
                   help="head elements (jmlr.synth.heads.HeadConfig.parse: 'legacy', 'hair=0,makeup=0.6', JSON; "
                        "default $JMLR_SYNTH_HEADS or all on); recorded in pack.json")
    p.add_argument("--world", default=None, metavar="SPEC",
                   help="world and camera elements (jmlr.synth.world.WorldConfig.parse, same forms; default "
                        "$JMLR_SYNTH_WORLD or all on); recorded in pack.json")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jmlr.synth.heads import HEADS_ENV, HeadConfig
    from jmlr.synth.world import WORLD_ENV, WorldConfig

    from .packed import PackSpec, generate_pack, read_pack_info

    # The worker processes read the scene settings from the environment they inherit.
    for spec_str, env, config in ((args.heads, HEADS_ENV, HeadConfig), (args.world, WORLD_ENV, WorldConfig)):
        if spec_str is not None:
            try:
                config.parse(spec_str)
            except (ValueError, TypeError) as exc:
                print(f"jmlr pack: bad {env} spec {spec_str!r}: {exc}", file=sys.stderr)
                return 2
            os.environ[env] = spec_str
    spec = PackSpec(images=args.images, size=args.size, zoom=args.zoom, chunk_size=args.chunk_size,
                    seed=args.seed, batch=args.batch, effects=not args.no_effects)
    t0 = time.perf_counter()
    generate_pack(args.out, spec, args.facemodel, args.topology, workers=args.workers, threads=args.threads,
                  progress=not args.no_progress)
    info = read_pack_info(args.out)
    print(json.dumps({"out": str(args.out), "chunks": len(info["complete"]), "images": spec.images,
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0

"""``jmlr synth``: write a synthetic dataset in the WCPA challenge layout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from ..cli import positive_int

__all__ = ["register", "run", "preview_from_layout"]

# `jmlr --help` imports this module to register the subcommand: the modules a command
# needs (torch, the face model, the generator, the layout reader) are imported when it runs.


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="render a synthetic dataset in the WCPA challenge layout",
        description="Render synthetic captures of the ICT-FaceKit head (image/, info/, 68landmarks/, "
                    "resources/, list/). Same seed and counts -> same bytes.",
    )
    p.add_argument("--out", required=True, type=Path, help="output root folder")
    p.add_argument("--subjects", type=positive_int, default=10, help="number of people")
    p.add_argument("--per-subject", type=positive_int, default=33,
                   help="images per person (cycles the 33 facial actions)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=positive_int, default=8, help="images rendered together")
    p.add_argument("--first-subject", type=int, default=0, help="index of the first subject (to shard runs)")
    p.add_argument("--facemodel", type=Path, default=None,
                   help="ICT-FaceKit npz (default $JMLR_FACEMODEL or ../shared)")
    p.add_argument("--topology", type=Path, default=None, help="topology npz (default the packaged one)")
    p.add_argument("--device", default="cpu",
                   help="torch device of the geometry (and of the torch renderer), e.g. cuda")
    p.add_argument("--renderer", choices=("auto", "gl", "torch"), default=None,
                   help="gl: OpenGL on a headless EGL context; torch: the PyTorch reference; auto (default, "
                        "or $JMLR_SYNTH_RENDERER): gl when a context can be made. The output depends on it.")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--preview", type=Path, default=None, help="also write a 4x4 contact sheet PNG here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def preview_from_layout(root: Path, out_png: Path, topology=None, count: int = 16, tile: int = 256) -> Path:
    """Contact sheet of the first ``count`` samples of ``root`` read back through the
    reader; every other tile has the projected topology wireframe and landmarks."""
    from jmlr.geometry.camera import project_points

    from .layout import iter_samples, read_intrinsics
    from .preview import contact_sheet, draw_wireframe, face_tile

    K = read_intrinsics(root)
    samples = list(iter_samples(root))
    # Spread the picks over the subjects and actions.
    picks = [samples[i] for i in np.linspace(0, len(samples) - 1, min(count, len(samples))).round().astype(int)]
    tiles = []
    for i, s in enumerate(picks):
        img = s.load_image()
        pts = project_points(s.verts.astype(np.float64), s.R_t.astype(np.float64), K)
        t, M = face_tile(img, pts, tile)
        if i % 2 == 1 and topology is not None:
            p = pts @ M[:, :2].T + M[:, 2]
            lm = s.landmarks68 @ M[:, :2].T + M[:, 2] if s.landmarks68 is not None else None
            t = draw_wireframe(t, p, topology.triangles, lm)
        tiles.append(t)
    sheet = contact_sheet(tiles)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out_png


def run(args: argparse.Namespace) -> int:
    import torch

    from jmlr.facemodel import FaceModel, Topology

    from .dataset import synthesize_dataset
    from .scene import SyntheticFaceGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    facemodel = FaceModel.load(args.facemodel)
    topology = Topology.load(args.topology)
    generator = SyntheticFaceGenerator(facemodel, topology, device=args.device, renderer=args.renderer)
    t0 = time.perf_counter()
    rows = synthesize_dataset(args.out, generator, args.subjects, args.per_subject, seed=args.seed,
                              batch=args.batch, progress=not args.no_progress, first_subject=args.first_subject)
    dt = time.perf_counter() - t0
    print(f"wrote {len(rows)} images to {args.out} in {dt:.1f} s ({len(rows) / max(dt, 1e-9):.2f} images/s, "
          f"{generator.renderer_name} renderer)")
    if args.preview:
        print(f"preview: {preview_from_layout(args.out, args.preview, topology)}")
    return 0

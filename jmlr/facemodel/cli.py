"""``jmlr facemodel build | topology | blendshapes | procedural``: make the face model, topology and
blendshape-basis files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jmlr.facemodel import build as build_module

BUILD_HELP = build_module.__doc__


def _build(args: argparse.Namespace) -> int:
    from jmlr.facemodel.build import build_facemodel

    try:
        out = build_facemodel(args.ict_dir, args.out, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as exc:
        print(f"jmlr facemodel build: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} (ICT-FaceKit, MIT, Copyright (c) 2020 USC Institute for Creative Technologies)")
    return 0


def _load_facemodel(path, command: str):
    """The face model, or None after telling the user how to get one."""
    from jmlr.facemodel.model import FaceModel, FaceModelNotFound

    try:
        return FaceModel.load(path)
    except FaceModelNotFound as exc:
        print(f"jmlr facemodel {command}: {exc}", file=sys.stderr)
        return None


def _topology(args: argparse.Namespace) -> int:
    from jmlr.facemodel.topology import boundary_loops, build_topology, default_topology_path

    model = _load_facemodel(args.facemodel, "topology")
    if model is None:
        return 1
    topo = build_topology(model, num_vertices=args.num_vertices)
    out = topo.save(args.out or default_topology_path())
    loops = boundary_loops(topo.triangles)
    print(
        f"wrote {out}: {topo.num_vertices} vertices, {topo.num_triangles} triangles, "
        f"boundary loops {[len(loop) for loop in loops]}"
    )
    if args.obj:
        print(f"wrote {topo.to_obj(args.obj)}")
    return 0


def _blendshapes(args: argparse.Namespace) -> int:
    from jmlr.facemodel.blendshapes import BlendshapeBasis, default_blendshape_basis_path
    from jmlr.facemodel.topology import Topology

    model = _load_facemodel(args.facemodel, "blendshapes")
    if model is None:
        return 1
    basis = BlendshapeBasis.from_facemodel(model, Topology.load(args.topology), args.identity_modes)
    out = basis.save(args.out or default_blendshape_basis_path())
    print(
        f"wrote {out}: {basis.num_vertices} vertices, {len(basis.identity)} identity modes, "
        f"{len(basis.expression)} expressions ({out.stat().st_size / 1e3:.0f} kB; derived from ICT-FaceKit, MIT)"
    )
    return 0


def _procedural(args: argparse.Namespace) -> int:
    from jmlr.facemodel.procedural import make_procedural_head

    print(f"wrote {make_procedural_head(args.out)}")
    return 0


def register(subparsers) -> None:
    """Add ``facemodel`` and its subcommands to the ``jmlr`` parser."""
    p = subparsers.add_parser("facemodel", help="build the face model npz and the face topology")
    sub = p.add_subparsers(dest="facemodel_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    b = sub.add_parser(
        "build",
        help="convert an ICT-FaceKit clone into the face model npz",
        description=BUILD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("ict_dir", metavar="ICT_FACEKIT_DIR", type=Path, help="clone of github.com/ICT-VGL/ICT-FaceKit")
    b.add_argument("--out", type=Path, required=True, help="npz to write (e.g. ../shared/facemodel/ict_facekit.npz)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_build)

    t = sub.add_parser(
        "topology",
        help="build the ARKit-like face topology (default: the committed file)",
        description="Build the symmetric ~1,220-vertex face topology (eyes and mouth open) over "
        "the model's narrow face. Deterministic: rebuilding from the same model gives the same file.",
    )
    t.add_argument("--out", type=Path, default=None,
                   help="npz to write (default: jmlr/facemodel/data/arkit_like_topology.npz)")
    t.add_argument("--facemodel", type=Path, default=None,
                   help="face model npz (default: $JMLR_FACEMODEL or ../shared)")
    t.add_argument("--num-vertices", type=int, default=1220, help="topology size (default 1220)")
    t.add_argument("--obj", type=Path, default=None, help="also write the mean shape as an OBJ")
    t.set_defaults(func=_topology)

    s = sub.add_parser(
        "blendshapes",
        help="write the blendshape-fitting basis of a topology (default: the committed file)",
        description="Restrict the face model's neutral, identity and expression bases to a topology's "
        "vertices, so that the service can fit ARKit blendshape weights without the face model.",
    )
    s.add_argument("--out", type=Path, default=None,
                   help="npz to write (default: jmlr/facemodel/data/arkit_like_blendshapes.npz)")
    s.add_argument("--facemodel", type=Path, default=None,
                   help="face model npz (default: $JMLR_FACEMODEL or ../shared)")
    s.add_argument("--topology", type=Path, default=None, help="topology npz (default: the packaged one)")
    s.add_argument("--identity-modes", type=int, default=None, help="keep the first K identity modes (default: all)")
    s.set_defaults(func=_blendshapes)

    r = sub.add_parser("procedural", help="write a tiny procedural head npz (for tests and demos)")
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(func=_procedural)

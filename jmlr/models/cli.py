"""``jmlr model-info``: parameters and FLOPs of the registered architectures."""

from __future__ import annotations

import argparse

FALLBACK_NUM_VERTICES = 1220  # the WCPA / ARKitFace topology


def default_num_vertices() -> int:
    """Vertex count of the default topology, or 1220 (ARKit) when it is not built yet."""
    from pathlib import Path

    import numpy as np

    from jmlr.paths import PACKAGE_ROOT

    path = Path(PACKAGE_ROOT) / "facemodel" / "data" / "arkit_like_topology.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return int(z["mean_shape"].shape[0])
    return FALLBACK_NUM_VERTICES


def _info(name: str, num_vertices: int, input_size: int | None) -> dict:
    from . import count_flops, count_parameters, create_model

    net = create_model(name, num_vertices, input_size)
    size = net.input_size
    return {
        "name": net.config["name"],
        "input": size,
        "params": count_parameters(net),
        "backbone_params": count_parameters(net) - count_parameters(net.fc),
        "flops": count_flops(net, size),
    }


def run(args: argparse.Namespace) -> int:
    from .registry import list_models

    n = args.num_vertices or default_num_vertices()
    if args.all:
        names = list_models()
    elif args.name:
        names = [args.name]
    else:
        print("give a model NAME or --all; registered: " + ", ".join(list_models()))
        return 2
    header = f"{'model':<18} {'input':>5} {'params':>12} {'backbone':>12} {'GFLOPs':>8} {'GMACs':>8}"
    print(f"N = {n} vertices (fc outputs {5 * n})")
    print(header)
    print("-" * len(header))
    for name in names:
        r = _info(name, n, args.input_size)
        print(f"{r['name']:<18} {r['input']:>5} {r['params']:>12,} {r['backbone_params']:>12,} "
              f"{r['flops'] / 1e9:>8.3f} {r['flops'] / 2e9:>8.3f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "model-info", help="parameters and FLOPs of a registered network",
        description="Print parameters and FLOPs (multiply-add = 2 FLOPs) at the input size.")
    p.add_argument("name", nargs="?", help="registry name or YAML path")
    p.add_argument("--all", action="store_true", help="a table of every registered model")
    p.add_argument("--num-vertices", type=int, default=None,
                   help="N (default: the default topology's vertex count, else 1220)")
    p.add_argument("--input-size", type=int, default=None, help="crop size S (default: config's)")
    p.set_defaults(func=run)

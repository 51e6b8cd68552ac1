"""``jmlr export`` and ``jmlr import-insightface``."""

from __future__ import annotations

import argparse

_DTYPES = {"fp16": "float16", "fp32": "float32"}


def _dtype(name: str):
    import torch

    return getattr(torch, _DTYPES[name])


def _metrics(args: argparse.Namespace) -> dict | None:
    """``--metrics``: a JSON file of evaluation results (e.g. `jmlr eval --json`)."""
    if not args.metrics:
        return None
    import json
    from pathlib import Path

    return json.loads(Path(args.metrics).read_text(encoding="utf-8"))


def _card_options(p: argparse.ArgumentParser, description_help: str) -> None:
    p.add_argument("--metrics", default=None,
                   help="JSON of evaluation results (e.g. from `jmlr eval --json`) for the manifest")
    p.add_argument("--description", default=None, help=description_help)
    p.add_argument("--set-default", action="store_true",
                   help="make it the store's default for cpu and cuda (index.json)")


def _finish(args: argparse.Namespace, out) -> int:
    from .export import set_default_model

    if args.set_default:
        set_default_model(args.name, store_dir=args.store)
    print(out)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .export import export_checkpoint, make_random_model

    if args.random:
        out = make_random_model(
            arch=args.arch, input_size=args.input_size, name=args.name, store_dir=args.store,
            topology_path=args.topology, seed=args.seed, dtype=_dtype(args.dtype),
            overwrite=args.overwrite)
    elif args.ckpt:
        out = export_checkpoint(args.ckpt, args.name, args.store, version=args.version,
                                dtype=_dtype(args.dtype), overwrite=args.overwrite,
                                metrics=_metrics(args), description=args.description)
    else:
        print("give a checkpoint (CKPT_DIR or last.safetensors) or --random")
        return 2
    return _finish(args, out)


def run_import(args: argparse.Namespace) -> int:
    from .insightface import import_insightface

    out = import_insightface(
        args.ckpt, args.topology, args.flip_index, args.name, store_dir=args.store, arch=args.arch,
        landmarks68=args.landmarks68, input_size=args.input_size, version=args.version,
        dtype=_dtype(args.dtype), overwrite=args.overwrite)
    if args.landmarks68 is None:
        print("note: no --landmarks68: the model cannot give 68 landmarks")
    print(out)
    return 0


def run_average(args: argparse.Namespace) -> int:
    from .average import average_models

    out = average_models(args.models, args.name, args.store, weights=args.weights, version=args.version,
                         dtype=_dtype(args.dtype), description=args.description,
                         metrics=_metrics(args), overwrite=args.overwrite)
    return _finish(args, out)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="model folder name in the store")
    p.add_argument("--store", default=None, help="store folder (default $JMLR_MODEL_STORE or ./model_store)")
    p.add_argument("--version", default="1")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="fp16", help="stored weight precision")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a model-store folder from a training checkpoint (or a random init)",
        description="CKPT is a training folder (last.safetensors + last.json) or one of those files.")
    p.add_argument("ckpt", nargs="?", help="checkpoint folder or file")
    _common(p)
    p.add_argument("--random", action="store_true",
                   help="untrained placeholder: random init (fixed --seed) of --arch")
    p.add_argument("--arch", default="jmlr_resnet18d", help="with --random: registry name")
    p.add_argument("--input-size", type=int, default=None, help="with --random: crop size")
    p.add_argument("--topology", default=None, help="with --random: topology npz (default: the packaged one)")
    p.add_argument("--seed", type=int, default=0)
    _card_options(p, "one-paragraph model card for the manifest")
    p.set_defaults(func=run_export)  # bad input: one line and exit 2 (jmlr.cli.main)

    a = subparsers.add_parser(
        "average", help="average the weights of stored models (a model soup of training-cycle endpoints)",
        description="The models must share architecture, crop size and topology, and should come "
                    "from one training run (successive cycles); evaluate the result before shipping it.")
    a.add_argument("models", nargs="+", help="model folders (or names in the default store)")
    _common(a)
    a.add_argument("--weights", type=float, nargs="+", default=None,
                   help="one non-negative weight per model (default: uniform)")
    _card_options(a, "model card for the manifest (default: names the sources)")
    a.set_defaults(func=run_average)  # bad input: one line and exit 2 (jmlr.cli.main)

    q = subparsers.add_parser(
        "import-insightface", help="convert a checkpoint of the paper's reference code",
        description="Loads the .pth with torch.load(weights_only=True) (no arbitrary unpickling).")
    q.add_argument("ckpt", help="reference .pth (OneNetwork / timm resnet34d / resnet_jmlr)")
    q.add_argument("--topology", required=True, help="mesh OBJ (e.g. the challenge's example.obj), metres")
    q.add_argument("--flip-index", required=True, help=".npy or text file of N mirror indices")
    q.add_argument("--landmarks68", default=None, help=".npy or text file of 68 vertex indices")
    q.add_argument("--arch", default=None, help="resnet34d | searched (default: guessed from the weights)")
    q.add_argument("--input-size", type=int, default=256)
    _common(q)
    q.set_defaults(func=run_import)  # bad input: one line and exit 2 (jmlr.cli.main)

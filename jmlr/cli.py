"""The ``jmlr`` command line.

Each subcommand lives in its own module and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (called with the parsed args, returns an exit code).
Modules are listed here by name so that one broken subcommand never hides the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, summary) — the module's register() adds the parser(s).
COMMAND_MODULES: list[str] = [
    "jmlr.facemodel.cli",   # facemodel build | topology
    "jmlr.synth.cli",       # synth
    "jmlr.data.cli",        # pack
    "jmlr.models.cli",      # model-info
    "jmlr.train.cli",       # train
    "jmlr.eval.cli",        # eval
    "jmlr.store.cli",       # export | average | import-insightface
    "jmlr.inference.cli",   # export-onnx
    "service.cli",          # serve
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jmlr",
        description="Perspective 3D face reconstruction: data, training, evaluation, serving.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

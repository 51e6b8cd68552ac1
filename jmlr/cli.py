"""The ``jmlr`` command line.

Each subcommand lives in its own module and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (called with the parsed args, returns an exit code).
Modules are listed here by name so that one broken subcommand never hides the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
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
    "service.offline",      # reconstruct
    "service.offline_video",  # track
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


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a count of images, people, workers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _is_bad_input(exc: BaseException) -> bool:
    """Whether ``exc`` is what a command's bad input raises (a missing file or model folder, an
    unknown config name, unreadable JSON) rather than a bug, whose traceback is kept."""
    from .models.registry import UnknownNameError
    from .store.manifest import ModelStoreError

    return isinstance(exc, (OSError, json.JSONDecodeError, ModelStoreError, UnknownNameError))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if not _is_bad_input(exc):
            raise
        # One line, as argparse reports a bad option, and its exit code.
        print(f"jmlr {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

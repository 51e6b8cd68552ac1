"""``jmlr train --config FILE [overrides]``; multi-GPU: ``torchrun --nproc_per_node G -m jmlr.cli train ...``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train the JMLR network or a baseline from a YAML config",
        description="Train from a plain YAML config (jmlr/configs/train/*.yaml or a path). "
                    "Launch with torchrun for multi-GPU / multi-node (DDP).")
    p.add_argument("--config", required=True, help="YAML path or a name in jmlr/configs/train/")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-minutes", type=float, help="time budget; stops at whichever comes first")
    p.add_argument("--out", help="run folder (log.csv, config.yaml, ckpt/)")
    p.add_argument("--batch-size", type=int, help="images per process per step")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", help="challenge-layout folder (sets data.source=disk)")
    p.add_argument("--packs", nargs="+", metavar="DIR",
                   help="pack folders made by `jmlr pack` (sets data.source=packed)")
    p.add_argument("--resume", help="checkpoint folder, or 'auto' for <out>/ckpt if present")
    p.add_argument("--init", metavar="MODEL_DIR",
                   help="start from a model-store model (e.g. model_store/NAME): continues its training")
    p.add_argument("--export", metavar="NAME", help="export to the model store under NAME at the end")
    p.add_argument("--store-dir", help="model store (default $JMLR_MODEL_STORE or ./model_store)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, dotted, YAML value (e.g. optim.lr=0.05)")
    p.add_argument("--cycles", metavar="MINUTES,...",
                   help="warm-restart cycles of these lengths, each resuming the previous one's checkpoint "
                        "(optimizer moments kept) with the lr decaying from its peak to 0 again; cycle k "
                        "writes <out>_c<k> and, with --export NAME, exports NAME_c<k> (the endpoints to "
                        "average with `jmlr average`). The first resumes --resume or starts from --init")
    p.set_defaults(func=main)


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The CLI flags as a config overlay (``--set`` applied last)."""
    from .trainer import set_dotted

    o: dict = {}
    for flag, key in (("max_steps", "max_steps"), ("max_minutes", "max_minutes"), ("out", "out"),
                      ("batch_size", "batch_size"), ("seed", "seed"), ("device", "device"),
                      ("resume", "resume"), ("export", "export"), ("store_dir", "store_dir"), ("init", "init")):
        v = getattr(args, flag, None)
        if v is not None:
            o[key] = v
    if getattr(args, "data_root", None):
        # List files belong to a root: a new root drops the config's lists (default: all of its own).
        o["data"] = {"source": "disk", "root": args.data_root, "lists": None}
    if getattr(args, "packs", None):
        o.setdefault("data", {}).update({"source": "packed", "packs": list(args.packs)})
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        set_dotted(o, k.strip(), v)
    return o


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (as logging's lastResort)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _log_run_to_stderr() -> None:
    """The run's own messages (held-out looks, warnings) on stderr, without other
    libraries' INFO; once per process."""
    train_log = logging.getLogger("jmlr.train")
    if any(getattr(h, "_jmlr_train_cli", False) for h in train_log.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    handler._jmlr_train_cli = True  # type: ignore[attr-defined]
    train_log.addHandler(handler)
    train_log.setLevel(logging.INFO)


def parse_cycles(text: str) -> list[float]:
    """``"35,35,25"`` -> [35.0, 35.0, 25.0] (minutes, each > 0)."""
    try:
        minutes = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--cycles expects minutes separated by commas (e.g. 35,35,25), got {text!r}") from None
    if not minutes or any(not m > 0 for m in minutes):
        raise SystemExit(f"--cycles expects positive minutes, got {text!r}")
    return minutes


def cycle_configs(cfg: dict, minutes: list[float]) -> list[dict]:
    """One config per warm-restart cycle of ``cfg``: cycle k (1-based) trains ``minutes[k-1]``
    into ``<out>_c<k>``, resuming cycle k-1's checkpoint (the first: ``cfg``'s own
    ``resume``/``init``), and exports ``<export>_c<k>`` when ``cfg`` exports.

    Why cycles: each restart's decay to lr 0 ends near a different point of one basin, and
    the weight average of those endpoints beats each of them (docs/training.md)."""
    from pathlib import Path

    if cfg.get("resume") == "auto":
        raise SystemExit("--cycles needs an explicit --resume checkpoint (or --init), not 'auto'")
    out = str(cfg["out"]).rstrip("/")
    runs: list[dict] = []
    for k, m in enumerate(minutes, 1):
        c = dict(cfg, out=f"{out}_c{k}", max_minutes=m)
        if k > 1:
            c["resume"] = str(Path(runs[-1]["out"]) / "ckpt")
        if cfg.get("export"):
            c["export"] = f"{cfg['export']}_c{k}"
        runs.append(c)
    return runs


def main(args: argparse.Namespace) -> int:
    from .trainer import load_train_config, train

    _log_run_to_stderr()
    cfg = load_train_config(args.config, overrides_from_args(args))
    configs = cycle_configs(cfg, parse_cycles(args.cycles)) if getattr(args, "cycles", None) else [cfg]
    for k, c in enumerate(configs, 1):
        if len(configs) > 1:
            logging.getLogger("jmlr.train").info("cycle %d of %d: %g min into %s", k, len(configs),
                                                 c["max_minutes"], c["out"])
        summary = train(c)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(summary, indent=1))
    return 0

"""Held-out evaluation during a training run: is the network learning what we score?

Training-batch losses say little about the held-out metrics (augmented crops, a mix of
data sources, no PnP). With ``heldout: {data: DIR, every_minutes: M, limit: N}`` in a
training config, the run scores its current weights every M minutes of training, and
once more at the end, on the first N samples of a challenge-layout folder
(`jmlr.eval.evaluate.evaluate`, the numbers of `jmlr eval`), and appends them to
``<out>/heldout.csv``. A subset keeps each look at a few seconds; the final, full
evaluation is still `jmlr eval` on the exported model.
"""

from __future__ import annotations

import copy
import csv
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger("jmlr.train")

__all__ = ["HeldOutMonitor", "HELDOUT_COLUMNS"]

HELDOUT_COLUMNS = ("step", "images_seen_total", "elapsed_s", "count", "score", "vertex_mean_mm", "mae_r_deg",
                   "mae_t_mm", "size_error_pct", "eval_s")


class HeldOutMonitor:
    """Scores a training network on held-out samples every ``every_minutes``.

    Args:
        spec: the config's ``heldout`` dict: ``data`` (challenge-layout folder, required),
            ``every_minutes`` (default 30), ``limit`` (samples, default 330; 0 = all),
            ``batch_size`` (default 32).
        out_csv: the log to append to.
        export: writes a network into a model-store folder and returns it (the run's
            export with its topology and config), called on a copy of the network.
    """

    def __init__(self, spec: dict, out_csv: Path, export: Callable[[torch.nn.Module, Path], Path]) -> None:
        unknown = set(spec) - {"data", "every_minutes", "limit", "batch_size"}
        if unknown:
            raise ValueError(f"heldout: unknown keys {sorted(unknown)} (data, every_minutes, limit, batch_size)")
        if not spec.get("data"):
            raise ValueError("heldout: 'data' (a challenge-layout folder, e.g. data/synth_test) is required")
        self.data = Path(spec["data"])
        self.every_s = 60.0 * float(spec.get("every_minutes", 30))
        self.limit = int(spec.get("limit", 330)) or None
        self.batch_size = int(spec.get("batch_size", 32))
        if self.every_s <= 0:
            raise ValueError("heldout: every_minutes must be > 0")
        self.out_csv = out_csv
        self.export = export
        self.enabled = (self.data / "list").is_dir()
        if not self.enabled:
            log.warning("heldout: %s is not a challenge-layout folder (no list/): no held-out evaluation "
                        "during this run (make it with `jmlr synth`, see docs/accuracy.md)", self.data)
        self._next = time.perf_counter() + self.every_s
        self.last_step: int | None = None

    def due(self) -> bool:
        return self.enabled and time.perf_counter() >= self._next

    def __call__(self, net: torch.nn.Module, step: int, images_seen_total: int, elapsed_s: float) -> dict | None:
        """Score ``net`` now (its mode and weights untouched) and append the row; returns
        it (``None`` when disabled or when this step was scored already)."""
        if not self.enabled or step == self.last_step:
            return None
        from jmlr.eval.evaluate import evaluate

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="heldout_") as tmp:
            # A copy: the export folds train-time parametrisations into the plain layout, and
            # `net`'s modules keep their modes (a run may hold some in eval mode: freeze_bn).
            model_dir = self.export(copy.deepcopy(net).cpu().eval(), Path(tmp))
            res = evaluate([model_dir], self.data, limit=self.limit, batch_size=self.batch_size)
        row = {"step": step, "images_seen_total": images_seen_total, "elapsed_s": round(elapsed_s, 1),
               "count": res["count"], **{k: round(float(res[k]), 4) for k in HELDOUT_COLUMNS[4:-1]},
               "eval_s": round(time.perf_counter() - t0, 1)}
        new = not self.out_csv.is_file() or self.out_csv.stat().st_size == 0
        with open(self.out_csv, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(HELDOUT_COLUMNS))
            if new:
                w.writeheader()
            w.writerow(row)
        log.info("held-out at step %d (%d samples of %s, %.0f s): score %.2f, vertex %.2f mm, MAE_r %.2f deg, "
                 "MAE_t %.1f mm", step, res["count"], self.data, row["eval_s"], row["score"], row["vertex_mean_mm"],
                 row["mae_r_deg"], row["mae_t_mm"])
        self._next = time.perf_counter() + self.every_s
        self.last_step = step
        return row

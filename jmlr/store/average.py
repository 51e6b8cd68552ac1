"""Average the weights of stored models: a "model soup" (Wortsman et al., ICML 2022).

Endpoints of successive training cycles of one run (each session's warm restart ends at
lr 0) lie in one basin, and their weight average is usually better than each of them:
stochastic weight averaging over cycle endpoints (Izmailov et al., UAI 2018), at no
inference cost. Models from different initialisations do not average; the held-out
evaluation decides whether a soup is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .export import export_model
from .load import load_model
from .manifest import ModelStoreError

__all__ = ["average_state_dicts", "average_models"]


def _normalised(weights: Sequence[float] | None, count: int) -> list[float]:
    w = [1.0] * count if weights is None else [float(x) for x in weights]
    if len(w) != count or any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"need {count} non-negative weights with a positive sum, got {w}")
    return [x / sum(w) for x in w]


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]],
                        weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Weighted mean of K state dicts with the same keys and shapes.

    Floating tensors (weights and BN running statistics) are averaged in fp32 with
    ``weights`` normalised to sum 1 (default: uniform); integer buffers such as
    ``num_batches_tracked`` are taken from the last state.

    Raises:
        ValueError: no states, keys or shapes that differ, or bad weights.
    """
    if not states:
        raise ValueError("nothing to average")
    w = _normalised(weights, len(states))
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))[:5]
            raise ValueError(f"state {i} has other keys than state 0 (e.g. {diff})")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        shapes = {tuple(s[k].shape) for s in states}
        if len(shapes) != 1:
            raise ValueError(f"{k}: shapes differ between states: {sorted(shapes)}")
        if states[0][k].is_floating_point():
            stacked = torch.stack([s[k].detach().float() for s in states])
            out[k] = torch.tensordot(torch.tensor(w), stacked, dims=1)
        else:
            out[k] = states[-1][k].detach().clone()
    return out


# What models must share to be averaged, each read from a manifest.
_MUST_MATCH = {
    "tasks": lambda m: m["task"],
    "input_size (crop sizes)": lambda m: m["input_size"],
    "vertex counts": lambda m: m["num_vertices"],
    "architecture configs": lambda m: m["architecture"]["config"],
    "topologies": lambda m: m["sha256"][m["files"]["topology"]],
}


def average_models(model_dirs: Sequence[str | Path], name: str, store_dir: str | Path | None = None,
                   weights: Sequence[float] | None = None, version: str = "1", dtype: torch.dtype = torch.float16,
                   description: str | None = None, metrics: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Write ``<store_dir>/<name>/``: the weight average of stored models.

    The models must share task, architecture config, input size and topology (checked on
    the manifests and the topology hash). Each is loaded and verified first. The new
    manifest lists its sources (name, weights hash, images seen, weight) under
    ``extra.averaged_from`` and counts the most images any source has seen, so that
    ``jmlr train --init`` continues the curve from it.

    Raises:
        ModelStoreError: fewer than two models, or models that do not fit together.
    """
    if len(model_dirs) < 2:
        raise ModelStoreError("give at least two models to average")
    loaded = [load_model(d) for d in model_dirs]
    paths = [m.path for m in loaded]
    manifests = [m.manifest for m in loaded]
    for label, value in _MUST_MATCH.items():
        if any(value(m) != value(manifests[0]) for m in manifests[1:]):
            raise ModelStoreError(f"{label} differ between {', '.join(map(str, paths))}: only models of one "
                                  "architecture, crop size and topology can be averaged")
    try:
        w = _normalised(weights, len(loaded))
    except ValueError as exc:
        raise ModelStoreError(str(exc)) from exc
    state = average_state_dicts([m.net.state_dict() for m in loaded], w)
    sources = [{"name": m["name"], "weights_sha256": m["sha256"][m["files"]["weights"]],
                "images_seen_total": (m.get("extra") or {}).get("images_seen_total"),
                "weight": wi} for m, wi in zip(manifests, w)]
    seen = [s["images_seen_total"] for s in sources if s["images_seen_total"] is not None]
    last = manifests[-1]
    extra = {"averaged_from": sources,
             **({"images_seen_total": max(int(x) for x in seen)} if seen else {}),
             **({"train_config": last["extra"]["train_config"]}
                if "train_config" in (last.get("extra") or {}) else {})}
    names = ", ".join(s["name"] for s in sources)
    return export_model(
        state, last["architecture"]["config"], paths[-1] / last["files"]["topology"], store_dir, name,
        version=version, metrics=metrics, training_data=last.get("training_data"), task=str(last["task"]),
        dtype=dtype, extra=extra, input_size=int(last["input_size"]), licence=last.get("licence"),
        description=description or f"weight average of {names}", overwrite=overwrite)

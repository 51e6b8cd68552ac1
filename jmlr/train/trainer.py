"""The training loop shared by the JMLR network and the Fig. 1 baselines.

One run is described by a plain dict (a YAML file in ``jmlr/configs/train/``, see
``docs/training.md``). The loop: SGD (momentum 0.9, weight decay 5e-4, no decay on BN
and biases), learning rate ``lr * global_batch / lr_batch`` with linear warm-up then
polynomial decay to 0 at ``max_steps``; bf16 autocast and channels_last on CUDA; DDP
when launched by torchrun with ``WORLD_SIZE > 1``; resumable safetensors checkpoints
(no pickle; ``jmlr.train.checkpoint``); batches from ``jmlr.train.sources``; a tqdm bar
and a CSV log on rank 0; stops at ``max_steps`` or after ``max_minutes``, whichever
comes first.
"""

from __future__ import annotations

import copy
import csv
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

from jmlr.data.datasets import AugmentConfig, augment_batch, normalise_images
from jmlr.facemodel.topology import Topology, default_topology_path
from jmlr.malloc import keep_freed_memory
from jmlr.models.jmlr_net import JMLRHead
from jmlr.models.loss import LossWeights, unique_edges
from jmlr.models.tasks import Task, get_task
from jmlr.models.vertex_basis import (
    attach_vertex_basis,
    fold_vertex_basis,
    principal_vertex_basis,
)
from jmlr.paths import configs_dir
from jmlr.train.checkpoint import checkpoint_basis, load_checkpoint, load_optimizer_state, save_checkpoint
from jmlr.train.heldout import HeldOutMonitor
from jmlr.train.sources import disk_source, packed_source, synthetic_source

log = logging.getLogger("jmlr.train")

DEFAULT_CONFIG: dict[str, Any] = {
    "task": "jmlr",                 # jmlr | baseline_a | baseline_b
    "model": "jmlr_resnet18d",      # registry name, YAML path, or config dict
    "input_size": 128,
    "topology": None,               # npz; default the committed ARKit-like topology
    "facemodel": None,              # face model npz for synthetic data; default $JMLR_FACEMODEL / ../shared
    "seed": 0,
    "out": "runs/default",
    "ckpt_dir": None,               # default <out>/ckpt
    "max_steps": 1000,
    "max_minutes": None,
    "batch_size": 32,               # per process
    "optim": {"name": "sgd", "lr": 0.1, "lr_batch": 512, "momentum": 0.9, "weight_decay": 5e-4,
              "warmup_steps": 1000, "poly_power": 1.0, "nesterov": False},
    "loss": {"lambda_edge": 0.25, "lambda_land": 2.0, "lambda_pose": 1.0},
    "data": {
        "source": "synthetic",      # synthetic | disk | packed
        "root": None,               # challenge-layout folder (disk)
        "packs": None,              # pack folders (packed, jmlr.data.packed; `jmlr pack`)
        "limit": None,              # packed: use only the first N samples
        "lists": None,              # list CSVs (disk); default every CSV in root/list
        "num_workers": 2,
        "synthetic_workers": 0,     # > 0: render synthetic batches on CPU worker processes
        "augment": {"jitter": {"scale": 0.05, "rotate_deg": 5.0, "shift": 0.03},
                    "flip": 0.5, "color": 0.2},
        "synthetic": {},            # extra keyword arguments of SyntheticCropStream
    },
    "device": "auto",               # auto | cpu | cuda
    "amp": True,                    # bf16 autocast (CUDA only)
    "channels_last": True,          # CUDA only
    "threads": None,                # torch CPU threads
    "log_every": 10,
    "ckpt_every": 500,
    "progress": True,
    "export": None,                 # model-store name written at the end
    "store_dir": None,
    "resume": None,                 # checkpoint dir / "auto"
    "init": None,                   # model-store folder to start from (continues a shipped model)
    "init_head": True,              # centre the output bias on the first batch's targets
    "output_stats": 2048,           # fresh JMLR runs: samples for the output affine (0 = off)
    "expression_head": False,       # JMLR runs on packed data: also learn the expression weights
                                    # (the shipped blendshape basis's names; docs/blendshapes.md)
    "freeze": [],                   # parameter-name prefixes kept fixed (e.g. [stem, blocks.0]): no
                                    # gradients flow into them, so their backward pass is skipped
    "freeze_bn": False,             # with freeze: their BatchNorm layers in eval mode too (running
                                    # statistics, no longer updated; freeze_batchnorm)
    "vertex_basis": 0,              # JMLR runs: train the vertex rows of fc on the targets' K-dim
                                    # principal basis (jmlr.models.vertex_basis; 0 = off, else K at most)
    "heldout": None,                # {data: DIR, every_minutes: 30, limit: 330}: score the network on
                                    # held-out samples during the run (jmlr.train.heldout; <out>/heldout.csv)
    "ema": None,                    # {decay: 0.999, every: 1}: also keep an exponential moving average of the
                                    # weights and BN statistics, exported beside the raw ones as
                                    # <export>_ema (weight_ema; not checkpointed: it starts from the
                                    # run's starting weights, also when resuming)
}


# ----------------------------------------------------------------------------- config
def deep_update(base: dict, other: dict | None) -> dict:
    """A copy of ``base`` with ``other`` merged in recursively (dicts merge, rest replaces)."""
    out = copy.deepcopy(base)
    for k, v in (other or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config_path(name: str | Path) -> Path:
    """A train config path, or a name in ``jmlr/configs/train/`` (with or without .yaml)."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    for cand in (configs_dir() / "train" / f"{name}", configs_dir() / "train" / f"{name}.yaml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"train config {name!r} not found (nor in {configs_dir() / 'train'})")


def load_train_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults <- YAML file <- overrides. Returns the full config dict."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        with open(resolve_config_path(path), encoding="utf-8") as f:
            cfg = deep_update(cfg, yaml.safe_load(f) or {})
    return deep_update(cfg, overrides)


def set_dotted(cfg: dict, key: str, value: str) -> None:
    """``cfg[a][b] = yaml(value)`` for ``key = "a.b"`` (the ``--set`` override)."""
    parts = key.split(".")
    d = cfg
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = yaml.safe_load(value)


# ----------------------------------------------------------------------------- schedule
def scaled_lr(lr: float, global_batch: int, lr_batch: int) -> float:
    """Linear scaling rule: ``lr`` is for ``lr_batch`` images per step."""
    return lr * global_batch / lr_batch


def lr_at(step: int, peak: float, warmup_steps: int, max_steps: int, power: float = 1.0) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up to ``peak`` over ``warmup_steps``,
    then ``peak * (1 - progress) ** power`` reaching 0 at ``max_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak * (1.0 - progress) ** power


def budget_step(step: int, elapsed_s: float, max_minutes: float | None, warmup_steps: int,
                max_steps: int) -> float:
    """The step the lr schedule should use under a time budget.

    With ``max_minutes`` the poly decay follows whichever runs out first, steps or
    minutes, so a run cut by the clock still ends at a small learning rate. Without a
    budget (or during warm-up) it is ``step``.
    """
    if not max_minutes or step < warmup_steps:
        return step
    frac = elapsed_s / (60.0 * float(max_minutes))
    return max(step, warmup_steps + frac * (max_steps - warmup_steps))


# ----------------------------------------------------------------------------- distributed
def init_distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size); initialises the process group only when
    ``WORLD_SIZE > 1`` (torchrun), NCCL on CUDA else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), local, world


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- training
@torch.no_grad()
def init_head_from_batch(net: torch.nn.Module, xs: list[torch.Tensor], target: torch.Tensor,
                         layers: list[tuple[torch.nn.Linear, slice]]) -> None:
    """Centre the initial predictions on the targets of one batch: each output bias
    becomes ``mean(target) - mean(W f)`` over the batch. ``layers``: the final linear
    layer(s) and the slice of the output each produces (the task's ``output_layers``).

    Why: the mean-reduced L1 over ~6k outputs gives each output a tiny gradient, so
    with SGD the head would need many steps just to reach the mean face. Starting
    there leaves the network to learn the per-image deviations.
    """
    feats = {}
    hooks = [fc.register_forward_hook(lambda m, i, o, key=id(fc): feats.__setitem__(key, o))  # noqa: B008
             for fc, _ in layers]
    was = net.training
    net.train()  # BN statistics as in training
    try:
        net(*xs)
    finally:
        for h in hooks:
            h.remove()
        net.train(was)
    for fc, sl in layers:
        out = feats[id(fc)].float()
        fc.bias.add_(target[:, sl].float().mean(0) - out.mean(0))


@torch.no_grad()
def output_statistics(targets: torch.Tensor, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (5N,) of JMLR targets (B, 5N) and the spread of each block: one RMS deviation
    for all vertex coordinates and one for all 2D coordinates, so that within a block the
    loss keeps metric weights (a millimetre counts the same on the nose and the chin)."""
    t = targets.double()
    mean = t.mean(0)
    dev = (t - mean) ** 2
    n3 = 3 * int(num_vertices)
    scale = torch.empty_like(mean)
    scale[:n3] = dev[:, :n3].mean().sqrt()
    scale[n3:] = dev[:, n3:].mean().sqrt()
    return mean.float(), scale.clamp_min(1e-6).float()


def load_init_model(net: torch.nn.Module, model_dir: str | Path) -> dict:
    """Load a model-store model's weights into ``net`` (same architecture and topology
    size) for a run that continues it. Returns the store's manifest.

    ``net`` may have an expression head the stored model lacks: that head is left as it
    is, to be initialised by the caller (`JMLRHead.init_expression_head`)."""
    from jmlr.store import load_model

    loaded = load_model(model_dir)
    if loaded.topology.num_vertices != getattr(net, "num_vertices", None):
        raise ValueError(f"--init {model_dir}: {loaded.topology.num_vertices} vertices, the run's network "
                         f"{getattr(net, 'num_vertices', None)}")
    state = {k: v.float() for k, v in loaded.net.state_dict().items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("expression_fc.")]
    if missing or unexpected:
        hint = (" (the stored model has an expression head: set expression_head: true to keep it)"
                if any(k.startswith("expression_fc.") for k in unexpected) else "")
        raise ValueError(f"--init {model_dir}: architecture differs from the run's "
                         f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...){hint}")
    return loaded.manifest


def prior_images_seen(manifest: dict | None) -> int:
    """Images a stored model has been trained on (0 for none): its recorded total, or
    for models from before that record, steps x batch of its training config."""
    if not manifest:
        return 0
    extra = manifest.get("extra") or {}
    if "images_seen_total" in extra:
        return int(extra["images_seen_total"])
    tc = extra.get("train_config") or {}
    return int(extra.get("step", 0)) * int(tc.get("batch_size", 0))


def _param_groups(net: torch.nn.Module, weight_decay: float) -> list[dict]:
    # No decay on BN parameters and biases (1-D tensors), as usual for ResNets. Frozen
    # parameters stay in the groups: they get no gradient, which SGD and AdamW skip, and the
    # groups keep their layout, so a checkpoint's optimizer state loads whatever is frozen.
    decay, no_decay = [], []
    for p in net.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class WeightEma:
    """An exponential moving average of a network's parameters and buffers (BatchNorm's
    running statistics), ``ema <- d * ema + (1 - d) * w``, taken every ``every`` steps with
    ``d = decay ** every`` (the same horizon, about ``1 / (1 - decay)`` steps, for less
    work), starting from the network's weights when made. ``module`` is the averaged copy.

    Why: the long runs ship weight averages of cycle endpoints (``jmlr average``), and an
    average along one cycle's trajectory costs only a lerp of the weights (about 10 ms of
    CPU for the 10 M parameters of the 128 px MobileNetV2, against about 0.5 s of CPU per
    training step on 2 cores). Measured on the session-15 cycles (docs/training.md): along a
    cycle whose lr decays to 0 it gains nothing beyond the scatter between cycles, while
    averaging the cycles' endpoints does; it is for long runs at a constant lr. Built on
    torch's ``AveragedModel``.
    """

    def __init__(self, net: torch.nn.Module, decay: float = 0.999, every: int = 1) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema.decay must lie in (0, 1), got {decay}")
        if int(every) != every or every < 1:
            raise ValueError(f"ema.every must be a whole number of steps >= 1, got {every}")
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.every = int(every)
        self.averaged = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay ** self.every), use_buffers=True)
        self.averaged.update_parameters(net)  # the first update copies: the average starts here

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    def after_step(self, net: torch.nn.Module, step: int) -> None:
        """Fold in ``net``'s weights after optimiser step ``step`` when it is due."""
        if step % self.every == 0:
            self.averaged.update_parameters(net)


def weight_ema(net: torch.nn.Module, spec: dict | None) -> WeightEma | None:
    """The config's ``ema`` (``{decay: 0.999, every: 1}``) for ``net``, or None when empty."""
    if not spec:
        return None
    unknown = set(spec) - {"decay", "every"}
    if unknown:
        raise ValueError(f"ema: unknown keys {sorted(unknown)} (known: decay, every)")
    return WeightEma(net, float(spec.get("decay", 0.999)), spec.get("every", 1))


def freeze_parameters(net: torch.nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Keep the parameters under ``prefixes`` (module paths of ``net``'s state dict, such
    as ``stem`` or ``blocks.0``) fixed: ``requires_grad`` off, so autograd neither computes
    their gradients nor, when they lead the network, back-propagates through them.

    Why: on the CPU the backward pass is about 60 % of a step and the early,
    high-resolution layers cost the most per parameter; a network that has learned its
    low-level features can train its later layers faster without them. BatchNorm layers
    under a prefix keep normalising with batch statistics in training and keep updating
    their running statistics, as before.

    Returns the frozen parameter names; raises ``ValueError`` for a prefix that names no
    parameter (a typo must not train everything silently).
    """
    names = [n for n, _ in net.named_parameters()]
    unknown = [p for p in prefixes if not any(n == p or n.startswith(p + ".") for n in names)]
    if unknown:
        tops = sorted({n.split(".")[0] for n in names})
        raise ValueError(f"freeze: {unknown} name no parameters of the network (its top-level modules: {tops})")
    frozen = []
    for n, p in net.named_parameters():
        if any(n == q or n.startswith(q + ".") for q in prefixes):
            p.requires_grad_(False)
            frozen.append(n)
    return frozen


def _freeze_prefixes(cfg: dict) -> list[str]:
    """The config's ``freeze`` as a list of prefixes (one string is one prefix)."""
    freeze = cfg.get("freeze") or []
    return [freeze] if isinstance(freeze, str) else [str(p) for p in freeze]


def freeze_batchnorm(net: torch.nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Put the BatchNorm layers under ``prefixes`` in eval mode: they normalise with their
    running statistics and no longer update them (Detectron2's frozen BatchNorm). Call it
    after ``net.train()``, which would undo it. Returns their module names.

    Why: under ``freeze`` these layers' weights are fixed, yet in training mode their
    BatchNorm still reduces the network's largest activations to batch statistics on every
    step and drifts its running statistics with the data. In eval mode the frozen layers
    are the fixed function that the exported model computes.
    """
    names = []
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and any(
                name == q or name.startswith(q + ".") for q in prefixes):
            m.eval()
            names.append(name)
    return names


def fold_frozen_batchnorm(net: torch.nn.Module, prefixes: Sequence[str]) -> Callable[[], None]:
    """Run the modules named by ``prefixes`` (fixed by :func:`freeze_parameters`, their
    BatchNorm in eval mode by :func:`freeze_batchnorm`) through copies in which every
    ``Conv2d`` directly followed by a ``BatchNorm2d`` in an ``nn.Sequential`` (how the
    backbones build conv-BN-ReLU) is one convolution (``torch.nn.utils.fusion``). The
    network's own modules, parameters and state dict stay as they are: only their
    ``forward`` is redirected. Returns the function that undoes it.

    Why: in eval mode a frozen BatchNorm is an affine map per channel, yet it still reads
    and writes the largest activations of the network on every step; folded into the
    convolution before it, it costs nothing.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    redirected: list[torch.nn.Module] = []
    for prefix in prefixes:
        module = net.get_submodule(prefix)
        if any(m.training for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
            raise ValueError(f"fold_frozen_batchnorm: {prefix}'s BatchNorm is in training mode (freeze_batchnorm it)")
        folded = copy.deepcopy(module).eval()
        for seq in [m for m in folded.modules() if isinstance(m, torch.nn.Sequential)]:
            for k in range(len(seq) - 1):
                conv, bn = seq[k], seq[k + 1]
                if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                    fused = fuse_conv_bn_eval(conv, bn)
                    if conv.weight.is_contiguous(memory_format=torch.channels_last):
                        fused = fused.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
                    seq[k], seq[k + 1] = fused, torch.nn.Identity()
        for p in folded.parameters():
            p.requires_grad_(False)
        module.forward = folded.forward  # type: ignore[method-assign]
        redirected.append(module)

    def undo() -> None:
        for m in redirected:
            del m.forward
    return undo


def make_optimizer(optim_cfg: dict, param_groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's, and the default) or AdamW (``optim.name: adamw``).

    AdamW is there for short CPU runs: with a mean L1 over N*5 outputs, SGD at the paper's
    lr needs tens of thousands of steps, which a 2-core machine cannot give. It runs fused
    (``optim.fused``, default true): on the CPU the per-tensor loop took 6.5 % of a
    MobileNetV2 step (docs/training.md); the update is the same.
    """
    name = str(optim_cfg.get("name", "sgd")).lower()
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=float(optim_cfg["momentum"]),
                               nesterov=bool(optim_cfg.get("nesterov", False)))
    if name == "adamw":
        betas = tuple(optim_cfg.get("betas", (0.9, 0.999)))
        return torch.optim.AdamW(param_groups, lr=lr, betas=betas, fused=bool(optim_cfg.get("fused", True)))
    raise ValueError(f"unknown optim.name {name!r}: use 'sgd' or 'adamw'")


@dataclass
class _Run:
    """What every step of one training run shares: its config, process and topology."""

    cfg: dict
    rank: int
    local_rank: int
    world: int
    device: torch.device
    topology: Topology
    topo_path: Path

    @property
    def seed(self) -> int:
        return int(self.cfg["seed"])

    @property
    def task(self) -> str:
        return str(self.cfg["task"])

    @property
    def size(self) -> int:
        return int(self.cfg["input_size"])

    @property
    def batch(self) -> int:
        return int(self.cfg["batch_size"])

    @property
    def max_steps(self) -> int:
        return int(self.cfg["max_steps"])

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg["out"])

    @property
    def ckpt_dir(self) -> Path:
        return Path(self.cfg["ckpt_dir"]) if self.cfg.get("ckpt_dir") else self.out_dir / "ckpt"

    @property
    def main(self) -> bool:
        return self.rank == 0


def train(cfg: dict, batches: Iterator[dict] | None = None) -> dict:
    """Run one training job described by ``cfg`` (see :data:`DEFAULT_CONFIG`).

    ``batches`` replaces the configured data source (an iterator of batch dicts as
    ``jmlr.data.datasets`` describes; used by tests and custom sources).

    Returns a summary dict: ``step``, ``loss`` (last logged), ``images_per_s`` (global,
    excluding the first step), ``ckpt_dir``, ``export`` (store folder or None), ``export_ema`` (the
    moving average's store folder, when ``ema`` and ``export`` are set), ``first_loss``.
    """
    run = _start_run(deep_update(DEFAULT_CONFIG, cfg))
    spec = get_task(run.task)
    net, init_manifest = _build_network(run, spec)
    peak_lr = scaled_lr(float(run.cfg["optim"]["lr"]), run.batch * run.world, int(run.cfg["optim"]["lr_batch"]))
    start_step, resumed_prior, resume_dir = _resume(run, net)
    if batches is None:
        batches = _data_source(run, spec, net, start_step)
    to_inputs = _Inputs(spec.inputs, net.config["normalisation"], bool(run.cfg.get("channels_last", True)))
    pending: list[dict] = []
    if start_step == 0 and init_manifest is None:
        pending = _initialise_fresh(run, net, spec, batches, to_inputs)
    if start_step == 0 and getattr(net, "expression_names", ()) and not _init_has_expression(init_manifest):
        if not pending:
            pending.append(_to_device(next(batches), run.device))
        net.init_expression_head(torch.cat([b["expression"] for b in pending]))
    same_basis = _attach_vertex_basis(run, net, spec, batches, pending, resume_dir)
    freeze = _freeze_prefixes(run.cfg)
    if freeze:
        frozen = freeze_parameters(net, freeze)
        if run.main:
            log.info("freeze: %d of %d parameter tensors fixed (%s)%s", len(frozen),
                     sum(1 for _ in net.parameters()), ", ".join(freeze),
                     "; their BatchNorm on its running statistics (freeze_bn)" if run.cfg.get("freeze_bn") else "")
    optimizer = make_optimizer(run.cfg["optim"], _param_groups(net, float(run.cfg["optim"]["weight_decay"])), peak_lr)
    if resume_dir is not None:
        if same_basis:
            load_optimizer_state(resume_dir, optimizer)
        else:
            log.warning("resumed %s with another head parametrisation: optimizer state not restored", resume_dir)
    # A resumed run carries its own init's prior in the checkpoint (init is not reloaded then).
    images_before = prior_images_seen(init_manifest) if resumed_prior is None else resumed_prior

    def meta_at(step: int) -> dict:
        return _checkpoint_meta(run, net.config, images_before, step)

    heldout = None
    if run.main and run.cfg.get("heldout"):
        heldout = HeldOutMonitor(run.cfg["heldout"], run.out_dir / "heldout.csv",
                                 lambda copy_, folder: _export(run, copy_, meta_at(0), folder, "heldout"))
    ema = weight_ema(net, run.cfg.get("ema")) if run.main else None
    summary = _train_steps(run, net, spec, optimizer, peak_lr, batches, pending, to_inputs, start_step, meta_at,
                           heldout, ema)
    if run.main:
        step = summary["step"]
        save_checkpoint(run.ckpt_dir, net, optimizer, meta_at(step))
        if run.cfg.get("export"):
            summary["export"] = str(_export(run, net, meta_at(step)))
            if ema is not None:
                summary["export_ema"] = str(_export(run, ema.module, meta_at(step), name=f"{run.cfg['export']}_ema"))
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _start_run(cfg: dict) -> _Run:
    """Join the process group, pick the device, seed, and load the topology."""
    rank, local_rank, world = init_distributed()
    device = pick_device(cfg["device"], local_rank)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    # A step frees and reallocates the same activation buffers of a few MB; by default glibc
    # unmaps or trims them, and faulting them back in kept the kernel busy for 4-5 of every
    # 45 CPU seconds on 2 cores. Kept: half that, and 7 % shorter steps (docs/training.md).
    keep_freed_memory()
    seed_everything(int(cfg["seed"]) + rank)
    topo_path = Path(cfg["topology"]) if cfg.get("topology") else default_topology_path()
    return _Run(cfg, rank, local_rank, world, device, Topology.load(topo_path), topo_path)


def _init_has_expression(manifest: dict | None) -> bool:
    return bool(manifest and (manifest.get("architecture") or {}).get("config", {}).get("expression_names"))


def _model_config(run: _Run) -> Any:
    """The run's model config: ``model`` as given, with the expression names added when
    ``expression_head`` asks for one (the names of the shipped blendshape basis, which is
    the face model's expression order, the order packs store the weights in)."""
    cfg = run.cfg
    if not cfg.get("expression_head"):
        return cfg["model"]
    if run.task != "jmlr":
        raise ValueError(f"expression_head: only the jmlr task has one, not {run.task!r}")
    from jmlr.facemodel.blendshapes import default_blendshape_basis_path
    from jmlr.models.registry import load_model_config

    model_cfg = load_model_config(cfg["model"])
    with np.load(default_blendshape_basis_path()) as basis:
        model_cfg["expression_names"] = [str(n) for n in basis["expression_names"]]
    return model_cfg


def _build_network(run: _Run, spec: Task) -> tuple[torch.nn.Module, dict | None]:
    """The task's network on the device, continued from ``init`` (a stored model) unless
    resuming; returns it and the init model's manifest (None for a fresh network)."""
    cfg = run.cfg
    net = spec.build(_model_config(run), run.topology.num_vertices, run.size)
    init_manifest = None
    if cfg.get("init") and not cfg.get("resume"):
        init_manifest = load_init_model(net, cfg["init"])
    net.to(run.device)
    # channels_last also pays on the CPU (oneDNN): +30 % for MobileNetV2, +10 % for
    # ResNet-18-D training at 128 px on 2 threads (docs/training.md).
    if bool(cfg.get("channels_last", True)):
        net.to(memory_format=torch.channels_last)
    return net, init_manifest


def _resume(run: _Run, net: torch.nn.Module) -> tuple[int, int | None, Path | None]:
    """Restore the weights of ``resume`` (a checkpoint folder, or "auto": this run's own
    if any); the optimizer's state is restored once the optimizer exists.

    Returns the step to start from, the images the network had seen before this run
    began (its ``--init`` model's total; None when not resuming) and the checkpoint folder."""
    resume = run.cfg.get("resume")
    if resume == "auto":
        resume = run.ckpt_dir if (run.ckpt_dir / "last.json").is_file() else None
    if not resume:
        return 0, None, None
    meta = load_checkpoint(Path(resume), net, None)
    prior = int(meta.get("images_seen_total", 0)) - int(meta.get("images_seen", 0))
    return int(meta["step"]), prior, Path(resume)


def _attach_vertex_basis(run: _Run, net: torch.nn.Module, spec: Task, batches: Iterator[dict],
                         pending: list[dict], resume_dir: Path | None) -> bool:
    """Put the head's vertex rows on a principal basis (config ``vertex_basis``): the
    resumed checkpoint's own, else one computed from ``output_stats`` training targets
    (the batches already drawn in ``pending`` first; any more drawn are added to it, to be
    trained on). Returns whether the head has the same parametrisation as the resumed
    checkpoint (True when not resuming)."""
    saved = checkpoint_basis(resume_dir) if resume_dir is not None else None
    rank = int(run.cfg.get("vertex_basis") or 0)
    if saved is not None:
        attach_vertex_basis(net, saved.to(run.device))
        return True
    if rank <= 0 or not isinstance(net, JMLRHead):
        return True  # plain head on both sides
    if run.world > 1:
        raise ValueError("vertex_basis is not supported with several processes yet (every rank must agree on it)")
    want = max(int(run.cfg.get("output_stats") or 0), 4 * rank)
    while len(pending) * run.batch < want:
        pending.append(_to_device(next(batches), run.device))
    targets = torch.cat([spec.targets(b, run.size) for b in pending])
    basis = principal_vertex_basis(targets, net.num_vertices, net.out_mean, net.out_scale, max_rank=rank)
    log.info("vertex basis: %d components from %d targets", basis.shape[1], len(targets))
    attach_vertex_basis(net, basis)
    return resume_dir is None


def _data_source(run: _Run, spec: Task, net: torch.nn.Module, start_step: int) -> Iterator[dict]:
    """Endless batches of ``data.source`` (synthetic, disk or packed), seeded by the step."""
    cfg, rank, world = run.cfg, run.rank, run.world
    source = cfg["data"]["source"]
    names = tuple(getattr(net, "expression_names", ()))
    if names and source != "packed":
        raise ValueError(f"expression_head needs expression targets, which only packed data holds (data.source "
                         f"{source!r}); make packs with `jmlr pack`")
    if source == "synthetic":
        if "whole" in spec.inputs:
            raise ValueError(f"task {run.task!r} needs whole images: use data.source 'disk'")
        seed = run.seed * 1000 + rank + start_step
        stream = synthetic_source(cfg, run.topology, run.topo_path, run.size, run.batch, seed, run.device)
        aug = AugmentConfig.from_dict(cfg["data"].get("augment"))
        gen = torch.Generator().manual_seed(seed)
        flip_index = torch.from_numpy(run.topology.flip_index).long().to(run.device)
        return (augment_batch(b, aug, flip_index, gen) for b in stream)
    if source == "disk":
        return disk_source(cfg, run.topology, run.size, run.batch, run.seed + start_step, world > 1)[0]
    if source == "packed":
        return packed_source(cfg, run.topology, run.size, run.batch, run.seed * 1000 + start_step, rank, world,
                             names)[0]
    raise ValueError(f"unknown data.source {source!r}")


class _Inputs:
    """A batch's network inputs: the task's image keys, normalised, channels_last if asked."""

    def __init__(self, keys: tuple[str, ...], normalisation: dict, channels_last: bool) -> None:
        self.keys, self.mean, self.std = keys, normalisation["mean"], normalisation["std"]
        self.channels_last = channels_last

    def __call__(self, b: dict) -> list[torch.Tensor]:
        xs = [normalise_images(b[k], self.mean, self.std) for k in self.keys]
        if self.channels_last:
            xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
        return xs


def _to_device(b: dict, device: torch.device, non_blocking: bool = False) -> dict:
    return {k: v.to(device, non_blocking=non_blocking) for k, v in b.items() if isinstance(v, torch.Tensor)}


def _initialise_fresh(run: _Run, net: torch.nn.Module, spec: Task, batches: Iterator[dict],
                      to_inputs: _Inputs) -> list[dict]:
    """Initialise a fresh network from its first batches: the output affine from the
    targets' statistics (JMLR heads), CenterFace's backbone (configs asking for it), else
    the output biases on one batch. Returns the batches drawn, to be trained on first."""
    cfg, N = run.cfg, run.topology.num_vertices
    pending: list[dict] = []

    def first_batch() -> dict:
        if not pending:
            pending.append(_to_device(next(batches), run.device))
        return pending[0]

    use_stats = isinstance(net, JMLRHead) and int(cfg.get("output_stats") or 0) > 0
    if use_stats:
        # The batches drawn for the statistics are trained on afterwards, not wasted.
        while len(pending) * run.batch < int(cfg["output_stats"]):
            pending.append(_to_device(next(batches), run.device))
        if run.world > 1:
            pending = pending[:1]  # every rank must agree: rank 0's weights are broadcast by DDP
        net.set_output_statistics(*output_statistics(torch.cat([spec.targets(b, run.size) for b in pending]), N))
    if (net.config.get("init") or {}).get("centerface"):
        from jmlr.models.pretrained import init_mobilenetv2_from_centerface

        init_mobilenetv2_from_centerface(net, calibration=to_inputs(first_batch())[0], mean=to_inputs.mean,
                                         std=to_inputs.std)
    if cfg.get("init_head", True) and not use_stats:
        b = first_batch()
        init_head_from_batch(net, to_inputs(b), spec.targets(b, run.size), spec.output_layers(net))
    return pending


def _checkpoint_meta(run: _Run, model_cfg: dict, images_before: int, step: int) -> dict:
    cfg, data = run.cfg, run.cfg["data"]
    seen = step * run.batch * run.world
    # A registry name stands for the config unless the run changed it (expression head).
    by_name = isinstance(cfg["model"], str) and not cfg.get("expression_head")
    return {"model": cfg["model"] if by_name else model_cfg,
            "model_config": model_cfg, "num_vertices": run.topology.num_vertices, "input_size": run.size,
            "topology": str(run.topo_path), "task": run.task, "step": step, "config": cfg,
            "images_seen": seen, "images_seen_total": images_before + seen,
            "training_data": {"source": data["source"], "root": data.get("root"), "packs": data.get("packs")}}


def _export(run: _Run, net: torch.nn.Module, meta: dict, store_dir: str | Path | None = None,
            name: str | None = None) -> Path:
    """Write ``net`` to the model store: the run's ``export`` name in its ``store_dir``,
    unless given (the held-out monitor writes to a temporary folder)."""
    from jmlr.store import export_model

    cfg = run.cfg
    fold_vertex_basis(net)  # the store keeps the plain fc layout
    return export_model(
        net, net.config, run.topo_path, store_dir if store_dir is not None else cfg.get("store_dir"),
        name or cfg["export"], task=run.task,
        input_size=run.size, overwrite=True, training_data=meta["training_data"],
        extra={"step": meta["step"], "train_config": cfg, "images_seen": meta["images_seen"],
               "images_seen_total": meta["images_seen_total"], "init": cfg.get("init")})


class _TrainLog:
    """Rank 0's CSV log (appended to when resuming) and progress bar; no-ops elsewhere."""

    def __init__(self, run: _Run, start_step: int) -> None:
        self.file = None
        self.writer: csv.DictWriter | None = None
        self.bar = None
        if not run.main:
            return
        run.out_dir.mkdir(parents=True, exist_ok=True)
        (run.out_dir / "config.yaml").write_text(yaml.safe_dump(run.cfg, sort_keys=False), "utf-8")
        # A resumed run appends to its log; a fresh one starts it anew.
        self.file = open(run.out_dir / "log.csv", "a" if start_step else "w", newline="", encoding="utf-8")
        if run.cfg.get("progress", True):
            from tqdm import tqdm

            self.bar = tqdm(total=run.max_steps, initial=start_step, desc=f"train {run.task}", dynamic_ncols=True)

    def row(self, row: dict) -> None:
        if self.file is None:
            return
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            if self.file.tell() == 0:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.3g}", ips=f"{row['images_per_s']:.1f}")

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()


def _out_of_time(run: _Run, t_start: float) -> bool:
    if not run.cfg.get("max_minutes"):
        return False
    stop = torch.tensor(float(time.perf_counter() - t_start > 60.0 * float(run.cfg["max_minutes"])), device=run.device)
    if run.world > 1:  # every rank must stop at the same step, or DDP hangs
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
    return stop.item() > 0


def _train_steps(run: _Run, net: torch.nn.Module, spec: Task, optimizer: torch.optim.Optimizer, peak_lr: float,
                 batches: Iterator[dict], pending: list[dict], to_inputs: _Inputs, start_step: int,
                 meta_at: Callable[[int], dict], heldout: HeldOutMonitor | None = None,
                 ema: WeightEma | None = None) -> dict:
    """The optimisation loop from ``start_step`` to ``max_steps`` or ``max_minutes``; with
    ``heldout``, the network is scored on held-out samples when it is due and at the end;
    with ``ema``, the moving average takes in each step's weights when due."""
    cfg, o, device = run.cfg, run.cfg["optim"], run.device
    ddp_net = net
    if run.world > 1:  # DDP broadcasts rank 0's (head-initialised) weights to every rank
        ddp_net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[run.local_rank] if device.type == "cuda" else None)
    edges = torch.from_numpy(unique_edges(run.topology.triangles)).to(device)
    weights = LossWeights.from_dict(cfg.get("loss"))
    amp = device.type == "cuda" and bool(cfg.get("amp", True))
    warmup, max_steps = int(o["warmup_steps"]), run.max_steps
    log = _TrainLog(run, start_step)
    t_start = time.perf_counter()
    t_first: float | None = None
    images_after_first = 0
    step = start_step
    first_loss = None
    last: dict = {}
    net.train()
    bn_frozen = _freeze_prefixes(cfg) if cfg.get("freeze_bn") else []
    freeze_batchnorm(net, bn_frozen)
    unfold = fold_frozen_batchnorm(net, bn_frozen)
    try:
        while step < max_steps and not _out_of_time(run, t_start):
            b = _to_device(pending.pop(0) if pending else next(batches), device, non_blocking=True)
            xs = to_inputs(b)
            lr = lr_at(budget_step(step, time.perf_counter() - t_start, cfg.get("max_minutes"), warmup, max_steps),
                       peak_lr, warmup, max_steps, float(o["poly_power"]))
            for g in optimizer.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = ddp_net(*xs)
            res = spec.loss(out, b, edges, run.size, weights, net)
            optimizer.zero_grad(set_to_none=True)
            res["loss"].backward()
            optimizer.step()
            step += 1
            if ema is not None:
                ema.after_step(net, step)
            if t_first is None:
                t_first = time.perf_counter()  # the first step pays for warm-up; not timed
            else:
                images_after_first += run.batch * run.world
            if first_loss is None:
                first_loss = float(res["loss"].detach())
            if run.main and (step % int(cfg["log_every"]) == 0 or step == max_steps):
                ips = images_after_first / max(1e-9, time.perf_counter() - t_first)
                last = {"step": step, "lr": lr, **{k: float(v.detach()) for k, v in res.items()},
                        "images_per_s": ips, "elapsed_s": time.perf_counter() - t_start}
                log.row(last)
            log.step()
            if run.main and int(cfg["ckpt_every"]) > 0 and step % int(cfg["ckpt_every"]) == 0:
                save_checkpoint(run.ckpt_dir, net, optimizer, meta_at(step))
            if heldout is not None and heldout.due():
                heldout(net, step, meta_at(step)["images_seen_total"], time.perf_counter() - t_start)
        if heldout is not None and step > start_step:
            heldout(net, step, meta_at(step)["images_seen_total"], time.perf_counter() - t_start)
    finally:
        unfold()
        log.close()
    ips = images_after_first / max(1e-9, time.perf_counter() - t_first) if t_first else 0.0
    return {"step": step, "loss": last.get("loss", first_loss), "first_loss": first_loss,
            "images_per_s": ips, "ckpt_dir": str(run.ckpt_dir), "export": None}

"""Where a training run's batches come from: synthetic renders on the fly, packs made by
`jmlr pack` (memory-mapped crops), or a challenge-layout folder on disk. Each source is an
endless iterator of batch dicts (``jmlr.data.datasets`` describes their keys)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from jmlr.data.datasets import AugmentConfig, ChallengeDataset, infinite, load_challenge_samples, make_loader
from jmlr.data.packed import PackedCrops
from jmlr.facemodel.topology import Topology

__all__ = ["synthetic_source", "packed_source", "disk_source"]


class _StreamWorkers(torch.utils.data.IterableDataset):
    """SyntheticCropStream batches rendered on the CPU in DataLoader worker processes
    (each worker its own seed), so rendering overlaps training."""

    def __init__(self, kwargs: dict, facemodel_path: str | None, topology_path: str, seed: int):
        self.kwargs, self.facemodel_path, self.topology_path, self.seed = kwargs, facemodel_path, topology_path, seed

    def __iter__(self):
        from jmlr.facemodel import FaceModel
        from jmlr.synth.stream import SyntheticCropStream

        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        stream = SyntheticCropStream(FaceModel.load(self.facemodel_path), Topology.load(self.topology_path),
                                     device="cpu", seed=self.seed * 7919 + wid, **self.kwargs)
        for b in stream:
            yield {k: v for k, v in b.items() if k != "mask"}


def synthetic_source(cfg: dict, topology: Topology, topology_path: Path, size: int, batch: int,
                     seed: int, device: torch.device) -> Iterator[dict]:
    """Endless batches of ``jmlr.synth.stream.SyntheticCropStream``.

    ``data.synthetic_workers`` 0 renders in this process on the training ``device``;
    > 0 renders on the CPU in that many worker processes. The alignment jitter of
    ``data.augment.jitter`` is the stream's crop jitter. The face model is
    ``cfg["facemodel"]`` (default ``jmlr.paths.default_facemodel_path()``).
    """
    from jmlr.facemodel import FaceModel
    from jmlr.synth.stream import CropJitter, SyntheticCropStream

    jit = (cfg["data"].get("augment") or {}).get("jitter")
    jitter = (CropJitter(float(jit.get("scale", 0.0)), float(jit.get("rotate_deg", 0.0)), float(jit.get("shift", 0.0)))
              if jit else CropJitter.none())
    kwargs = {"size": size, "batch_size": batch, "jitter": jitter, **(cfg["data"].get("synthetic") or {})}
    workers = int(cfg["data"].get("synthetic_workers", 0) or 0)
    fm_path = cfg.get("facemodel")
    if workers > 0:
        ds = _StreamWorkers(kwargs, fm_path, str(topology_path), seed)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                             pin_memory=device.type == "cuda", persistent_workers=True)
        return iter(loader)
    stream = SyntheticCropStream(FaceModel.load(fm_path), topology, device=device, seed=seed, **kwargs)
    return iter(stream)


def packed_source(cfg: dict, topology: Topology, size: int, batch: int, seed: int,
                  rank: int, world: int, expression_names: tuple[str, ...] = ()) -> tuple[Iterator[dict], int]:
    """Endless augmented batches from pack folders (`jmlr.data.packed`); (iterator, size).
    With ``expression_names`` the batches carry the expression weights too."""
    data = cfg["data"]
    roots = data.get("packs") or ([data["root"]] if data.get("root") else None)
    if not roots:
        raise ValueError("data.source 'packed' needs data.packs (pack folders made by `jmlr pack`)")
    aug = AugmentConfig.from_dict(data.get("augment"))
    crops = PackedCrops(roots, size, jitter=aug.jitter, flip=aug.flip, color=aug.color,
                        flip_index=topology.flip_index, seed=seed, limit=data.get("limit"),
                        expression_names=expression_names)
    if crops.num_vertices != topology.num_vertices:
        raise ValueError(f"packs have {crops.num_vertices} vertices per face, the topology {topology.num_vertices}")
    return crops.batches(batch, rank=rank, world=world), len(crops)


def disk_source(cfg: dict, topology: Topology, size: int, batch: int, seed: int,
                distributed: bool) -> tuple[Iterator[dict], int]:
    """Endless batches from a challenge-layout folder; returns (iterator, dataset size)."""
    data = cfg["data"]
    if not data.get("root"):
        raise ValueError("data.source 'disk' needs data.root (a challenge-layout folder)")
    samples, K = load_challenge_samples(data["root"], data.get("lists"), topology.landmarks68)
    if len(samples) and np.asarray(samples[0].verts).shape[0] != topology.num_vertices:
        raise ValueError(f"data has {np.asarray(samples[0].verts).shape[0]} vertices per face, "
                         f"the topology {topology.num_vertices}")
    ds = ChallengeDataset(samples, K, size, task=cfg["task"],
                          augment=AugmentConfig.from_dict(data.get("augment")),
                          flip_index=topology.flip_index, seed=seed)
    loader = make_loader(ds, batch, shuffle=True, num_workers=int(data.get("num_workers", 2)),
                         seed=seed, drop_last=len(ds) >= batch, distributed=distributed)
    return infinite(loader), len(ds)

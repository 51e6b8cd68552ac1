"""Training/evaluation data sources.

- :class:`ChallengeDataset` — the WCPA challenge layout on disk (read with
  ``jmlr.synth.layout``): image -> 68-landmark alignment (optionally jittered) -> crop and
  targets, with flip and colour augmentation. A map-style ``torch.utils.data.Dataset``
  for ``DataLoader`` workers (pinned memory) and ``DistributedSampler``.
- :func:`synthetic_batches` — endless augmented batches from
  ``jmlr.synth.stream.SyntheticCropStream`` (rendered on the fly, no disk).

Every source yields the same batch dict (torch tensors):
``image`` (B, 3, S, S) uint8 or float in [0, 1] (crop, RGB), ``verts`` (B, N, 3) world m,
``points2d`` (B, N, 2) crop px, ``R_t`` (B, 4, 4), ``K`` (B, 3, 3), ``M`` (B, 2, 3);
the baseline tasks add ``whole`` (B, 3, S, S) (masked whole image) and ``pose6`` (B, 6).
Normalisation to the network's mean/std happens on the device (:func:`normalise_images`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from .align import AlignJitter, align_sample, masked_full_image
from .augment import color_jitter, color_jitter_batch, flip_batch, flip_expression, flip_sample


@dataclass
class AugmentConfig:
    """Train-time augmentation. ``jitter`` None disables alignment jitter; ``flip`` is the
    flip probability; ``color`` the brightness/contrast/saturation strength (0 = off)."""

    jitter: AlignJitter | None = field(default_factory=AlignJitter)
    flip: float = 0.5
    color: float = 0.2

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        d = dict(d or {})
        jit = d.pop("jitter", {"scale": 0.05, "rotate_deg": 5.0, "shift": 0.03})
        return cls(jitter=AlignJitter.from_dict(jit), flip=float(d.pop("flip", 0.5)),
                   color=float(d.pop("color", 0.2)), **d)

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(jitter=None, flip=0.0, color=0.0)


def read_image_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an image file (raises FileNotFoundError)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def list_rows(root: str | Path, lists: Sequence[str | Path] | None = None) -> list[tuple[str, str, str]]:
    """Rows (subject, action, img_id) of the given list CSVs (default every CSV in
    ``root/list``, sorted by name), deduplicated in first-seen order."""
    from jmlr.synth import layout

    if lists:
        files = [str(p) for p in lists]
    else:
        files = sorted(str(p) for p in (Path(root) / "list").glob("*.csv"))
        if not files:
            raise FileNotFoundError(f"no list CSVs in {Path(root) / 'list'}")
    seen: dict[tuple[str, str, str], None] = {}
    for f in files:
        for row in layout.read_list(root, f):
            seen.setdefault(tuple(row), None)
    return list(seen)


def load_challenge_samples(root: str | Path, lists: Sequence[str | Path] | None = None,
                           landmarks68_index: np.ndarray | None = None):
    """(samples, K): the ``ChallengeSample`` records of ``root`` (rows of :func:`list_rows`)
    and the intrinsics ``K`` (3, 3) of the data.

    Samples without a 68-landmark file (the real challenge data) get the projections of
    ``verts[landmarks68_index]`` when that index is given, else a ``FileNotFoundError``.
    """
    from jmlr.geometry.camera import project_points
    from jmlr.synth import layout

    K = layout.read_intrinsics(root)
    samples = [layout.load_sample(root, *row) for row in list_rows(root, lists)]
    for s in samples:
        if s.landmarks68 is None:
            if landmarks68_index is None:
                raise FileNotFoundError(f"{s.image_path}: no 68-landmark file and no topology landmark index")
            s.landmarks68 = project_points(np.asarray(s.verts, np.float64)[np.asarray(landmarks68_index)],
                                           np.asarray(s.R_t, np.float64), K).astype(np.float32)
    return samples, K


def _hwc_to_chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


class ChallengeDataset(torch.utils.data.Dataset):
    """Aligned crops and targets of challenge-layout samples.

    Args:
        samples: ``ChallengeSample`` records (``image_path``, ``verts`` (N, 3) m, ``R_t``
            (4, 4), ``landmarks68`` (68, 2) px, ...).
        K: (3, 3) intrinsics of the images.
        size: crop side S.
        task: ``jmlr`` | ``baseline_a`` | ``baseline_b`` (baselines add ``whole``, ``pose6``).
        augment: :class:`AugmentConfig`, or None for evaluation (deterministic).
        flip_index: (N,) mirror map of the topology (needed when ``augment.flip`` > 0).
        seed: base seed; each item draws from (seed, index, torch's worker/epoch seed).

    Item: dict of tensors as the module docstring, unbatched, ``image`` uint8 (3, S, S),
    plus ``index`` (int64).
    """

    def __init__(self, samples: Sequence, K: np.ndarray, size: int, task: str = "jmlr",
                 augment: AugmentConfig | None = None, flip_index: np.ndarray | None = None,
                 seed: int = 0, mask_dilate: float = 0.1) -> None:
        self.samples = list(samples)
        self.K = np.asarray(K, np.float64)
        self.size = int(size)
        self.task = task
        self.augment = augment
        if augment is not None and augment.flip > 0 and flip_index is None:
            raise ValueError("flip augmentation needs the topology's flip_index")
        self.flip_index = None if flip_index is None else np.asarray(flip_index)
        self.seed = int(seed)
        self.mask_dilate = float(mask_dilate)
        from jmlr.models.tasks import get_task

        # Tasks that regress the pose see the masked whole image and learn pose6.
        self.whole_and_pose = not get_task(task).pose_by_pnp

    def __len__(self) -> int:
        return len(self.samples)

    def _rng(self, index: int) -> np.random.Generator:
        # torch.initial_seed() differs per worker and per epoch, so draws do too.
        return np.random.default_rng([self.seed, index, torch.initial_seed() % (2**32)])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        image = read_image_rgb(s.image_path)
        aug = self.augment
        rng = self._rng(index) if aug is not None else None
        out = align_sample(image, s.landmarks68, s.verts, s.R_t, self.K, self.size,
                           rng=rng, jitter=aug.jitter if aug is not None else None)
        lm = np.asarray(s.landmarks68, np.float32)
        flipped = aug is not None and aug.flip > 0 and rng.random() < aug.flip
        if flipped:
            out["landmarks68"] = lm
            out = flip_sample(out, self.flip_index, image_width=image.shape[1])
            lm = out.pop("landmarks68")
        if aug is not None and aug.color > 0:
            out["image"] = color_jitter(out["image"], rng, aug.color, aug.color, aug.color)
        item = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                for k, v in out.items() if k != "image"}
        item["image"] = _hwc_to_chw(out["image"])
        item["index"] = torch.tensor(index, dtype=torch.int64)
        if self.whole_and_pose:
            from jmlr.models.baselines import encode_pose

            full = image[:, ::-1] if flipped else image
            whole = masked_full_image(np.ascontiguousarray(full), lm, self.size, self.mask_dilate)
            if aug is not None and aug.color > 0:
                whole = color_jitter(whole, rng, aug.color, aug.color, aug.color)
            item["whole"] = _hwc_to_chw(whole)
            item["pose6"] = torch.from_numpy(encode_pose(out["R_t"]))
        return item


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int, shuffle: bool, num_workers: int = 2,
                seed: int = 0, drop_last: bool = True, distributed: bool = False,
                pin_memory: bool | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader with worker processes and pinned memory (on CUDA hosts), and a
    ``DistributedSampler`` when ``distributed`` (call ``loader.sampler.set_epoch``)."""
    sampler = None
    if distributed:
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=num_workers, pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last, persistent_workers=num_workers > 0, generator=g,
    )


def infinite(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    """Cycle a loader forever, advancing a DistributedSampler's epoch each pass."""
    epoch = 0
    while True:
        if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
            loader.sampler.set_epoch(epoch)
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("data loader is empty (fewer samples than one batch?)")
        epoch += 1


def augment_batch(batch: dict, augment: AugmentConfig, flip_index: torch.Tensor,
                  generator: torch.Generator, expression_flip_index: torch.Tensor | None = None) -> dict:
    """Flip and colour-jitter a streamed batch in place of the per-sample path (torch).

    ``image`` must be float in [0, 1]. Alignment jitter is the stream's own job. A batch
    with ``expression`` weights needs ``expression_flip_index`` to flip them too.
    """
    batch = dict(batch)
    B = batch["image"].shape[0]
    if augment.flip > 0:
        mask = torch.rand(B, generator=generator) < augment.flip
        mask = mask.to(batch["image"].device)
        batch["image"], batch["points2d"], batch["verts"] = flip_batch(
            batch["image"], batch["points2d"], batch["verts"], flip_index, mask)
        if "expression" in batch:
            if expression_flip_index is None:
                raise ValueError("flipping a batch with expression weights needs expression_flip_index")
            batch["expression"] = flip_expression(batch["expression"], expression_flip_index, mask)
    if augment.color > 0:
        batch["image"] = color_jitter_batch(batch["image"], generator, augment.color, augment.color, augment.color)
    return batch


def normalise_images(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, S, S) uint8 [0, 255] or float [0, 1] -> float ``(x - mean) / std``."""
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s

"""Packed training crops: big synthetic sets read without decoding.

A pack is a folder of chunks. Each chunk is rendered by one process from one recorded
seed and holds plain ``.npy`` arrays, memory-mapped at training time:

==============  =====================  ====================================================
file            shape, dtype           meaning
==============  =====================  ====================================================
images.npy      (n, S0, S0, 3) uint8   RGB crops, the face aligned with a margin (zoom)
verts.npy       (n, N, 3) float16      world (head-frame) vertices, metres (0.06 mm steps)
points2d.npy    (n, N, 2) float32      their projections in the stored crop, px
M.npy           (n, 2, 3) float32      image px -> stored-crop px (what was rendered)
M_align.npy     (n, 2, 3) float32      image px -> crop px of the exact 5-point alignment
                                       at size S0 (no zoom): the JMLR crop of the sample
R_t.npy         (n, 4, 4) float32      row-vector world -> OpenGL camera
K.npy           (n, 3, 3) float32      intrinsics of the full frame
identity.npy    (n, K) float16         identity weights of the face model
expression.npy  (n, E) float16         expression weights (ARKit-named blendshapes)
chunk.json                             seed, count, renderer, seconds
==============  =====================  ====================================================

plus ``pack.json`` at the top (format version, S0, zoom, N, the generator's settings).
A chunk is written to a temporary folder and renamed when complete, so an interrupted
``jmlr pack`` resumes where it stopped and a reader never sees half a chunk.

Reading (:class:`PackedCrops`) re-crops every sample at the training size ``S`` with a
fresh alignment jitter by one ``cv2.warpAffine`` of the small stored crop (the margin
keeps jittered crops inside the rendered area), then flips and colour-jitters the batch
in torch. The batch dict is the one every source of ``jmlr.data.datasets`` yields.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from jmlr.geometry.crop import apply_affine, compose_affine, crop_transform, invert_affine, landmarks5_from_68

from .align import AlignJitter

__all__ = ["PACK_FORMAT", "PackSpec", "write_chunk", "generate_pack", "PackedCrops", "read_pack_info"]

PACK_FORMAT = "jmlr-pack-v1"
_ARRAYS = ("images", "verts", "points2d", "M", "M_align", "R_t", "K", "identity", "expression")


@dataclass(frozen=True)
class PackSpec:
    """What a pack holds: ``images`` crops of side ``size`` (S0), the aligned face scaled
    by ``zoom`` about the crop centre, in chunks of ``chunk_size`` from ``seed``."""

    images: int
    size: int = 160
    zoom: float = 0.8
    chunk_size: int = 2000
    seed: int = 1
    batch: int = 16
    effects: bool = True

    @property
    def num_chunks(self) -> int:
        return -(-self.images // self.chunk_size)

    def chunk_seed(self, index: int) -> int:
        # Distinct, recorded, and independent of how many chunks a run asks for.
        return int(self.seed) * 1_000_003 + int(index)

    def chunk_count(self, index: int) -> int:
        return min(self.chunk_size, self.images - index * self.chunk_size)


def _chunk_name(index: int) -> str:
    return f"chunk_{index:05d}"


def write_chunk(root: str | Path, spec: PackSpec, index: int, generator, progress=None) -> Path:
    """Render chunk ``index`` of ``spec`` with a `jmlr.synth.scene.SyntheticFaceGenerator`
    and write it atomically. Returns the chunk folder (existing ones are kept as they are).
    """
    from jmlr.synth.stream import CropJitter, SyntheticCropStream

    root = Path(root)
    final = root / _chunk_name(index)
    if (final / "chunk.json").is_file():
        return final
    n = spec.chunk_count(index)
    S = int(spec.size)
    t0 = time.perf_counter()
    stream = SyntheticCropStream(generator.facemodel, generator.topology, size=S, batch_size=spec.batch,
                                 seed=spec.chunk_seed(index), jitter=CropJitter.none(), effects=spec.effects,
                                 generator=generator, zoom=spec.zoom)
    N = generator.topology.num_vertices
    lm68 = np.asarray(generator.topology.landmarks68)
    out = {"images": np.empty((n, S, S, 3), np.uint8), "verts": np.empty((n, N, 3), np.float16),
           "points2d": np.empty((n, N, 2), np.float32), "M": np.empty((n, 2, 3), np.float32),
           "M_align": np.empty((n, 2, 3), np.float32), "R_t": np.empty((n, 4, 4), np.float32),
           "K": np.empty((n, 3, 3), np.float32)}
    ids, exprs = [], []
    done = 0
    while done < n:
        # Draw the scene parameters through the stream so that they are recorded too.
        b = stream.next_batch(return_params=True)
        params = b.pop("params")
        take = min(len(b["image"]), n - done)
        sl = slice(done, done + take)
        img = b["image"][:take].permute(0, 2, 3, 1).mul(255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        out["images"][sl] = img
        out["verts"][sl] = b["verts"][:take].numpy().astype(np.float16)
        out["points2d"][sl] = b["points2d"][:take].numpy()
        M = b["M"][:take].numpy().astype(np.float64)
        out["M"][sl] = M
        # The 5 points in the image, back from the stored crop, give the exact alignment.
        lm_img = apply_affine(invert_affine(M), b["points2d"][:take].numpy().astype(np.float64)[:, lm68])
        out["M_align"][sl] = crop_transform(landmarks5_from_68(lm_img), S)
        out["R_t"][sl] = b["R_t"][:take].numpy()
        out["K"][sl] = b["K"][:take].numpy()
        ids.append(params.identity[:take])
        exprs.append(params.expression[:take])
        done += take
        if progress is not None:
            progress(take)
    out["identity"] = np.concatenate(ids).astype(np.float16)
    out["expression"] = np.concatenate(exprs).astype(np.float16)
    tmp = root / f".{_chunk_name(index)}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for k, v in out.items():
        np.save(tmp / f"{k}.npy", v)
    (tmp / "chunk.json").write_text(json.dumps({
        "index": index, "seed": spec.chunk_seed(index), "count": n, "seconds": time.perf_counter() - t0,
        "renderer": getattr(generator, "renderer_name", "torch")}, indent=1), "utf-8")
    os.replace(tmp, final)
    return final


def _scene_settings() -> dict:
    """The scene generator's head and world probabilities (``$JMLR_SYNTH_HEADS``,
    ``$JMLR_SYNTH_WORLD``, which the worker processes inherit), recorded in ``pack.json``."""
    from jmlr.synth.backgrounds import photo_backgrounds
    from jmlr.synth.heads import HeadConfig
    from jmlr.synth.world import WorldConfig

    world = WorldConfig.from_env()
    photos = photo_backgrounds() if world.photo_background > 0 else None
    return {"heads": dataclasses.asdict(HeadConfig.from_env()), "world": dataclasses.asdict(world),
            # which photographs the backgrounds were cut from (those installed when it ran)
            "background_photos": [] if photos is None else [Path(n).name for n in photos.names]}


def _pack_meta(spec: PackSpec, topology, generator_settings: dict) -> dict:
    return {"format": PACK_FORMAT, "images": spec.images, "size": spec.size, "zoom": spec.zoom,
            "chunk_size": spec.chunk_size, "seed": spec.seed, "batch": spec.batch, "effects": spec.effects,
            "num_vertices": int(topology.num_vertices), "generator": generator_settings,
            "chunks": [_chunk_name(i) for i in range(spec.num_chunks)]}


def _worker(args) -> list[int]:
    root, spec, indices, facemodel_path, topology_path, threads, queue = args
    from jmlr.facemodel import FaceModel, Topology
    from jmlr.synth.scene import SyntheticFaceGenerator, set_worker_threads

    set_worker_threads(threads)  # before the generator makes its GL context

    generator = SyntheticFaceGenerator(FaceModel.load(facemodel_path), Topology.load(topology_path))
    for i in indices:
        write_chunk(root, spec, i, generator, progress=(lambda k: queue.put(k)) if queue is not None else None)
    return list(indices)


def generate_pack(root: str | Path, spec: PackSpec, facemodel_path: str | Path | None = None,
                  topology_path: str | Path | None = None, workers: int = 1, threads: int = 1,
                  progress: bool = True) -> Path:
    """Render every missing chunk of ``spec`` into ``root`` with ``workers`` processes.

    Rasterization is mostly single-threaded, so processes, not threads, scale it. The
    same spec gives the same bytes whatever ``workers`` is (each chunk has its own seed).
    """
    import multiprocessing as mp

    from jmlr.facemodel import Topology
    from jmlr.facemodel.topology import default_topology_path
    from jmlr.paths import default_facemodel_path

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    topology_path = Path(topology_path) if topology_path else default_topology_path()
    facemodel_path = Path(facemodel_path) if facemodel_path else default_facemodel_path()
    topology = Topology.load(topology_path)
    meta_path = root / "pack.json"
    meta = _pack_meta(spec, topology, {"facemodel": facemodel_path.name, "topology": topology_path.name,
                                       **_scene_settings()})
    if meta_path.is_file():
        old = json.loads(meta_path.read_text("utf-8"))
        for key in ("size", "zoom", "chunk_size", "seed", "batch", "effects", "num_vertices"):
            if old.get(key) != meta[key]:
                raise ValueError(f"{root} holds a pack with {key}={old.get(key)!r}, not {meta[key]!r}: "
                                 "use another folder")
        for key in ("world", "heads"):  # packs from before these were recorded are trusted
            if key in old.get("generator", {}) and old["generator"][key] != meta["generator"][key]:
                raise ValueError(f"{root} holds a pack rendered with other {key} settings "
                                 f"({old['generator'][key]} != {meta['generator'][key]}): use another folder")
    meta_path.write_text(json.dumps(meta, indent=1), "utf-8")
    todo = [i for i in range(spec.num_chunks) if not (root / _chunk_name(i) / "chunk.json").is_file()]
    remaining = sum(spec.chunk_count(i) for i in todo)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=spec.images, initial=spec.images - remaining, desc="pack", unit="img", dynamic_ncols=True)
    try:
        if workers <= 1:
            _worker((root, spec, todo, facemodel_path, topology_path, threads, None) if bar is None else
                    (root, spec, todo, facemodel_path, topology_path, threads, _BarQueue(bar)))
        elif todo:
            ctx = mp.get_context("spawn")
            with ctx.Manager() as manager:
                queue = manager.Queue()
                shards = [todo[w::workers] for w in range(workers)]
                with ctx.Pool(workers) as pool:
                    result = pool.map_async(_worker, [(root, spec, s, facemodel_path, topology_path, threads, queue)
                                                      for s in shards if s])
                    while not result.ready():
                        result.wait(0.5)
                        while not queue.empty():
                            k = queue.get()
                            if bar is not None:
                                bar.update(k)
                    result.get()
    finally:
        if bar is not None:
            bar.close()
    return root


class _BarQueue:
    def __init__(self, bar):
        self.bar = bar

    def put(self, k: int) -> None:
        self.bar.update(k)


def read_pack_info(root: str | Path) -> dict:
    """``pack.json`` of a pack, with ``complete``: the chunk folders that are finished."""
    root = Path(root)
    meta = json.loads((root / "pack.json").read_text("utf-8"))
    if meta.get("format") != PACK_FORMAT:
        raise ValueError(f"{root}: not a {PACK_FORMAT} pack (format {meta.get('format')!r})")
    meta["complete"] = [c for c in meta["chunks"] if (root / c / "chunk.json").is_file()]
    return meta


def _similarity_about_origin(scale: float) -> np.ndarray:
    return np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])


class PackedCrops:
    """Random-access view of one or more packs, and augmented training batches.

    Args:
        roots: pack folders (their finished chunks are used; all must share N; their S0 may differ).
        size: training crop side S.
        jitter: alignment jitter (scale, rotation, shift as a fraction of S) or None.
        flip: flip probability; needs ``flip_index``.
        color: brightness/contrast/saturation strength.
        flip_index: (N,) mirror map of the topology.
        seed: seeds the order and the augmentation.
        limit: use only the first ``limit`` samples (quick runs, tests).
        expression_names: the face model's expression names, in the packs' column order;
            given, samples carry ``expression`` (E,) weights, and flipping swaps left and
            right shapes by these names.

    ``sample(i, rng)`` gives one aligned crop and its targets; ``batches(B)`` endless
    shuffled batches (epoch after epoch, a new permutation each time).
    """

    def __init__(self, roots: str | Path | Sequence[str | Path], size: int, jitter: AlignJitter | None = None,
                 flip: float = 0.0, color: float = 0.0, flip_index: np.ndarray | None = None, seed: int = 0,
                 limit: int | None = None, expression_names: Sequence[str] | None = None) -> None:
        from jmlr.facemodel.blendshapes import expression_flip_index

        roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        if not roots:
            raise ValueError("no pack folders given")
        self.size = int(size)
        self.jitter = jitter
        self.flip = float(flip)
        self.color = float(color)
        if self.flip > 0 and flip_index is None:
            raise ValueError("flip augmentation needs the topology's flip_index")
        self.flip_index = None if flip_index is None else torch.as_tensor(np.asarray(flip_index), dtype=torch.long)
        self.seed = int(seed)
        self.roots = [Path(r) for r in roots]
        self.limit = limit
        self.chunks: list[dict[str, np.ndarray]] = []
        self._loaded: set[Path] = set()
        self.num_vertices: int = 0
        self.refresh()
        if not self.chunks:
            raise ValueError(f"no finished chunk in {roots}")
        self.expression_names = tuple(str(n) for n in expression_names or ())
        self.expression_flip_index: torch.Tensor | None = None
        if self.expression_names:
            stored = int(self.chunks[0]["expression"].shape[1])
            if stored != len(self.expression_names):
                raise ValueError(f"packs store {stored} expression weights, {len(self.expression_names)} names given")
            self.expression_flip_index = torch.from_numpy(expression_flip_index(self.expression_names))

    def refresh(self) -> int:
        """Add the chunks finished since the last call (a pack may still be rendering
        while a run trains on it). Returns the number of samples now available."""
        for root in self.roots:
            info = read_pack_info(root)
            # Packs of different stored sizes mix (each chunk's crops are warped from their own
            # S0); their topologies must not.
            n = int(info["num_vertices"])
            if not self.num_vertices:
                self.num_vertices = n
            elif n != self.num_vertices:
                raise ValueError(f"{root}: {n} vertices, the first pack has {self.num_vertices}")
            for c in info["complete"]:
                folder = root / c
                if folder not in self._loaded:
                    self.chunks.append({k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in _ARRAYS})
                    self._loaded.add(folder)
        counts = np.array([len(c["images"]) for c in self.chunks], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        total = int(self._starts[-1])
        self._len = total if self.limit is None else min(int(self.limit), total)
        return self._len

    def __len__(self) -> int:
        return self._len

    def _locate(self, i: int) -> tuple[dict[str, np.ndarray], int]:
        c = int(np.searchsorted(self._starts, i, side="right") - 1)
        return self.chunks[c], i - int(self._starts[c])

    def stored(self, i: int, key: str) -> np.ndarray:
        """Sample ``i``'s stored array ``key`` as it is in the pack (one of the files of the
        module docstring without ``.npy``: ``identity``, ``expression``, ``R_t``, ...)."""
        chunk, j = self._locate(i)
        return np.asarray(chunk[key][j])

    def crop_transform(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """A (2, 3): stored-crop px -> training-crop px (the exact JMLR alignment at S,
        then the jitter when ``rng`` is given)."""
        chunk, j = self._locate(i)
        stored_size = chunk["images"].shape[1]  # S0 of this chunk's pack
        # stored px -> image px -> aligned crop at S0 -> the template scaled to S.
        A = compose_affine(np.asarray(chunk["M_align"][j], np.float64),
                           invert_affine(np.asarray(chunk["M"][j], np.float64)))
        A = compose_affine(_similarity_about_origin(self.size / stored_size), A)
        if rng is not None and self.jitter is not None:
            A = compose_affine(self.jitter.sample(rng, self.size), A)
        return A

    def sample(self, i: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """One sample at the training size: ``image`` (S, S, 3) uint8, ``points2d`` (N, 2)
        crop px, ``verts`` (N, 3) float32 m, ``R_t``, ``K``, ``M`` (image px -> crop px), and
        ``expression`` (E,) float32 when the view has ``expression_names``."""
        chunk, j = self._locate(i)
        A = self.crop_transform(i, rng)
        image = cv2.warpAffine(np.asarray(chunk["images"][j]), A, (self.size, self.size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        extra = {"expression": np.asarray(chunk["expression"][j], np.float32)} if self.expression_names else {}
        return {**extra,
            "image": image,
            "points2d": apply_affine(A, np.asarray(chunk["points2d"][j], np.float64)).astype(np.float32),
            "verts": np.asarray(chunk["verts"][j], np.float32),
            "R_t": np.asarray(chunk["R_t"][j], np.float32),
            "K": np.asarray(chunk["K"][j], np.float32),
            "M": compose_affine(A, np.asarray(chunk["M"][j], np.float64)).astype(np.float32),
        }

    def collate(self, indices: Sequence[int], rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        """A batch dict (``image`` uint8 (B, 3, S, S), ``index`` (B,) int64, the rest float32)."""
        items = [self.sample(int(i), rng) for i in indices]
        batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
        batch["image"] = batch["image"].permute(0, 3, 1, 2).contiguous()
        batch["index"] = torch.as_tensor(np.asarray(indices, np.int64))
        return batch

    def batches(self, batch_size: int, shuffle: bool = True, augment: bool = True,
                rank: int = 0, world: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches; with ``augment`` the jitter, flip and colour are applied
        (``image`` then float in [0, 1]). ``rank``/``world`` split each epoch between
        processes."""
        from .datasets import AugmentConfig, augment_batch

        rng = np.random.default_rng([self.seed, rank])
        gen = torch.Generator().manual_seed(self.seed * 1000 + rank)
        aug = AugmentConfig(jitter=None, flip=self.flip, color=self.color)
        while True:
            n = self.refresh()
            order = rng.permutation(n) if shuffle else np.arange(n)
            order = order[rank::world]
            for s in range(0, len(order) - batch_size + 1, batch_size):
                b = self.collate(order[s:s + batch_size], rng if augment else None)
                if augment and (aug.flip > 0 or aug.color > 0):
                    b["image"] = b["image"].float().div_(255.0)
                    b = augment_batch(b, aug, self.flip_index, gen, self.expression_flip_index)
                yield b

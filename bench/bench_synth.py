"""Speed of the synthetic data generator, OpenGL vs PyTorch renderer (not a test).

Measures the whole crop pipeline, ``SyntheticCropStream.next_batch`` (sample a person,
expression and pose; render straight into the S x S crop; composite over a background;
camera effects with a JPEG round trip; tensors), at several crop sizes, with 1 and with
N worker processes, and the 800x800 full frame that ``jmlr synth`` writes (sample,
render, composite, effects, JPEG encode). Each worker is a fresh spawned process with
one thread (`set_worker_threads(1)`: torch, BLAS, OpenCV, no llvmpipe rasterizer
threads), like the training-set generator's workers.

Reported per configuration: crops/s (wall clock, all workers together) and CPU ms per
crop (process CPU time, llvmpipe's threads included, summed over workers). On a machine
shared with other jobs the wall figures drop and the CPU figures rise: compare rows of
one run, not runs.

    python bench/bench_synth.py --sizes 128 160 256 --renderers gl torch --procs 1 2 \\
        --batch 32 --batches 4 --full [--heads legacy default] [--markdown docs/bench_synth.md]

``--heads``: `jmlr.synth.heads.HeadConfig` specs to compare (``legacy``: the bald heads
of before; ``default``: hair, brows, eyes, skin detail, clothing...).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time


def _worker(args) -> tuple[int, float, float]:
    """Render ``batches`` batches after one warm-up batch; returns (crops, wall s, CPU s)."""
    kind, renderer, size, batch, batches, seed, facemodel, barrier, heads = args
    import numpy as np
    import torch

    from jmlr.facemodel import FaceModel, Topology
    from jmlr.synth.appearance import encode_jpeg
    from jmlr.synth.heads import HeadConfig
    from jmlr.synth.scene import SyntheticFaceGenerator, numpy_threads_like_torch, set_worker_threads
    from jmlr.synth.stream import SyntheticCropStream

    set_worker_threads(1)

    gen = SyntheticFaceGenerator(FaceModel.load(facemodel), Topology.load(), renderer=renderer,
                                 heads=HeadConfig.parse(heads))
    if kind == "crop":
        stream = SyntheticCropStream(None, None, size=size, batch_size=batch, seed=seed, generator=gen)
        step = stream.next_batch
    else:
        rng = np.random.default_rng(seed)

        def step():
            with numpy_threads_like_torch():
                params = gen.sample_params(rng, batch)
                out = gen.render(params, rng=rng)
                for im in gen.finish(out, rng, jpeg=False):
                    encode_jpeg(im, 90)

    with torch.no_grad():
        step()  # warm-up: GL context, shader compilation, caches
        if gen.renderer_name != renderer:
            raise RuntimeError(f"asked for {renderer}, rendering with {gen.renderer_name}")
        if barrier is not None:
            barrier.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(batches):
            step()
        return batch * batches, time.perf_counter() - t0, time.process_time() - c0


def measure(kind: str, renderer: str, size: int, procs: int, batch: int, batches: int,
            facemodel: str | None, heads: str = "default") -> tuple[float, float]:
    """(crops/s over all workers, CPU ms per crop) of ``procs`` concurrent workers."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(procs)
        with ctx.Pool(procs) as pool:
            res = pool.map(_worker, [(kind, renderer, size, batch, batches, 1000 + k, facemodel, barrier, heads)
                                     for k in range(procs)])
    n = sum(r[0] for r in res)
    return n / max(r[1] for r in res), 1000 * sum(r[2] for r in res) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 256])
    ap.add_argument("--renderers", nargs="+", default=["gl", "torch"], choices=["gl", "torch"])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=4, help="timed batches per worker")
    ap.add_argument("--full", action="store_true", help="also the 800x800 frames of `jmlr synth` (batch 8)")
    ap.add_argument("--facemodel", default=None)
    ap.add_argument("--heads", nargs="+", default=["default"],
                    help="head element configs (jmlr.synth.heads.HeadConfig.parse), e.g. legacy default")
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"# {cpu}, {os.cpu_count()} CPUs, 1 thread per worker (set_worker_threads), "
          f"batch {args.batch} x {args.batches} per worker, {time.strftime('%Y-%m-%d %H:%M')}")
    rows = ["| pipeline | heads | renderer | processes | crops/s (wall) | CPU ms/crop |",
            "| --- | --- | --- | --- | --- | --- |"]
    print("\n".join(rows), flush=True)
    jobs = [("crop", s, args.batch, args.batches) for s in args.sizes]
    if args.full:
        jobs.append(("full", 800, 8, max(1, args.batches)))
    for kind, size, batch, batches in jobs:
        for renderer in args.renderers:
            for procs in args.procs:
                for heads in args.heads:
                    ips, cpu_ms = measure(kind, renderer, size, procs, batch, batches, args.facemodel, heads)
                    name = f"{size}x{size} crops" if kind == "crop" else "800x800 frames"
                    rows.append(f"| {name} | {heads} | {renderer} | {procs} | {ips:.1f} | {cpu_ms:.1f} |")
                    print(rows[-1], flush=True)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

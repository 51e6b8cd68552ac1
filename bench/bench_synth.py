"""Speed of the synthetic data generator (not a test).

Measures, per device:
  * full frames: 800x800 render + background + camera effects + JPEG encode (what
    ``jmlr synth`` does per image, without file writes), images/s;
  * crop stream: ``SyntheticCropStream`` batches at S x S, images/s;
and, on CPU, the CPU time per image (process time, so the figure is per core even
on a shared machine).

    python bench/bench_synth.py --threads 1 --batch 8 --iters 4 [--device cuda] [--markdown docs/bench_synth.md]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from jmlr.facemodel import FaceModel, Topology
from jmlr.synth.appearance import encode_jpeg
from jmlr.synth.scene import SyntheticFaceGenerator
from jmlr.synth.stream import SyntheticCropStream


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bench_full(gen, batch, iters, seed=0):
    rng = np.random.default_rng(seed)
    subjects = [gen.sample_subject(rng) for _ in range(batch)]

    def step():
        params = gen.sample_params(rng, batch, subjects=subjects)
        with torch.no_grad():
            out = gen.render(params, rng=rng)
        for im in gen.finish(out, rng, jpeg=False):
            encode_jpeg(im, 90)

    step()  # warm-up
    _sync(gen.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        step()
    _sync(gen.device)
    n = batch * iters
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n


def bench_stream(gen, size, batch, iters, seed=0):
    stream = SyntheticCropStream(None, None, size=size, batch_size=batch, seed=seed, generator=gen)
    with torch.no_grad():
        stream.next_batch()
        _sync(gen.device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(iters):
            stream.next_batch()
        _sync(gen.device)
    n = batch * iters
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop-batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--facemodel", default=None)
    ap.add_argument("--markdown", default=None, help="append a result row to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = SyntheticFaceGenerator(FaceModel.load(args.facemodel), Topology.load(), device=args.device)
    full_ips, full_cpu = bench_full(gen, args.batch, args.iters)
    crop_ips, crop_cpu = bench_stream(gen, args.size, args.crop_batch, args.iters)
    dev = torch.cuda.get_device_name() if gen.device.type == "cuda" else platform.processor() or platform.machine()
    row = (f"| {args.device} ({dev}) | {args.threads} | {full_ips:.2f} | {1000 * full_cpu:.0f} | "
           f"{crop_ips:.2f} | {1000 * crop_cpu:.0f} |")
    print("| device | torch threads | 800x800 images/s (wall) | CPU ms/image | "
          f"{args.size}x{args.size} crops/s (wall) | CPU ms/crop |")
    print(row)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(row + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

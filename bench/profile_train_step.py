"""Where one CPU training step goes: data, normalisation, forward, loss, backward, optimiser.

    python bench/profile_train_step.py --packs data/pack_v1 --threads 2 --steps 20 [--no-fused]
    python bench/profile_train_step.py --packs data/pack_v4 --candidates jmlr_mobilenetv2_centerface:128 \
        jmlr_mobilenetv2_centerface:128:stem,blocks.0,blocks.1,blocks.2 \
        jmlr_mobilenetv2_centerface:128:stem,blocks.0,blocks.1,blocks.2:bn

Each candidate (backbone, input size) is timed over ``--steps`` steps after 3 warm-up
steps, in this process, with ``--threads`` torch threads; the packed data path includes
jitter (cv2.warpAffine), flip and colour augmentation; the optimiser is the trainer's
(``make_optimizer``: AdamW, fused unless ``--no-fused``). A candidate's optional third field
lists parameter prefixes to freeze (the trainer's ``freeze``), and a fourth field ``bn`` puts
their BatchNorm in eval mode and folds it into the convolutions (the trainer's
``freeze_bn``). Prints a markdown table (ms per step and share) for docs/training.md. Run
it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch


def main() -> int:
    from jmlr.data.align import AlignJitter
    from jmlr.data.datasets import normalise_images
    from jmlr.data.packed import PackedCrops
    from jmlr.facemodel import Topology
    from jmlr.models import create_model
    from jmlr.models.loss import jmlr_loss, unique_edges
    from jmlr.train.trainer import (
        _param_groups,
        fold_frozen_batchnorm,
        freeze_batchnorm,
        freeze_parameters,
        make_optimizer,
        output_statistics,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packs", nargs="+", default=["data/pack_v1"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-fused", action="store_true", help="AdamW's per-tensor loop instead of the fused step")
    ap.add_argument("--candidates", nargs="*", default=["jmlr_mobilenetv2:128", "jmlr_mobilenetv2:96",
                                                         "jmlr_resnet18d:128", "jmlr_resnet18d:96"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    topo = Topology.load(None)
    edges = torch.from_numpy(unique_edges(topo.triangles))
    rows = []
    for cand in args.candidates:
        name, size, *frozen = cand.split(":")
        size = int(size)
        crops = PackedCrops(args.packs, size, jitter=AlignJitter(0.05, 5.0, 0.03), flip=0.5, color=0.2,
                            flip_index=topo.flip_index, seed=0)
        it = crops.batches(args.batch)
        net = create_model(name, topo.num_vertices, size).to(memory_format=torch.channels_last)
        b0 = next(it)
        from jmlr.models import encode_targets

        net.set_output_statistics(*output_statistics(encode_targets(b0["verts"], b0["points2d"], size),
                                                     topo.num_vertices))
        if frozen:
            freeze_parameters(net, frozen[0].split(","))
        opt = make_optimizer({"name": "adamw", "fused": not args.no_fused}, _param_groups(net, 0.05), 1e-4)
        norm = net.config["normalisation"]
        t: dict[str, float] = defaultdict(float)
        net.train()
        if frozen[1:] == ["bn"]:
            freeze_batchnorm(net, frozen[0].split(","))
            fold_frozen_batchnorm(net, frozen[0].split(","))
        elif frozen[1:]:
            raise SystemExit(f"{cand}: the fourth field can only be 'bn'")
        for step in range(args.steps + 3):
            marks = [time.perf_counter()]
            b = next(it)
            marks.append(time.perf_counter())
            x = normalise_images(b["image"], norm["mean"], norm["std"]).contiguous(memory_format=torch.channels_last)
            marks.append(time.perf_counter())
            out = net(x)
            marks.append(time.perf_counter())
            res = jmlr_loss(out, b["verts"], b["points2d"], edges, size, out_scale=net.out_scale)
            marks.append(time.perf_counter())
            opt.zero_grad(set_to_none=True)
            res["loss"].backward()
            marks.append(time.perf_counter())
            opt.step()
            marks.append(time.perf_counter())
            if step >= 3:
                for k, a, z in zip(("data", "normalise", "forward", "loss", "backward", "optimiser"), marks, marks[1:]):
                    t[k] += (z - a) * 1000 / args.steps
        total = sum(t.values())
        rows.append((cand, total, dict(t)))
        print(f"{cand}: {total:.0f} ms/step, {args.batch * 1000 / total:.1f} img/s, " +
              ", ".join(f"{k} {v:.0f} ms ({100 * v / total:.0f} %)" for k, v in t.items()), flush=True)
    keys = ["data", "normalise", "forward", "loss", "backward", "optimiser"]
    print("\n| network:size | img/s | ms/step | " + " | ".join(keys) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in keys) + " |")
    for cand, total, t in rows:
        print(f"| {cand} | {args.batch * 1000 / total:.1f} | {total:.0f} | " +
              " | ".join(f"{t[k]:.0f} ({100 * t[k] / total:.0f} %)" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

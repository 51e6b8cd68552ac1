"""How small CenterFace may see a face: recall and crop error against the face's size in
the detector's input (sizes `jmlr.detect.CENTERFACE_FACE_PX`).

    python bench/detect_scale.py --data data/synth_test --limit 120 [--json out.json]

For held-out renders (one face each, ground-truth 68 landmarks), the detector runs on
the frame downscaled so that the face (the box around its five points,
`jmlr.inference.bbox_around_landmarks`) is ``px`` pixels wide, for several ``px``, and at
full size. Per size: recall, the detector's time, and how far its five points move the
JMLR crop from the ground truth's (as bench/detector_alignment.py: relative scale,
rotation, centre shift as a fraction of the crop).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    from detector_alignment import jitter_of, match_detection

    from jmlr.data.datasets import list_rows
    from jmlr.detect import CENTERFACE_FACE_PX, CenterFaceDetector
    from jmlr.geometry.crop import crop_transform, landmarks5_from_68
    from jmlr.inference import bbox_around_landmarks
    from jmlr.synth import layout

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/synth_test")
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--size", type=int, default=128, help="JMLR crop size the errors are measured at")
    ap.add_argument("--px", type=float, nargs="+", default=[16, 24, 32, 48, 64])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = list_rows(args.data)
    rows = [rows[i] for i in np.linspace(0, len(rows) - 1, min(args.limit, len(rows))).astype(int)]
    samples = []
    for row in rows:
        s = layout.load_sample(args.data, *row)
        gt5 = landmarks5_from_68(np.asarray(s.landmarks68, np.float64))
        b = bbox_around_landmarks(gt5)
        samples.append((s.load_image(), gt5, float(b[2] - b[0])))
    full = CenterFaceDetector(max_side=10_000)
    out = {"images": len(samples), "face_px_full": float(np.median([w for _, _, w in samples])), "by_px": {}}
    for px in [*args.px, None]:
        found, ms, scale, rot, shift = 0, [], [], [], []
        for rgb, gt5, face_w in samples:
            det_ = (
                full
                if px is None
                else CenterFaceDetector(max_side=10_000, min_face_px=face_w * CENTERFACE_FACE_PX / px)
            )
            det_.session = full.session  # one session: only the input size differs
            t = time.perf_counter()
            dets = det_.detect(rgb)
            ms.append((time.perf_counter() - t) * 1000)
            det = match_detection(dets, gt5)
            if det is None:
                continue
            found += 1
            ds, dr, dt = jitter_of(
                crop_transform(np.asarray(det.landmarks5, np.float64), args.size),
                crop_transform(gt5, args.size),
                args.size,
            )
            scale.append(abs(ds))
            rot.append(abs(dr))
            shift.append(dt)
        q = lambda a: {p: round(float(np.percentile(a, p)), 4) for p in (50, 90)} if a else None  # noqa: E731
        key = "full" if px is None else f"{px:g}"
        out["by_px"][key] = {
            "recall": round(found / len(samples), 4),
            "detect_ms_median": round(float(np.median(ms)), 2),
            "abs_scale_change": q(scale),
            "abs_rotation_deg": q(rot),
            "centre_shift_fraction": q(shift),
        }
        print(key, json.dumps(out["by_px"][key]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

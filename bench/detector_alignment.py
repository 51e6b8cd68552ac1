"""How far the detector's 5 points move the JMLR crop from the ground-truth alignment.

    python bench/detector_alignment.py --data data/synth_test [--limit 400] [--json out.json]

For every image of a challenge-layout set, CenterFace (as the service runs it) finds the
face; its 5 points and the ground-truth 5 points (from the 68 landmarks) each give a
crop transform (`jmlr.geometry.crop.crop_transform`). The similarity between the two
crops, expressed as training-jitter parameters (relative scale, in-plane rotation,
shift of the crop centre as a fraction of the crop), is what the training augmentation
has to cover (`data.augment.jitter`, uniform ranges). Prints recall and percentiles.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def jitter_of(M_det: np.ndarray, M_gt: np.ndarray, size: int) -> tuple[float, float, float]:
    """(relative scale - 1, rotation deg, centre shift / size) of the crop M_det relative
    to M_gt: the similarity D with M_det = D o M_gt, measured about the crop centre."""
    from jmlr.geometry.crop import compose_affine, invert_affine

    D = compose_affine(M_det, invert_affine(M_gt))
    s = float(np.sqrt(abs(np.linalg.det(D[:, :2]))))
    rot = float(np.degrees(np.arctan2(D[1, 0], D[0, 0])))
    c = np.array([(size - 1) / 2.0] * 2)
    shift = float(np.linalg.norm(D[:, :2] @ c + D[:, 2] - c) / size)
    return s - 1.0, rot, shift


def match_detection(dets: list, gt5: np.ndarray):
    """The detection of an image with one face whose 5 points are nearest the ground truth
    ``gt5`` (5, 2), or None when even that one is another face or a false positive."""
    if not dets:
        return None
    det = min(dets, key=lambda d: float(np.abs(np.asarray(d.landmarks5) - gt5).mean()))
    if np.abs(np.asarray(det.landmarks5) - gt5).mean() > 0.5 * np.linalg.norm(gt5[0] - gt5[1]) + 20:
        return None
    return det


def main() -> int:
    from jmlr.data.datasets import list_rows
    from jmlr.detect import create_detector
    from jmlr.geometry.crop import crop_transform, landmarks5_from_68
    from jmlr.synth import layout

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/synth_test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    detector = create_detector("centerface")
    rows = list_rows(args.data)[: args.limit]
    found, scale, rot, shift = 0, [], [], []
    for row in rows:
        s = layout.load_sample(args.data, *row)
        rgb = s.load_image()
        gt5 = landmarks5_from_68(np.asarray(s.landmarks68, np.float64))
        det = match_detection(detector.detect(rgb), gt5)
        if det is None:
            continue
        found += 1
        ds, dr, dt = jitter_of(crop_transform(np.asarray(det.landmarks5, np.float64), args.size),
                               crop_transform(gt5, args.size), args.size)
        scale.append(abs(ds))
        rot.append(abs(dr))
        shift.append(dt)
    q = lambda a: {p: round(float(np.percentile(a, p)), 4) for p in (50, 90, 95, 99)} if a else None  # noqa: E731
    out = {"images": len(rows), "detected": found, "recall": round(found / max(1, len(rows)), 4),
           "abs_scale_change": q(scale), "abs_rotation_deg": q(rot), "centre_shift_fraction": q(shift)}
    print(json.dumps(out, indent=1))
    if args.json:
        open(args.json, "w").write(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

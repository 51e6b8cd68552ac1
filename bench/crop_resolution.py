"""How much the held-out score owes to the crops' sharpness.

`jmlr eval` crops each held-out image at the model's input size S straight from the
800x800 frame: sharp crops. The packs store the face at ``zoom`` of their ``size``
(0.7 x 160 = 112 px for the JMLR crop), so every training crop at S = 128 is warped up
from 112 px: softer than what the model is tested on. This bench scores a model with
every crop made as the packs make it: the JMLR crop at ``ratio`` x S px, warped up to S
(one bilinear ``warpAffine`` each, as `jmlr.data.packed` does), the crop transform
unchanged. ``--ratio 1`` is `jmlr eval` itself (a check).

    python bench/crop_resolution.py --model model_store/jmlr_mnv2_128_cpu --data data/synth_test \
        --ratio 0.875 [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import jmlr.eval.evaluate as evaluate_module
from jmlr.geometry.crop import compose_affine, invert_affine, warp_crop
from jmlr.inference.crops import FaceCrops, crop_faces

KEYS = ("score", "vertex_mean_mm", "mae_r_deg", "mae_t_mm", "size_error_pct")


def soft_crop_faces(ratio: float):
    """`crop_faces` with each crop made at ``ratio`` x its size and warped up to it."""

    def crop(image: np.ndarray, landmarks5, size: int, reduction: int = 1) -> FaceCrops:
        small = crop_faces(image, landmarks5, max(8, round(size * ratio)), reduction)
        Ms = crop_faces(image[:1, :1], landmarks5, size).Ms  # the transforms only
        crops = [warp_crop(c, compose_affine(M, invert_affine(m)), size) for c, M, m in zip(small.crops, Ms, small.Ms)]
        return FaceCrops(Ms, np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8))

    return crop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--ratio", type=float, default=0.875, help="crop at this fraction of the input size (0, 1]")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not 0 < args.ratio <= 1:
        ap.error(f"--ratio must lie in (0, 1], not {args.ratio}")
    # The evaluation's own crop function, swapped for this run: everything else is jmlr eval's.
    evaluate_module.crop_faces = soft_crop_faces(args.ratio)  # type: ignore[assignment]
    result = evaluate_module.evaluate([args.model], args.data, limit=args.limit, progress=True)
    row = {"ratio": args.ratio, "model": args.model, **{k: result[k] for k in KEYS}}
    print(json.dumps(row))
    if args.json is not None:
        args.json.write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

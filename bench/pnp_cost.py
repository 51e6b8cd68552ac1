"""Cost and accuracy of the PnP step per Levenberg-Marquardt budget (not a test).

The service poses every face with `jmlr.geometry.pnp.solve_pnp`: SQPnP, then
``cv2.solvePnPRefineLM`` (OpenCV's default stop: 20 iterations or a step below
FLT_EPSILON). This measures, on faces with known pose, what the refinement buys and
what it costs per LM budget: the time of `solve_pnp` per face (one thread) and the pose
error against the truth.

Faces: the default topology's mean shape, with network-like errors added: each vertex
moved by Gaussian noise of ``--vertex-mm`` per axis and each 2D point by ``--point-px``
(the shipped model's held-out errors are about 3.5 mm and 1.4 px at 96 px, about 5 px
in an 800 px WCPA frame); poses as WCPA's: yaw/pitch/roll within ±60/±30/±20 degrees at
0.4-1.2 m, the WCPA camera (800x800, fx 629.77).

Also per stride (`solve_pnp(..., stride=k)`: SQPnP and LM on every k-th point, the
reprojection on all of them; the service solves with `jmlr.inference.poses.PNP_STRIDE`),
and with ``--model`` the held-out score of a model per stride (`jmlr eval`'s code).

    python bench/pnp_cost.py --faces 400 [--model MODEL --data data/synth_test] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time

import cv2
import numpy as np
from bench_report import publish  # beside this script

from jmlr.facemodel.topology import Topology
from jmlr.geometry.intrinsics import Intrinsics
from jmlr.geometry.pnp import solve_pnp
from jmlr.geometry.rotation import euler_to_matrix, geodesic_angle_deg

WCPA = Intrinsics(629.77, 629.77, 400.0, 400.0, 800, 800)


def faces(n: int, vertex_mm: float, point_px: float, seed: int):
    """n (true R_cv, t_cv, noisy vertices, noisy points)."""
    rng = np.random.default_rng(seed)
    V = Topology.load().mean_shape.astype(np.float64)
    flip = np.diag([1.0, -1.0, -1.0])  # head frame (y up, z to the camera) -> OpenCV camera
    out = []
    for _ in range(n):
        R = flip @ euler_to_matrix(rng.uniform(-60, 60), rng.uniform(-30, 30), rng.uniform(-20, 20))
        t = np.array([rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08), rng.uniform(0.4, 1.2)])
        uv = cv2.projectPoints(V, cv2.Rodrigues(R)[0], t, WCPA.K, None)[0].reshape(-1, 2)
        out.append((R, t, V + rng.normal(0, vertex_mm * 1e-3, V.shape), uv + rng.normal(0, point_px, uv.shape)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=400)
    ap.add_argument("--vertex-mm", type=float, default=3.5)
    ap.add_argument("--point-px", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="also score this model on --data per stride")
    ap.add_argument("--data", default="data/synth_test")
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    data = faces(args.faces, args.vertex_mm, args.point_px, args.seed)
    budgets: list[tuple[str, dict]] = [("SQPnP only (no LM)", {"refine": False})]
    budgets += [(f"SQPnP + LM, at most {k} iterations", {"lm_iterations": k}) for k in (1, 2, 3, 5)]
    budgets += [(f"SQPnP + LM on one point in {k} (stride {k})", {"stride": k}) for k in (2, 4, 8)]
    budgets += [("SQPnP + LM, OpenCV's default stop (20 iterations)", {})]
    rows = []
    for name, kw in budgets:
        for _, _, V, uv in data[:10]:
            solve_pnp(V, uv, WCPA, **kw)  # warm-up
        t0 = time.process_time()
        results = [solve_pnp(V, uv, WCPA, **kw) for R, t, V, uv in data]
        ms = (time.process_time() - t0) / len(data) * 1e3
        rot = np.mean([geodesic_angle_deg(r.R_cv, R) for r, (R, *_) in zip(results, data)])
        trans = np.mean([np.linalg.norm(np.ravel(r.t_cv) - t) * 1e3 for r, (_, t, *_) in zip(results, data)])
        rms = np.mean([r.rms_px for r in results])
        rows.append((name, ms, rot, trans, rms))
    base = rows[-1][1]
    command = (f"python bench/pnp_cost.py --faces {args.faces} --vertex-mm {args.vertex_mm:g} "
               f"--point-px {args.point_px:g}")
    lines = [f"`{command}` (OpenCV {cv2.__version__}, one thread)", "",
             "| PnP | CPU ms/face | × default | rotation error ° | translation error mm | reprojection RMS px |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, ms, rot, trans, rms in rows:
        lines.append(f"| {name} | {ms:.3f} | {ms / base:.2f} | {rot:.3f} | {trans:.2f} | {rms:.3f} |")
    if args.model:
        lines += ["", f"{args.model} on {args.data} (`jmlr eval --pnp-stride K`), PnP on every K-th point:", "",
                  "| K | score | MAE_r ° | MAE_t mm | PnP RMS px |", "| --- | --- | --- | --- | --- |"]
        from jmlr.eval.evaluate import evaluate

        for k in (1, 2, 4, 8):
            m = evaluate([args.model], args.data, pnp_stride=k)
            lines.append(f"| {k} | {m['score']:.3f} | {m['mae_r_deg']:.3f} | {m['mae_t_mm']:.3f} | "
                         f"{m['pnp_rms_px']:.3f} |")
    publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()

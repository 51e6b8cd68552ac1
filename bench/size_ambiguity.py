"""How much of the held-out pose error is the head's unknown size (not a test).

One photo cannot tell a large head far away from a small one nearby: the 2D points fix the
pose only up to the head's size, and a size error of x % becomes a depth error of about
x % of the distance. This scores oracles on a challenge-layout set (the held-out set of
docs/accuracy.md) that get the image right and the shape right or partly right, so that
the translation and score the size alone costs can be read beside the model's:

- the true shape and the true 2D projections (a check: every error ~0);
- the true shape with its size off by a fixed fraction (1, 2, 5 %);
- the true shape at the set's mean size (each head scaled to the mean RMS radius): what a
  network that gets every shape right except its size would score;
- the topology's mean face at the set's mean size: no shape knowledge at all, exact 2D.

With ``--model``, the model as `jmlr eval` runs it, and the same predictions with their
size set to the truth's: each predicted shape V and translation T scaled by the ratio of
the true to the predicted size (k V with k T projects exactly as V with T, so this is
what PnP would give on the same 2D points with a shape of the right size); how much of
its vertex error is size and placement; and whether a fit of the face model to its
shapes, normalised to the mean size, reads the size better than the network did.

The pose comes from `jmlr.geometry.pnp.solve_pnp` with the data's intrinsics, as in
`jmlr eval`; the scores from `jmlr.geometry.metrics`.

With ``--identities N``, also how well a head's size can be read from its size-normalised
shape at all: N identities sampled from the shipped blendshape basis (the face model's
identity modes at the topology's vertices, neutral expression), a least-squares fit of
the log size on the leading principal components of the normalised shapes (three
quarters of them), and its size error on the rest.

    python bench/size_ambiguity.py --data data/synth_test [--model MODEL] [--identities 8000] [--markdown FILE]
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_report import publish  # beside this script

from jmlr.data.datasets import load_challenge_samples
from jmlr.facemodel.topology import Topology
from jmlr.geometry.camera import project_points
from jmlr.geometry.metrics import challenge_score, pose_metrics, rms_radius, size_error, vertex_errors
from jmlr.geometry.pnp import solve_pnp


def rescale(V: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Scale each (N, 3) shape about its centroid by ``factor`` (…,)."""
    c = V.mean(-2, keepdims=True)
    return c + (V - c) * np.asarray(factor)[..., None, None]


def metrics(V_gt, Rt_gt, V_pred, Rt_pred) -> dict[str, float]:
    out = challenge_score(V_gt, Rt_gt, V_pred, Rt_pred)
    out.update(pose_metrics(Rt_gt, Rt_pred, V_gt))
    out["vertex_mean_mm"] = vertex_errors(V_gt, V_pred)["mean_mm"]
    out["size_error_pct"] = size_error(V_gt, V_pred)["size_error_pct"]
    return out


def pnp_on_true_points(V_gt, Rt_gt, V_pred, K) -> dict[str, float]:
    """PnP of ``V_pred`` on the true projections of ``V_gt``, scored like `jmlr eval`."""
    uv = [project_points(v, rt, K) for v, rt in zip(V_gt, Rt_gt)]
    return metrics(V_gt, Rt_gt, V_pred, np.stack([solve_pnp(v, p, K).R_t for v, p in zip(V_pred, uv)]))


def size_from_shape(n: int, seed: int = 0, components=(5, 20, 50, 99)) -> list[str]:
    """Markdown rows: the size error left after predicting each sampled head's size from
    its normalised shape on k principal components (see the module docstring)."""
    from jmlr.facemodel.blendshapes import BlendshapeBasis

    basis = BlendshapeBasis.load()
    a = np.random.default_rng(seed).standard_normal((n, basis.identity.shape[0]))
    V = basis.neutral[None].astype(np.float64) + np.einsum("nk,kvc->nvc", a, basis.identity.astype(np.float64))
    size = rms_radius(V)
    X = ((V - V.mean(1, keepdims=True)) / size[:, None, None]).reshape(n, -1)
    y = np.log(size)
    train, test = slice(0, 3 * n // 4), slice(3 * n // 4, n)
    X = X - X[train].mean(0)
    _, _, Vt = np.linalg.svd(X[train], full_matrices=False)
    rows = [f"| none (the mean size) | {np.sqrt(np.mean((size[test] / size[train].mean() - 1) ** 2)) * 100:.2f} |"]
    for k in components:
        P = np.c_[X @ Vt[:k].T, np.ones(n)]
        w = np.linalg.lstsq(P[train], y[train], rcond=None)[0]
        err = np.exp(P[test] @ w - y[test]) - 1
        rows.append(f"| {k} | {np.sqrt(np.mean(err**2)) * 100:.2f} |")
    return rows


def shape_lines(V_gt: np.ndarray, V_pr: np.ndarray, true_size: np.ndarray, pred_size: np.ndarray,
                name: str) -> list[str]:
    """Markdown lines: how much of the model's vertex error is size and placement, and
    whether the face model reads a better size from its size-normalised shapes
    (``true_size``, ``pred_size``: `rms_radius` of each shape, (B,)).

    The last is the idea that the face model's identity space ties size to proportions
    (``--identities``: the normalised shape fixes the size), so a fit of the model to
    the predicted shape, normalised to the mean size, might read the size better than
    the network does. The fit is `BlendshapeSolver`'s (identity, expression and a free
    similarity); its size is the RMS radius of the fitted identity and expression alone.
    """
    from jmlr.facemodel.blendshapes import BlendshapeBasis, BlendshapeSolver

    c_pr, c_gt = V_pr.mean(1, keepdims=True), V_gt.mean(1, keepdims=True)
    k = (true_size / pred_size)[:, None, None]
    err = {label: vertex_errors(V_gt, V)["mean_mm"] for label, V in (
        ("as predicted", V_pr), ("scaled to the true size about its centroid", c_pr + (V_pr - c_pr) * k),
        ("centroid moved to the truth's", V_pr - c_pr + c_gt),
        ("both", c_gt + (V_pr - c_pr) * k))}
    lines = [f"{name}'s vertex error (mm): " + "; ".join(f"{label} {v:.2f}" for label, v in err.items()) + "."]
    basis = BlendshapeBasis.load().for_topology(Topology.load())
    solver = BlendshapeSolver(basis, noise_m=1e-3, rigid=True)
    for label, V, size in (("true", V_gt, true_size), ("predicted", V_pr, pred_size)):
        c = V.mean(1, keepdims=True)
        fit = solver(c + (V - c) * (true_size.mean() / size)[:, None, None])
        shape = (basis.neutral[None] + np.einsum("bk,kvc->bvc", fit.identity, basis.identity)
                 + np.einsum("be,evc->bvc", fit.expression, basis.expression))
        fitted = rms_radius(shape)
        lines.append(f"Size from a face-model fit of the {label} shapes normalised to the mean size: error "
                     f"{np.abs(fitted / true_size - 1).mean() * 100:.2f} %, "
                     f"correlation {np.corrcoef(true_size, fitted)[0, 1]:.2f}, "
                     f"slope {np.polyfit(true_size, fitted, 1)[0]:.2f}.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synth_test")
    ap.add_argument("--model", default=None, help="also this model's predictions, as they are and at the true size")
    ap.add_argument("--limit", type=int, default=None, help="only the first N samples")
    ap.add_argument("--identities", type=int, default=0,
                    help="also fit the size from the normalised shape of this many sampled identities")
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()
    samples, K = load_challenge_samples(args.data)
    samples = samples[: args.limit]
    V = np.stack([np.asarray(s.verts, np.float64) for s in samples])
    Rt = np.stack([np.asarray(s.R_t, np.float64) for s in samples])
    size = rms_radius(V)
    mean_face = Topology.load().mean_shape.astype(np.float64)
    mean_face = rescale(mean_face[None], size.mean() / rms_radius(mean_face[None]))[0]
    cases = [("true shape (a check)", V)]
    cases += [(f"true shape, {p} % too large", rescale(V, np.full(len(V), 1 + p / 100))) for p in (1, 2, 5)]
    cases += [("true shape at the mean size", rescale(V, size.mean() / size)),
              ("mean face at the mean size", np.broadcast_to(mean_face, V.shape))]
    depth = -Rt[:, 3, 2]
    lines = [f"`python bench/size_ambiguity.py --data {args.data}`: {len(V)} faces at {depth.mean():.2f} m on "
             f"average; head size (RMS radius) {size.mean() * 1e3:.1f} mm ± {size.std() * 1e3:.2f} mm "
             f"({size.std() / size.mean() * 100:.1f} %).", "",
             "| case | vertex mm | size error % | MAE_r ° | MAE_t mm | score |",
             "| --- | --- | --- | --- | --- | --- |"]
    rows = [(f"exact 2D points, PnP with the {name}", pnp_on_true_points(V, Rt, Vp, K)) for name, Vp in cases]
    if args.model:
        from jmlr.eval.evaluate import predict_dataset

        got = predict_dataset([args.model], args.data, limit=args.limit)
        V_gt, Rt_gt, V_pr, Rt_pr = got.arrays()
        k = rms_radius(V_gt) / rms_radius(V_pr)
        sized_Rt = Rt_pr.copy()
        sized_Rt[:, 3, :3] *= k[:, None]
        name = got.models[0].name
        rows += [(f"{name}", metrics(V_gt, Rt_gt, V_pr, Rt_pr)),
                 (f"{name}, its shapes and translations scaled to the true size",
                  metrics(V_gt, Rt_gt, V_pr * k[:, None, None], sized_Rt))]
    if args.model:
        # Does the network read the size at all, or answer the mean? Slope 1: it follows the
        # true size; 0: it ignores it (what an L1 loss gives when the image says nothing).
        true_size, pred_size = rms_radius(V_gt), rms_radius(V_pr)
        slope = float(np.polyfit(true_size, pred_size, 1)[0])
        corr = float(np.corrcoef(true_size, pred_size)[0, 1])
        size_lines = ["", f"{name}'s head sizes against the true ones: correlation {corr:.2f}, slope {slope:.2f}; "
                      f"spread {pred_size.std() / pred_size.mean() * 100:.1f} % against "
                      f"{true_size.std() / true_size.mean() * 100:.1f} %.", "",
                      *shape_lines(V_gt, V_pr, true_size, pred_size, name)]
    for name, m in rows:
        lines.append(f"| {name} | {m['vertex_mean_mm']:.2f} | {m['size_error_pct']:.2f} | {m['mae_r_deg']:.2f} | "
                     f"{m['mae_t_mm']:.1f} | {m['score']:.1f} |")
    if args.model:
        lines += size_lines
    if args.identities:
        lines += ["", f"Size from the size-normalised shape, {args.identities} identities sampled from the "
                  "shipped basis (fit on three quarters, scored on the rest):", "",
                  "| principal components of the normalised shape | RMS size error % |", "| --- | --- |",
                  *size_from_shape(args.identities)]
    publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()

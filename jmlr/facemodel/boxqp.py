"""Batched box-constrained convex quadratic programs (projected Newton).

Solves, for every row ``b`` of a batch,

    minimise   0.5 * x^T H x - g_b^T x     subject to   lower <= x <= upper

with one shared symmetric positive definite ``H`` (P, P). This is the shape of a bounded
linear least-squares fit (``H = A^T A``, ``g = A^T y``) once the matrix is fixed and only
the data change, as when blendshape weights are fitted to many meshes of one topology.

The method is Bertsekas' projected Newton (1982): variables at a bound whose gradient
pushes outwards are held there, a Newton step is taken on the others, and the step is
projected back into the box with a backtracking (Armijo) line search. It ends in a few
iterations with the exact solution (to ``tol``), unlike projected gradient.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_qp"]

_ALPHAS = 0.5 ** np.arange(12)  # line-search step lengths, tried all at once
_ARMIJO = 1e-4


def box_qp(
    H: np.ndarray,
    g: np.ndarray,
    lower: float | np.ndarray = 0.0,
    upper: float | np.ndarray = 1.0,
    x0: np.ndarray | None = None,
    max_iter: int = 50,
    tol: float = 1e-6,
) -> np.ndarray:
    """Minimise ``0.5 x^T H x - g^T x`` over the box, batched over the rows of ``g``.

    Args:
        H: (P, P) symmetric positive definite.
        g: (B, P) or (P,) linear terms.
        lower, upper: bounds, scalars or (P,) arrays (``-inf``/``inf`` allowed).
        x0: optional (B, P) start (projected into the box); default: the unconstrained
            minimiser, projected.
        max_iter: Newton iterations at most.
        tol: stop when no variable would move by more than ``tol`` in a diagonally
            scaled projected-gradient step (``|x - clip(x - grad / diag(H))|``), i.e. in
            the units of ``x``.

    Returns:
        (B, P) float64 minimisers (or (P,) for a 1-D ``g``).
    """
    H = np.asarray(H, np.float64)
    g = np.asarray(g, np.float64)
    squeeze = g.ndim == 1
    g = np.atleast_2d(g)
    B, P = g.shape
    lo = np.broadcast_to(np.asarray(lower, np.float64), (P,))
    hi = np.broadcast_to(np.asarray(upper, np.float64), (P,))
    if np.any(lo > hi):
        raise ValueError("box_qp: lower > upper")
    if x0 is None:
        x0 = np.linalg.solve(H, g.T).T
    x = np.clip(np.asarray(x0, np.float64).reshape(B, P), lo, hi)

    eye = np.eye(P, dtype=bool)
    diag = np.clip(np.diag(H), 1e-300, None)
    todo = np.arange(B)  # rows not yet converged: only they cost anything
    for _ in range(max_iter):
        xt, gt = x[todo], g[todo]
        grad = xt @ H - gt
        # The scaled projected-gradient step measures how far from optimal x is, and sets
        # how close to a bound counts as touching it (Bertsekas' epsilon-active set), so a
        # variable creeping onto a bound is held there instead of forcing tiny steps.
        pg = xt - np.minimum(np.maximum(xt - grad / diag, lo), hi)
        going = np.abs(pg).max(1) > tol
        if not going.all():
            todo, xt, gt, grad, pg = todo[going], xt[going], gt[going], grad[going], pg[going]
            if todo.size == 0:
                break
        eps = np.minimum(np.sqrt((pg * pg).sum(1, keepdims=True)), 1e-3)
        held = ((xt <= lo + eps) & (grad > 0)) | ((xt >= hi - eps) & (grad < 0))
        free = ~held
        # Newton on the free variables (held ones get identity rows); held ones take the
        # scaled gradient step, which the projection keeps on their bound.
        Hf = np.where(free[:, :, None] & free[:, None, :], H, 0.0)
        Hf[:, eye] += held
        step = np.linalg.solve(Hf, np.where(free, -grad, 0.0)[..., None])[..., 0]
        step = np.where(held, -grad / diag, step)
        # (np.minimum/maximum, not np.clip: the clip wrapper's overhead shows at P = 53.)
        # Projected backtracking, every step length at once: (b, A, P) candidates.
        cand = np.minimum(np.maximum(xt[:, None, :] + _ALPHAS[:, None] * step[:, None, :], lo), hi)
        delta = cand - xt[:, None, :]
        # f(x + delta) - f(x) of the quadratic, without evaluating f itself.
        df = ((0.5 * (delta @ H) + grad[:, None, :]) * delta).sum(-1)
        ok = df <= _ARMIJO * (grad[:, None, :] * delta).sum(-1)
        pick = np.where(ok.any(1), ok.argmax(1), df.argmin(1))
        rows = np.arange(len(todo))
        better = df[rows, pick] < 0
        x[todo[better]] = cand[rows[better], pick[better]]
        todo = todo[better]  # no decrease: optimal to rounding
        if todo.size == 0:
            break
    return x[0] if squeeze else x

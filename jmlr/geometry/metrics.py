"""Evaluation metrics: the WCPA challenge score, pose errors, vertex errors.

Inputs are metres and challenge ``R_t`` (…, 4, 4) row-vector matrices
(``V_cam = V @ R + T``, ``R = R_t[:3, :3]``, ``T = R_t[3, :3]``); every output is in
millimetres or degrees. Batched: vertices (B, N, 3), poses (B, 4, 4) (a single sample
without the batch dimension works too). Reductions average over vertices first, then
over samples; ``reduce=False`` returns per-sample arrays (B,).
"""

from __future__ import annotations

import numpy as np

from jmlr.geometry.camera import transform_points
from jmlr.geometry.rotation import geodesic_angle_deg, head_pose_euler, wrap_angle_deg

M_TO_MM = 1000.0
#: Weight of the shape term in the challenge score (paper eq. 7).
SHAPE_TERM_WEIGHT = 10.0


def _mean_l2_mm(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return np.linalg.norm(A - B, axis=-1).mean(axis=-1) * M_TO_MM


def _reduce(d: dict[str, np.ndarray], reduce: bool) -> dict:
    if not reduce:
        return d
    return {k: float(np.mean(v)) for k, v in d.items()}


def challenge_score(
    V_gt: np.ndarray, R_t_gt: np.ndarray, V_pred: np.ndarray, R_t_pred: np.ndarray, reduce: bool = True
) -> dict:
    """WCPA score, paper eq. (6)–(7), in mm.

    With V1 = Vgt·Rgt+Tgt, V2 = Vp·Rp+Tp, V3 = Vgt·Rp+Tp, V4 = Vp·Rgt+Tgt::

        term_pose_shape = mean ||V1 - V2||   (pose and shape)
        term_pose       = mean ||V1 - V3||   (pose only)
        term_shape      = mean ||V1 - V4||   (shape only, before the ×10)
        score = term_pose_shape + term_pose + 10 * term_shape

    Args:
        V_gt, V_pred: (…, N, 3) world vertices, metres, same topology.
        R_t_gt, R_t_pred: (…, 4, 4) challenge poses.
        reduce: average over samples (floats) or keep per-sample arrays (…,).

    Returns:
        dict with ``score``, ``term_pose_shape``, ``term_pose``, ``term_shape``.
    """
    V_gt = np.asarray(V_gt, dtype=np.float64)
    V_pred = np.asarray(V_pred, dtype=np.float64)
    R_t_gt = np.asarray(R_t_gt, dtype=np.float64)
    R_t_pred = np.asarray(R_t_pred, dtype=np.float64)
    V1 = transform_points(V_gt, R_t_gt)
    V2 = transform_points(V_pred, R_t_pred)
    V3 = transform_points(V_gt, R_t_pred)
    V4 = transform_points(V_pred, R_t_gt)
    t12 = _mean_l2_mm(V1, V2)
    t13 = _mean_l2_mm(V1, V3)
    t14 = _mean_l2_mm(V1, V4)
    out = {
        "score": t12 + t13 + SHAPE_TERM_WEIGHT * t14,
        "term_pose_shape": t12,
        "term_pose": t13,
        "term_shape": t14,
    }
    return _reduce(out, reduce)


def pose_metrics(
    R_t_gt: np.ndarray, R_t_pred: np.ndarray, V_gt: np.ndarray | None = None, reduce: bool = True
) -> dict:
    """Pose errors between challenge poses (…, 4, 4).

    Returns a dict (floats, or per-sample arrays with ``reduce=False``):

    - ``mae_r_deg``: geodesic rotation error, degrees.
    - ``mae_yaw_deg``, ``mae_pitch_deg``, ``mae_roll_deg``: absolute error of each Euler
      angle of :func:`jmlr.geometry.rotation.head_pose_euler` (wrapped to ±180), degrees.
    - ``mae_t_mm``: Euclidean translation error ||T_pred − T_gt||, mm.
    - ``mae_tx_mm``, ``mae_ty_mm``, ``mae_tz_mm``: per-axis |ΔT| (OpenGL camera axes), mm.
    - ``add_mm`` (only with ``V_gt`` (…, N, 3)): ADD, the mean distance between the model
      points V_gt posed by the gt and by the predicted pose, mm.
    """
    R_t_gt = np.asarray(R_t_gt, dtype=np.float64)
    R_t_pred = np.asarray(R_t_pred, dtype=np.float64)
    e_gt = head_pose_euler(R_t_gt)
    e_pr = head_pose_euler(R_t_pred)
    dT = np.abs(R_t_pred[..., 3, :3] - R_t_gt[..., 3, :3]) * M_TO_MM
    out = {
        "mae_r_deg": geodesic_angle_deg(R_t_gt[..., :3, :3], R_t_pred[..., :3, :3]),
        "mae_yaw_deg": np.abs(wrap_angle_deg(e_pr[0] - e_gt[0])),
        "mae_pitch_deg": np.abs(wrap_angle_deg(e_pr[1] - e_gt[1])),
        "mae_roll_deg": np.abs(wrap_angle_deg(e_pr[2] - e_gt[2])),
        "mae_t_mm": np.linalg.norm(dT, axis=-1),
        "mae_tx_mm": dT[..., 0],
        "mae_ty_mm": dT[..., 1],
        "mae_tz_mm": dT[..., 2],
    }
    if V_gt is not None:
        V_gt = np.asarray(V_gt, dtype=np.float64)
        out["add_mm"] = _mean_l2_mm(transform_points(V_gt, R_t_gt), transform_points(V_gt, R_t_pred))
    return _reduce(out, reduce)


def vertex_errors(V_gt: np.ndarray, V_pred: np.ndarray, reduce: bool = True) -> dict:
    """World-frame per-vertex L2 errors (…, N, 3) m → ``mean_mm`` and ``median_mm``.

    The median is taken over each sample's vertices; both are then averaged over samples.
    """
    d = np.linalg.norm(np.asarray(V_pred, dtype=np.float64) - np.asarray(V_gt, dtype=np.float64), axis=-1)
    out = {"mean_mm": d.mean(axis=-1) * M_TO_MM, "median_mm": np.median(d, axis=-1) * M_TO_MM}
    return _reduce(out, reduce)


def rms_radius(V: np.ndarray) -> np.ndarray:
    """(…, N, 3) vertices -> (…,) their RMS distance from their centroid (the head's size,
    in the vertices' units)."""
    V = np.asarray(V, dtype=np.float64)
    c = V - V.mean(axis=-2, keepdims=True)
    return np.sqrt((c**2).sum(axis=-1).mean(axis=-1))


def size_error(V_gt: np.ndarray, V_pred: np.ndarray, reduce: bool = True) -> dict:
    """How far the predicted head's size is from the truth's: ``size_error_pct``, the
    absolute relative error of :func:`rms_radius`, percent.

    Why it matters: one image fixes a face's pose only up to its size (a larger head
    farther away projects the same), so a size error of x % moves the PnP translation by
    about x % of the distance (bench/size_ambiguity.py).
    """
    r = rms_radius(V_pred) / rms_radius(V_gt) - 1.0
    return _reduce({"size_error_pct": np.abs(r) * 100.0}, reduce)

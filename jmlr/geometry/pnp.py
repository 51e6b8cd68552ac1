"""Perspective-n-Point: the pose of a 3D point set from its 2D image and K (OpenCV).

JMLR predicts world-frame vertices and their image points; the pose comes from PnP.
The solver is SQPnP (globally optimal, any N ≥ 3; EPnP as a fallback) followed by
Levenberg–Marquardt refinement of the reprojection error (``cv2.solvePnPRefineLM``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from jmlr.geometry.camera import opencv_to_rt
from jmlr.geometry.intrinsics import Intrinsics


@dataclass
class PnPResult:
    """One PnP solution.

    Attributes:
        R_cv: (3, 3) OpenCV column-vector rotation, ``X_cv = R_cv @ V + t_cv``.
        t_cv: (3,) OpenCV translation, metres.
        R_t: (4, 4) the same pose as a challenge row-vector world → OpenGL-camera matrix.
        rms_px: root-mean-square reprojection error in pixels (NaN on failure).
        success: False when OpenCV found no solution or it is not finite / in front of the camera.
        rvec: (3,) rotation vector of ``R_cv`` (axis × angle, radians, angle in [0, π]).
        projected: (N, 2) the object points projected with this pose, K and the
            distortion, pixels (NaN on failure): the reprojection behind ``rms_px``.
    """

    R_cv: np.ndarray
    t_cv: np.ndarray
    R_t: np.ndarray
    rms_px: float
    success: bool
    rvec: np.ndarray
    projected: np.ndarray

    @classmethod
    def failed(cls, n: int) -> PnPResult:
        """No pose for ``n`` points: identity, NaN error and reprojection, ``success`` False."""
        return cls(np.eye(3), np.zeros(3), np.eye(4), float("nan"), False, np.zeros(3), np.full((n, 2), np.nan))


MIN_STRIDED_POINTS = 32  # `solve_pnp` with a stride keeps at least this many points


def _canonical_rvec(rvec: np.ndarray) -> np.ndarray:
    # The LM refinement may leave the angle past π; the same rotation has angle 2π - θ
    # about the opposite axis, which is what every other rotation vector here reports.
    r = np.asarray(rvec, dtype=np.float64).reshape(3)
    theta = float(np.linalg.norm(r))
    return r * (1.0 - 2.0 * np.pi / theta) if theta > np.pi else r


def _camera_arrays(K: np.ndarray | Intrinsics, dist: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    # K (3, 3) float64 and OpenCV's distortion vector (zeros for none) from a K or an
    # Intrinsics (whose distortion is used when ``dist`` is None).
    if isinstance(K, Intrinsics):
        dist = K.dist_coeffs if dist is None else dist
        K = K.K
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    return K, np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64).ravel()


def _initial_pose(
    obj: np.ndarray, img: np.ndarray, K: np.ndarray, dist: np.ndarray, method: int
) -> tuple[np.ndarray, np.ndarray] | None:
    # ``method`` first, EPnP when it fails or answers non-finite numbers.
    for flag in (method, cv2.SOLVEPNP_EPNP):
        try:
            ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=flag)
        except cv2.error:
            continue
        if ok and np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec)):
            return rvec, tvec
    return None


def solve_pnp(
    object_points: np.ndarray,
    image_points: np.ndarray,
    K: np.ndarray | Intrinsics,
    dist: np.ndarray | None = None,
    refine: bool = True,
    method: int = cv2.SOLVEPNP_SQPNP,
    lm_iterations: int | None = None,
    stride: int = 1,
) -> PnPResult:
    """Pose from N world points and their pixels.

    Args:
        object_points: (N, 3) world points, metres (N ≥ 3; ≥ 4 for the EPnP fallback).
        image_points: (N, 2) pixel coordinates (OpenCV pixel-centre convention).
        K: (3, 3) intrinsics, pixels, or an :class:`Intrinsics` (whose distortion is
            used when ``dist`` is None).
        dist: OpenCV distortion coefficients (k1, k2, p1, p2[, k3, …]) or None for none.
        refine: run ``cv2.solvePnPRefineLM`` after the initial solve.
        method: initial solver flag (default ``cv2.SOLVEPNP_SQPNP``).
        lm_iterations: at most this many refinement iterations (None: OpenCV's default
            stop, 20 iterations or a step below FLT_EPSILON).
        stride: solve on every ``stride``-th point only (all of them when that would
            leave fewer than `MIN_STRIDED_POINTS`); the reprojection and ``rms_px`` still
            cover all N. Dense, evenly spread correspondences repeat each other, and
            SQPnP and LM cost grows with N.

    Returns:
        :class:`PnPResult` in both the OpenCV and the challenge convention.
    """
    K, dist = _camera_arrays(K, dist)
    obj = np.ascontiguousarray(object_points, dtype=np.float64).reshape(-1, 3)
    img = np.ascontiguousarray(image_points, dtype=np.float64).reshape(-1, 2)
    if len(obj) != len(img) or len(obj) < 3:
        raise ValueError(f"need N >= 3 matching points, got {len(obj)} 3D and {len(img)} 2D")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if stride > 1 and len(obj) // stride >= MIN_STRIDED_POINTS:
        obj_s, img_s = np.ascontiguousarray(obj[::stride]), np.ascontiguousarray(img[::stride])
    else:
        obj_s, img_s = obj, img
    found = _initial_pose(obj_s, img_s, K, dist, method)
    if found is None:
        return PnPResult.failed(len(obj))
    rvec, tvec = found
    if refine:
        if lm_iterations is None:
            rvec, tvec = cv2.solvePnPRefineLM(obj_s, img_s, K, dist, rvec, tvec)
        else:
            criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, int(lm_iterations),
                        float(np.finfo(np.float32).eps))
            rvec, tvec = cv2.solvePnPRefineLM(obj_s, img_s, K, dist, rvec, tvec, criteria)
    R_cv, _ = cv2.Rodrigues(rvec)
    return pose_result(obj, img, R_cv, tvec, K, dist, rvec=rvec)


def pose_result(
    object_points: np.ndarray,
    image_points: np.ndarray,
    R_cv: np.ndarray,
    t_cv: np.ndarray,
    K: np.ndarray | Intrinsics,
    dist: np.ndarray | None = None,
    rvec: np.ndarray | None = None,
) -> PnPResult:
    """A given pose as a :class:`PnPResult`: its reprojection of ``object_points`` (N, 3)
    world m and the RMS pixel distance to ``image_points`` (N, 2), with K (and the
    distortion). What `solve_pnp` returns for its solution; also for a pose that was
    changed after PnP (a smoothed one). ``rvec``: ``R_cv``'s rotation vector when the
    caller has it (PnP's own), so it is not converted back and forth."""
    K, dist = _camera_arrays(K, dist)
    obj = np.ascontiguousarray(object_points, dtype=np.float64).reshape(-1, 3)
    img = np.asarray(image_points, dtype=np.float64).reshape(-1, 2)
    R_cv = np.asarray(R_cv, dtype=np.float64).reshape(3, 3)
    t_cv = np.asarray(t_cv, dtype=np.float64).reshape(3)
    rvec = cv2.Rodrigues(R_cv)[0] if rvec is None else np.asarray(rvec, dtype=np.float64).reshape(3, 1)
    proj, _ = cv2.projectPoints(obj, rvec, t_cv, K, dist)
    proj = proj.reshape(-1, 2)
    rms = float(np.sqrt(np.mean(np.sum((proj - img) ** 2, axis=1))))
    depth = obj @ R_cv[2] + t_cv[2]
    success = bool(np.isfinite(rms) and np.median(depth) > 0)
    return PnPResult(R_cv, t_cv, opencv_to_rt(R_cv, t_cv), rms, success, _canonical_rvec(rvec), proj)


def solve_pnp_batch(
    object_points: np.ndarray,
    image_points: np.ndarray,
    K: np.ndarray,
    dist: np.ndarray | None = None,
    refine: bool = True,
) -> list[PnPResult]:
    """:func:`solve_pnp` per sample: object_points (B, N, 3) m, image_points (B, N, 2) px, K (3, 3) or (B, 3, 3)."""
    object_points = np.asarray(object_points)
    image_points = np.asarray(image_points)
    K = np.asarray(K, dtype=np.float64)
    B = object_points.shape[0]
    Ks = np.broadcast_to(K, (B, 3, 3))
    return [solve_pnp(object_points[b], image_points[b], Ks[b], dist, refine) for b in range(B)]


def stack_results(results: list[PnPResult]) -> dict[str, np.ndarray]:
    """Stack a list of results into arrays: ``R_t`` (B, 4, 4), ``R_cv``, ``t_cv``, ``rms_px``, ``success``."""
    return {
        "R_t": np.stack([r.R_t for r in results]),
        "R_cv": np.stack([r.R_cv for r in results]),
        "t_cv": np.stack([r.t_cv for r in results]),
        "rms_px": np.array([r.rms_px for r in results]),
        "success": np.array([r.success for r in results]),
    }

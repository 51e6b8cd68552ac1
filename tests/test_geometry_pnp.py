"""PnP recovers a known pose from a face-like cloud (exact without noise, bounded with 0.5 px noise)."""

import cv2
import numpy as np
import pytest

from jmlr.geometry import camera as cam
from jmlr.geometry import pnp
from jmlr.geometry import rotation as rot
from jmlr.geometry.intrinsics import Intrinsics


def face_cloud(rng, n=1300):
    """~1000 points on an ellipsoidal cap 15 cm wide, 20 cm tall, 8 cm deep, bulging towards +z (metres)."""
    x, y = rng.uniform(-1, 1, (2, n))
    keep = x**2 + y**2 <= 1
    x, y = x[keep], y[keep]
    return np.stack([0.075 * x, 0.10 * y, 0.08 * np.sqrt(1 - x**2 - y**2)], axis=-1)


def random_pose(rng):
    ang = rng.uniform(-40, 40, 3)
    T = [rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), -rng.uniform(0.3, 0.9)]
    return cam.rt_from_rotation_translation(rot.euler_to_matrix(*ang).T, T)


def test_pnp_exact_without_noise():
    rng = np.random.default_rng(0)
    V = face_cloud(rng)
    assert 900 < len(V) < 1100
    K = cam.wcpa_intrinsics()
    for _ in range(10):
        R_t = random_pose(rng)
        res = pnp.solve_pnp(V, cam.project_points(V, R_t, K), K)
        assert res.success
        np.testing.assert_allclose(res.R_t, R_t, atol=1e-6)
        R_cv, t_cv = cam.rt_to_opencv(R_t)
        np.testing.assert_allclose(res.R_cv, R_cv, atol=1e-6)
        np.testing.assert_allclose(res.t_cv, t_cv, atol=1e-6)
        assert res.rms_px < 1e-6
        np.testing.assert_allclose(res.rvec, rot.matrix_to_rotvec(res.R_cv), atol=1e-9)
        np.testing.assert_allclose(res.projected, cam.project_points(V, R_t, K), atol=1e-6)


def test_pnp_with_half_pixel_noise_is_bounded():
    # measured over 50 poses: max 0.14 deg, 0.62 mm; bounds leave ~3x headroom
    rng = np.random.default_rng(1)
    V = face_cloud(rng)
    K = cam.wcpa_intrinsics()
    for _ in range(10):
        R_t = random_pose(rng)
        uv = cam.project_points(V, R_t, K) + rng.normal(scale=0.5, size=(len(V), 2))
        res = pnp.solve_pnp(V, uv, K)
        assert res.success
        assert rot.geodesic_angle_deg(res.R_t[:3, :3], R_t[:3, :3]) < 0.5
        assert np.linalg.norm(res.R_t[3, :3] - R_t[3, :3]) * 1000 < 2.0
        assert 0.6 < res.rms_px < 0.8  # 0.5 px per axis → 0.5·√2 px in 2D


def test_pnp_lm_iterations_cap_the_refinement():
    """A capped refinement stops early (a pose between SQPnP's and the converged one) and
    a cap as large as OpenCV's default gives the default's pose."""
    rng = np.random.default_rng(2)
    V = face_cloud(rng)
    K = cam.wcpa_intrinsics()
    R_t = random_pose(rng)
    uv = cam.project_points(V + rng.normal(scale=0.003, size=V.shape), R_t, K) + rng.normal(scale=3, size=(len(V), 2))
    full = pnp.solve_pnp(V, uv, K)
    assert np.allclose(pnp.solve_pnp(V, uv, K, lm_iterations=20).R_t, full.R_t, atol=1e-9)
    sq = pnp.solve_pnp(V, uv, K, refine=False)
    one = pnp.solve_pnp(V, uv, K, lm_iterations=1)
    assert full.rms_px <= one.rms_px < sq.rms_px
    assert not np.allclose(one.R_t, full.R_t, atol=1e-9)


def test_pnp_stride_solves_on_a_subset_and_reprojects_all():
    rng = np.random.default_rng(3)
    V = face_cloud(rng)
    K = cam.wcpa_intrinsics()
    R_t = random_pose(rng)
    uv = cam.project_points(V, R_t, K)
    exact = pnp.solve_pnp(V, uv, K, stride=4)
    np.testing.assert_allclose(exact.R_t, R_t, atol=1e-6)
    assert exact.projected.shape == (len(V), 2) and exact.rms_px < 1e-6
    # With noise the pose differs from the all-point one (it did use fewer points), but
    # its reprojection and RMS are over all points: the same numbers pose_result gives.
    noisy = uv + rng.normal(scale=2.0, size=uv.shape)
    full, strided = pnp.solve_pnp(V, noisy, K), pnp.solve_pnp(V, noisy, K, stride=4)
    assert not np.allclose(full.R_t, strided.R_t, atol=1e-9)
    assert rot.geodesic_angle_deg(full.R_t[:3, :3], strided.R_t[:3, :3]) < 0.5
    again = pnp.pose_result(V, noisy, strided.R_cv, strided.t_cv, K)
    assert again.rms_px == pytest.approx(strided.rms_px) and full.rms_px <= strided.rms_px
    # Too few points for the stride: all of them are used.
    few = V[: 4 * pnp.MIN_STRIDED_POINTS - 1]
    a, b = pnp.solve_pnp(few, noisy[: len(few)], K), pnp.solve_pnp(few, noisy[: len(few)], K, stride=4)
    np.testing.assert_array_equal(a.R_t, b.R_t)
    with pytest.raises(ValueError, match="stride"):
        pnp.solve_pnp(V, uv, K, stride=0)


def test_pnp_with_distortion():
    rng = np.random.default_rng(2)
    V = face_cloud(rng)
    K = cam.make_intrinsics(1500.0, 1500.0, 960.0, 540.0)
    dist = np.array([-0.12, 0.05, 0.001, -0.002, 0.0])
    R_t = random_pose(rng)
    R_cv, t_cv = cam.rt_to_opencv(R_t)
    uv, _ = cv2.projectPoints(V, cv2.Rodrigues(R_cv)[0], t_cv, K, dist)
    res = pnp.solve_pnp(V, uv.reshape(-1, 2), K, dist)
    np.testing.assert_allclose(res.R_t, R_t, atol=1e-6)
    np.testing.assert_allclose(res.projected, uv.reshape(-1, 2), atol=1e-6)  # distortion applied
    # the same through Intrinsics, which carries its distortion to PnP
    intr = Intrinsics.from_K(K, 1920, 1080, dist)
    np.testing.assert_allclose(pnp.solve_pnp(V, uv.reshape(-1, 2), intr).R_t, R_t, atol=1e-6)
    # ignoring the distortion leaves a visible residual
    assert pnp.solve_pnp(V, uv.reshape(-1, 2), K).rms_px > 0.1


def test_pnp_batch_and_stack():
    rng = np.random.default_rng(3)
    V = np.stack([face_cloud(rng)[:500] for _ in range(3)])
    R_t = np.stack([random_pose(rng) for _ in range(3)])
    K = np.stack([cam.wcpa_intrinsics(), cam.make_intrinsics(900.0, 900.0, 300, 200), cam.wcpa_intrinsics()])
    uv = cam.project_points(V, R_t, K)
    out = pnp.stack_results(pnp.solve_pnp_batch(V, uv, K))
    np.testing.assert_allclose(out["R_t"], R_t, atol=1e-6)
    assert out["success"].all() and out["rms_px"].shape == (3,)
    shared = pnp.solve_pnp_batch(V[:1], cam.project_points(V[:1], R_t[:1], K[0]), K[0])
    np.testing.assert_allclose(shared[0].R_t, R_t[0], atol=1e-6)
    with pytest.raises(ValueError):
        pnp.solve_pnp(V[0, :2], uv[0, :2], K[0])


def test_pnp_on_real_face_model(facemodel_path):
    with np.load(facemodel_path) as z:
        V = z["neutral"][:6706].astype(np.float64)  # the narrow face
    rng = np.random.default_rng(4)
    V = V[rng.choice(len(V), 1000, replace=False)]
    K = cam.wcpa_intrinsics()
    R_t = random_pose(rng)
    res = pnp.solve_pnp(V, cam.project_points(V, R_t, K) + rng.normal(scale=0.5, size=(1000, 2)), K)
    assert rot.geodesic_angle_deg(res.R_t[:3, :3], R_t[:3, :3]) < 1.0
    assert np.linalg.norm(res.R_t[3, :3] - R_t[3, :3]) * 1000 < 5.0


def test_pnp_rotation_vector_is_canonical_and_failure_is_nan():
    np.testing.assert_allclose(pnp._canonical_rvec(np.array([0.0, 0.0, 1.5 * np.pi])), [0, 0, -0.5 * np.pi])
    np.testing.assert_allclose(pnp._canonical_rvec(np.array([0.3, 0.0, 0.0])), [0.3, 0, 0])
    V = np.zeros((6, 3))  # degenerate: every point the same
    res = pnp.solve_pnp(V, np.zeros((6, 2)), cam.wcpa_intrinsics())
    if not res.success:
        assert res.projected.shape == (6, 2)


def test_solve_poses_uses_the_service_stride():
    from jmlr.inference.poses import PNP_STRIDE, solve_poses

    rng = np.random.default_rng(4)
    V = face_cloud(rng)
    K = cam.wcpa_intrinsics()
    uv = cam.project_points(V, random_pose(rng), K) + rng.normal(scale=2.0, size=(len(V), 2))
    got = solve_poses(V[None], uv[None], Intrinsics.from_K(K, 800, 800))[0]
    assert PNP_STRIDE > 1
    np.testing.assert_array_equal(got.R_t, pnp.solve_pnp(V, uv, K, stride=PNP_STRIDE).R_t)
    assert not np.allclose(got.R_t, pnp.solve_pnp(V, uv, K).R_t, atol=1e-9)
    np.testing.assert_array_equal(solve_poses(V[None], uv[None], Intrinsics.from_K(K, 800, 800), stride=1)[0].R_t,
                                  pnp.solve_pnp(V, uv, K).R_t)

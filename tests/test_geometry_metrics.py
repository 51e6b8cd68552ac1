"""Challenge score (paper eq. 6-7), pose and vertex metrics against hand-computed values."""

import numpy as np
import pytest

from jmlr.geometry import camera as cam
from jmlr.geometry import metrics
from jmlr.geometry import rotation as rot


def sample(rng, B=4, N=300):
    V = rng.normal(scale=0.05, size=(B, N, 3))
    R = np.swapaxes(rot.euler_to_matrix(*rng.uniform(-30, 30, (3, B))), -1, -2)
    T = np.stack([rng.uniform(-0.1, 0.1, B), rng.uniform(-0.1, 0.1, B), -rng.uniform(0.3, 0.9, B)], -1)
    return V, cam.rt_from_rotation_translation(R, T)


def test_perfect_prediction_scores_zero():
    V, R_t = sample(np.random.default_rng(0))
    s = metrics.challenge_score(V, R_t, V, R_t)
    assert s == {"score": 0.0, "term_pose_shape": 0.0, "term_pose": 0.0, "term_shape": 0.0}
    p = metrics.pose_metrics(R_t, R_t, V)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in p.values())


def test_translation_offset_changes_pose_terms_by_exactly_that():
    V, R_t = sample(np.random.default_rng(1))
    R_t_pred = R_t.copy()
    R_t_pred[:, 3, :3] += np.array([0.0, 0.0006, 0.0008])  # |ΔT| = 1 mm
    s = metrics.challenge_score(V, R_t, V, R_t_pred)
    assert s["term_pose_shape"] == pytest.approx(1.0, abs=1e-9)
    assert s["term_pose"] == pytest.approx(1.0, abs=1e-9)
    assert s["term_shape"] == 0.0
    assert s["score"] == pytest.approx(2.0, abs=1e-9)
    p = metrics.pose_metrics(R_t, R_t_pred, V)
    assert p["mae_t_mm"] == pytest.approx(1.0) and p["add_mm"] == pytest.approx(1.0)
    assert p["mae_ty_mm"] == pytest.approx(0.6) and p["mae_tx_mm"] == pytest.approx(0.0)
    assert p["mae_r_deg"] == pytest.approx(0.0, abs=1e-6)


def test_shape_offset_is_weighted_ten_times():
    V, R_t = sample(np.random.default_rng(2))
    V_pred = V + np.array([0.002, 0.0, 0.0])  # 2 mm in the world frame; rotation keeps the length
    s = metrics.challenge_score(V, R_t, V_pred, R_t)
    assert s["term_pose_shape"] == pytest.approx(2.0)
    assert s["term_pose"] == 0.0
    assert s["term_shape"] == pytest.approx(2.0)
    assert s["score"] == pytest.approx(2.0 + 0 + 20.0)
    e = metrics.vertex_errors(V, V_pred)
    assert e["mean_mm"] == pytest.approx(2.0) and e["median_mm"] == pytest.approx(2.0)


def test_terms_follow_equation_on_random_data_and_reduce():
    rng = np.random.default_rng(3)
    V, R_t = sample(rng)
    V_p, R_t_p = sample(rng)
    per = metrics.challenge_score(V, R_t, V_p, R_t_p, reduce=False)
    assert per["score"].shape == (4,)
    b = 2
    R, T, Rp, Tp = R_t[b, :3, :3], R_t[b, 3, :3], R_t_p[b, :3, :3], R_t_p[b, 3, :3]
    V1, V2, V3, V4 = V[b] @ R + T, V_p[b] @ Rp + Tp, V[b] @ Rp + Tp, V_p[b] @ R + T
    l2 = lambda a, c: np.linalg.norm(a - c, axis=1).mean() * 1000  # noqa: E731
    assert per["term_pose_shape"][b] == pytest.approx(l2(V1, V2))
    assert per["term_pose"][b] == pytest.approx(l2(V1, V3))
    assert per["term_shape"][b] == pytest.approx(l2(V1, V4))
    assert per["score"][b] == pytest.approx(l2(V1, V2) + l2(V1, V3) + 10 * l2(V1, V4))
    red = metrics.challenge_score(V, R_t, V_p, R_t_p)
    assert red["score"] == pytest.approx(per["score"].mean())
    # unbatched input works too
    one = metrics.challenge_score(V[b], R_t[b], V_p[b], R_t_p[b])
    assert one["score"] == pytest.approx(per["score"][b])


def test_rotation_metrics_known_yaw():
    V, R_t = sample(np.random.default_rng(4), B=1)
    R_col = np.swapaxes(R_t[:, :3, :3], -1, -2)
    R_pred = rot.euler_to_matrix(5.0, 0, 0) @ R_col  # 5° more yaw about the camera's up axis
    R_t_pred = R_t.copy()
    R_t_pred[:, :3, :3] = np.swapaxes(R_pred, -1, -2)
    p = metrics.pose_metrics(R_t, R_t_pred, V)
    assert p["mae_r_deg"] == pytest.approx(5.0)
    assert p["mae_t_mm"] == 0.0
    assert p["add_mm"] > 0
    R_t_f = cam.rt_from_rotation_translation(np.eye(3), [0, 0, -0.5])
    R_t_y = cam.rt_from_rotation_translation(rot.euler_to_matrix(7.0, -3.0, 2.0).T, [0, 0, -0.5])
    p = metrics.pose_metrics(R_t_f, R_t_y)
    assert (p["mae_yaw_deg"], p["mae_pitch_deg"], p["mae_roll_deg"]) == (
        pytest.approx(7.0), pytest.approx(3.0), pytest.approx(2.0))
    assert "add_mm" not in p


def test_size_error_reads_the_scale_not_the_pose_or_the_place():
    V, _ = sample(np.random.default_rng(5), B=2)
    c = V.mean(axis=-2, keepdims=True)
    bigger = c + (V - c) * 1.03 + 0.01  # 3 % larger, shifted
    np.testing.assert_allclose(metrics.size_error(V, bigger, reduce=False)["size_error_pct"], 3.0, rtol=1e-9)
    R = rot.euler_to_matrix(20.0, 10.0, 0.0)
    assert metrics.size_error(V, V @ R.T)["size_error_pct"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(metrics.rms_radius(V * 2), 2 * metrics.rms_radius(V))

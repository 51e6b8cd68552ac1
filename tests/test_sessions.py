"""Video sessions: the One Euro filter, the tracker, the session stores and the HTTP lifecycle.

The filter and tracker tests are pure (no model, no image). The store tests run against
memory, SQLite and Redis (Redis needs ``JMLR_TEST_REDIS_URL``, see tests/conftest.py).
The HTTP tests use the shipped default model on the README's astronaut photo, so that a
tracked crop really holds a face.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from jmlr.facemodel.topology import Topology
from jmlr.geometry.camera import opencv_to_rt
from jmlr.geometry.crop import landmarks5_from_68
from jmlr.geometry.intrinsics import Intrinsics
from jmlr.geometry.metrics import rms_radius
from jmlr.geometry.pnp import pose_result
from jmlr.geometry.rotation import geodesic_angle_deg, rotvec_to_matrix
from jmlr.inference import Face, FaceReconstruction, bbox_around_landmarks
from jmlr.tracking import (
    FaceTracker,
    OneEuroFilter,
    OneEuroParams,
    TrackingParams,
    TrackingState,
    one_euro_rotation,
    smoothing_factor,
)
from service.sessions_store import MemorySessionStore, StorageSessionStore

FPS = 30.0

# ----------------------------------------------------------------------------- One Euro filter


def test_smoothing_factor_is_casiez_alpha():
    # alpha = 1 / (1 + tau / Te), tau = 1 / (2 pi fc) (Casiez et al. 2012, eq. 1-2).
    for fc, te in ((1.0, 1 / 30), (0.3, 0.1), (12.0, 1 / 60)):
        tau = 1 / (2 * np.pi * fc)
        assert smoothing_factor(fc, te) == pytest.approx(1 / (1 + tau / te))


def test_constant_signal_passes_unchanged():
    f = OneEuroFilter(OneEuroParams(min_cutoff=0.5, beta=0.3, d_cutoff=1.0))
    x = np.array([[0.1, -2.0, 3.0], [4.0, 5.0, -6.0]])
    for k in range(50):
        np.testing.assert_allclose(f(x, k / FPS), x, atol=1e-12)
    R = rotvec_to_matrix(np.array([0.3, -0.2, 0.1]))
    R_hat, omega = R.copy(), np.zeros(3)
    for _ in range(50):
        R_hat, omega = one_euro_rotation(R, R_hat, omega, 1 / FPS, OneEuroParams(0.5, 0.3, 1.0))
    np.testing.assert_allclose(R_hat, R, atol=1e-12)


def test_noise_variance_drops():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1.0, (600, 3))
    f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=0.0, d_cutoff=1.0))
    out = np.array([f(x, k / FPS) for k, x in enumerate(noise)])
    # A first-order low-pass at 1 Hz keeps alpha / (2 - alpha) ~ 0.09 of white noise's variance.
    assert out[60:].var(0).max() < 0.15 * noise[60:].var(0).min()


def test_rotation_noise_drops_and_stays_a_rotation():
    rng = np.random.default_rng(1)
    R0 = rotvec_to_matrix(np.array([0.1, 0.5, 0.0]))
    params = OneEuroParams(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    R_hat, omega, raw, smooth = R0, np.zeros(3), [], []
    for _ in range(300):
        R = R0 @ rotvec_to_matrix(rng.normal(0, np.radians(2.0), 3))
        R_hat, omega = one_euro_rotation(R, R_hat, omega, 1 / FPS, params)
        raw.append(geodesic_angle_deg(R, R0))
        smooth.append(geodesic_angle_deg(R_hat, R0))
    np.testing.assert_allclose(R_hat @ R_hat.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(R_hat) == pytest.approx(1.0)
    assert np.mean(smooth[30:]) < 0.4 * np.mean(raw[30:])


@pytest.mark.parametrize("beta, frames", [(0.0, 17), (1.0, 6)])
def test_step_is_followed_within_n_frames(beta, frames):
    # At rest a 1 Hz cutoff at 30 fps keeps 83 % of the gap per frame: 95 % of a step is
    # crossed in 17 frames. A speed-dependent cutoff (beta) follows the same step faster.
    f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=beta, d_cutoff=1.0))
    f(np.zeros(1), 0.0)
    out = [float(f(np.ones(1), k / FPS)[0]) for k in range(1, 40)]
    assert out[frames - 1] >= 0.95
    assert out[frames - 3] < 0.95 or beta > 0  # and not much sooner at rest: it is a filter
    assert all(0 <= a <= b <= 1 for a, b in itertools.pairwise(out))  # monotone, no overshoot


def test_params_are_checked():
    with pytest.raises(ValueError, match="beta"):
        OneEuroParams(beta=-1.0)
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroParams(min_cutoff=float("nan"))
    f = OneEuroFilter(OneEuroParams())
    f(np.zeros(1), 1.0)
    with pytest.raises(ValueError, match="dt_s"):
        f(np.zeros(1), 1.0)


def test_prediction_follows_a_ramp_without_lag_and_still_smooths_noise():
    """The classic filter at rest trails a moving value by speed / (2 pi min_cutoff); with
    ``predict`` it follows a constant speed exactly, even at irregular frame times, and
    still cuts a still value's noise, though less."""
    times = np.cumsum(np.random.default_rng(2).uniform(0.02, 0.05, 150))
    ramp = np.stack([2.0 * times, -0.5 * times], -1)  # units per second
    ends = {}
    for predict in (False, True):
        f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, predict=predict))
        ends[predict] = [f(r, t) for r, t in zip(ramp, times)][-1]
    np.testing.assert_allclose(ends[True], ramp[-1], atol=1e-3)
    assert np.abs(ends[False] - ramp[-1]).max() > 0.2  # 2 / (2 pi) ~ 0.3 behind
    # The price: the speed estimate picks up noise, and carrying the estimate forward at
    # that speed lets a still value wander (variance 0.33 of the noise's at the service's
    # d_cutoff of 0.5 Hz, against 0.09 without prediction; docs/sessions.md).
    noise = np.random.default_rng(3).normal(0, 1.0, (3000, 3))
    for predict, bound in ((False, 0.12), (True, 0.4)):
        f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, d_cutoff=0.5, predict=predict))
        out = np.array([f(x, k / FPS) for k, x in enumerate(noise)])
        assert out[60:].var(0).max() < bound * noise[60:].var(0).min()


def test_predicted_rotation_follows_a_turn_and_stays_a_rotation():
    rng = np.random.default_rng(4)
    axis = np.array([0.0, 1.0, 0.2]) / np.linalg.norm([0.0, 1.0, 0.2])
    R0 = rotvec_to_matrix(np.array([0.1, 0.0, 0.05]))
    errors = {}
    for predict in (False, True):
        params = OneEuroParams(min_cutoff=1.0, beta=0.0, d_cutoff=1.0, predict=predict)
        R_hat, omega, raw, smooth = R0, np.zeros(3), [], []
        for k in range(1, 150):
            truth = R0 @ rotvec_to_matrix(axis * np.radians(40.0) * k / FPS)  # 40 deg/s about a body axis
            R = truth @ rotvec_to_matrix(rng.normal(0, np.radians(1.0), 3))
            R_hat, omega = one_euro_rotation(R, R_hat, omega, 1 / FPS, params)
            raw.append(geodesic_angle_deg(R, truth))
            smooth.append(geodesic_angle_deg(R_hat, truth))
        np.testing.assert_allclose(R_hat @ R_hat.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R_hat) == pytest.approx(1.0)
        errors[predict] = (np.mean(smooth[60:]), np.mean(raw[60:]))
    assert errors[True][0] < 0.7 * errors[True][1]  # smoother than the frames, on the turn
    assert errors[False][0] > 3.0  # the classic filter trails 40 / (2 pi) ~ 6 degrees behind


# ----------------------------------------------------------------------------- tracker (no model)

K = Intrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)


@pytest.fixture(scope="module")
def topology() -> Topology:
    return Topology.load()


def _rec(
    topo: Topology, R: np.ndarray, t: np.ndarray, point_noise_px: float = 0.0, seed: int = 0, source: str = "detector"
) -> FaceReconstruction:
    V = topo.mean_shape.astype(np.float64)
    exact = pose_result(V, np.zeros((len(V), 2)), R, t, K).projected
    points = exact + np.random.default_rng(seed).normal(0, point_noise_px, exact.shape)
    lm5 = landmarks5_from_68(points[topo.landmarks68])
    face = Face(bbox_around_landmarks(lm5), lm5, 0.9 if source == "detector" else None, source)
    return FaceReconstruction(face, V, points, pose_result(V, points, R, t, K))


FRONTAL = np.diag([1.0, -1.0, -1.0])  # head frame (y up, z to the camera) -> OpenCV camera


def test_tracker_detects_first_then_tracks_then_redetects(topology):
    tracker = FaceTracker(topology, TrackingParams(redetect_every=3))
    t = np.array([0.0, 0.0, 0.6])
    assert tracker.faces_to_crop(640, 480) is None  # first frame: detect
    tracker.update([_rec(topology, FRONTAL, t)], K, 0.0, detected=True)
    assert tracker.track_ids == [0]
    faces = tracker.faces_to_crop(640, 480)
    assert faces is not None and len(faces) == 1 and faces[0].source == "tracked"
    np.testing.assert_allclose(faces[0].landmarks5, tracker.state.tracks[0].landmarks5)
    out = tracker.update([_rec(topology, FRONTAL, t, source="tracked")], K, 1 / FPS, detected=False, tracked=True)
    assert tracker.track_ids == [0] and len(out) == 1
    assert tracker.faces_to_crop(640, 480) is not None
    tracker.update([_rec(topology, FRONTAL, t, source="tracked")], K, 2 / FPS, detected=False, tracked=True)
    assert tracker.faces_to_crop(640, 480) is None  # fourth frame: 3 since the detector ran
    tracker.update([_rec(topology, FRONTAL, t + 0.002)], K, 3 / FPS, detected=True)
    assert tracker.track_ids == [0]  # the detection is matched to the same track
    assert tracker.state.since_detection == 0 and tracker.state.frames == 4


def test_a_detector_miss_keeps_tracks_that_hold(topology):
    tracker = FaceTracker(topology, TrackingParams(redetect_every=1))
    t = np.array([0.0, 0.0, 0.6])
    tracker.faces_to_crop(640, 480)
    tracker.update([_rec(topology, FRONTAL, t)], K, 0.0, detected=True)
    assert tracker.faces_to_crop(640, 480) is None  # scheduled detection ...
    kept = tracker.kept_faces()  # ... found nothing: crop where the track is
    assert kept is not None and kept[0].source == "tracked"
    tracker.update([_rec(topology, FRONTAL, t, source="tracked")], K, 1 / FPS, detected=True, tracked=True)
    assert tracker.track_ids == [0] and tracker.state.since_detection == 0
    assert tracker.state.tracks[0].frames == 2


def test_tracker_frame_size_change_restarts(topology):
    tracker = FaceTracker(topology)
    tracker.faces_to_crop(640, 480)
    tracker.update([_rec(topology, FRONTAL, np.array([0.0, 0.0, 0.6]))], K, 0.0, detected=True)
    assert tracker.faces_to_crop(640, 480) is not None
    assert tracker.faces_to_crop(480, 640) is None
    assert tracker.reset_reason == "frame_size_changed" and tracker.state.tracks == []
    assert tracker.state.frames == 1 and tracker.state.t_s == 0.0  # the clock goes on


def test_tracker_loses_a_face_with_a_large_residual(topology):
    tracker = FaceTracker(topology, TrackingParams(max_residual=0.1))
    t = np.array([0.0, 0.0, 0.6])
    tracker.faces_to_crop(640, 480)
    tracker.update([_rec(topology, FRONTAL, t)], K, 0.0, detected=True)
    assert tracker.faces_to_crop(640, 480) is not None
    good, bad = _rec(topology, FRONTAL, t, 0.5), _rec(topology, FRONTAL, t, 40.0)
    assert tracker.lost_reason(good) is None
    assert tracker.lost_reason(bad) == "residual"
    assert not tracker.lost([good]) and tracker.lost([bad])
    # A detection whose face is lost is answered but not followed.
    tracker.update([bad], K, 1 / FPS, detected=True)
    assert tracker.track_ids == [None] and tracker.state.tracks == []
    assert tracker.faces_to_crop(640, 480) is None


def test_tracker_rejects_time_going_back(topology):
    tracker = FaceTracker(topology)
    tracker.update([], K, 1.0, detected=True)
    with pytest.raises(ValueError, match="not after"):
        tracker.update([], K, 1.0, detected=True)


def test_tracker_smooths_a_still_head_and_keeps_outputs_consistent(topology):
    rng = np.random.default_rng(3)
    tracker = FaceTracker(topology, TrackingParams(smoothing=OneEuroParams(1.0, 0.0, 1.0)))
    t_true = np.array([0.02, -0.01, 0.6])
    raw_err, smooth_err = [], []
    for k in range(90):
        R = FRONTAL @ rotvec_to_matrix(rng.normal(0, np.radians(1.5), 3))
        t = t_true + rng.normal(0, 0.004, 3)
        tracker.faces_to_crop(640, 480)
        (out,) = tracker.update([_rec(topology, R, t, seed=k)], K, k / FPS, detected=k == 0, tracked=k > 0)
        raw_err.append(np.linalg.norm(t - t_true))
        smooth_err.append(np.linalg.norm(out.pose.t_cv - t_true))
        # The answer is one posed mesh: its reprojection is its own pose's.
        np.testing.assert_allclose(
            out.pose.projected, pose_result(out.vertices, out.points, out.pose.R_cv, out.pose.t_cv, K).projected
        )
    assert np.mean(smooth_err[20:]) < 0.5 * np.mean(raw_err[20:])


def test_tracker_with_prediction_follows_a_turning_head(topology):
    """A head turning at 30 deg/s seen with noise: with velocity prediction the answers
    are closer to the truth than the raw frames; the classic filter trails the turn."""
    rng = np.random.default_rng(8)
    t = np.array([0.0, 0.0, 0.6])
    errors: dict[str, float] = {}
    for name, smoothing in (("raw", None), ("classic", OneEuroParams(1.0, 0.0, 1.0)),
                            ("predict", OneEuroParams(1.0, 0.0, 1.0, predict=True))):
        tracker = FaceTracker(topology, TrackingParams(smoothing=smoothing))
        err = []
        for k in range(60):
            truth = FRONTAL @ rotvec_to_matrix(np.array([0.0, np.radians(30.0) * k / FPS, 0.0]))
            R = truth @ rotvec_to_matrix(rng.normal(0, np.radians(1.0), 3))
            tracker.faces_to_crop(640, 480)
            (out,) = tracker.update([_rec(topology, R, t, seed=k)], K, k / FPS, detected=k == 0, tracked=k > 0)
            err.append(geodesic_angle_deg(out.pose.R_cv, truth))
            np.testing.assert_allclose(  # one posed mesh: its reprojection is its own pose's
                out.pose.projected, pose_result(out.vertices, out.points, out.pose.R_cv, out.pose.t_cv, K).projected
            )
        errors[name] = float(np.mean(err[20:]))
    assert errors["predict"] < 0.8 * errors["raw"]
    assert errors["classic"] > errors["raw"]  # 30 deg/s through a 1 Hz low-pass: ~5 deg behind


@pytest.mark.parametrize("predict", [False, True], ids=["classic", "predict"])
def test_frames_a_hair_apart_do_not_poison_the_filters(topology, predict):
    # Two timestamps a few ulps apart (0 and 5e-324 s are "in order"): the speed estimate
    # divides by the step, which overflowed to NaN and stayed in the state for good.
    tracker = FaceTracker(topology, TrackingParams(smoothing=OneEuroParams(predict=predict)))
    t = np.array([0.0, 0.0, 0.6])
    turned = FRONTAL @ rotvec_to_matrix(np.array([0.0, 0.05, 0.0]))
    for k, (R, t_s) in enumerate(((FRONTAL, 0.0), (turned, 5e-324), (FRONTAL, 1 / FPS), (turned, 1 / FPS + 1e-12))):
        tracker.faces_to_crop(640, 480)
        (out,) = tracker.update([_rec(topology, R, t + 0.001 * k)], K, t_s, detected=k == 0, tracked=k > 0)
        assert out.finite and tracker.track_ids == [0]
        track = tracker.state.tracks[0]
        # framing5 is NaN by design under framing "points" (no detector framing known).
        assert all(np.isfinite(getattr(track, name)).all() for name in track._ARRAYS if name != "framing5")
    assert np.abs(tracker.state.tracks[0].omega).max() < 100.0  # rad/s: a bounded speed, not 1e300


def test_a_non_finite_filter_state_starts_the_filters_again(topology):
    # A state kept with NaN in it (by an older version, or any numeric accident) does not
    # end every later answer: the track's filters start again from this frame.
    tracker = FaceTracker(topology)
    t = np.array([0.0, 0.0, 0.6])
    tracker.faces_to_crop(640, 480)
    tracker.update([_rec(topology, FRONTAL, t)], K, 0.0, detected=True)
    track = tracker.state.tracks[0]
    track.R_cv, track.omega = np.full((3, 3), np.nan), np.full(3, np.nan)  # new arrays: R_cv is FRONTAL's
    tracker.faces_to_crop(640, 480)
    (out,) = tracker.update([_rec(topology, FRONTAL, t, source="tracked")], K, 1 / FPS, detected=False, tracked=True)
    assert out.finite and tracker.track_ids == [0] and tracker.state.tracks[0].frames == 2
    np.testing.assert_allclose(out.pose.R_cv, FRONTAL, atol=1e-6)


def test_expression_weights_are_smoothed_with_the_track(topology):
    """A model with an expression head: noisy weights of a still face come back smoothed,
    a real change (the jaw opening) is followed, and the filter state survives a record."""
    rng = np.random.default_rng(5)
    tracker = FaceTracker(topology, TrackingParams(smoothing=OneEuroParams(1.0, 0.0, 1.0)))
    truth = np.zeros(8)
    truth[2] = 0.3
    raw_err, smooth_err = [], []
    for k in range(120):
        if k == 60:
            truth[2] = 0.8
        noisy = truth + rng.normal(0, 0.05, truth.shape)  # unclipped: clipping would bias the zeros
        rec = replace(_rec(topology, FRONTAL, np.array([0.0, 0.0, 0.6])), expression=noisy)
        tracker.faces_to_crop(640, 480)
        (out,) = tracker.update([rec], K, k / FPS, detected=k == 0, tracked=k > 0)
        if 20 <= k < 60 or k >= 100:
            raw_err.append(np.abs(noisy - truth).mean())
            smooth_err.append(np.abs(out.expression - truth).mean())
    assert np.mean(smooth_err) < 0.5 * np.mean(raw_err)
    assert abs(out.expression[2] - 0.8) < 0.05  # followed the step
    meta, arrays = tracker.state.to_record()
    back = TrackingState.from_record(meta, arrays)
    np.testing.assert_array_equal(back.tracks[0].expression, tracker.state.tracks[0].expression)
    # A frame without weights (another model) answers none; the next with them starts afresh.
    tracker.faces_to_crop(640, 480)
    (out,) = tracker.update([_rec(topology, FRONTAL, np.array([0.0, 0.0, 0.6]))], K, 120 / FPS, tracked=True,
                            detected=False)
    assert out.expression is None and tracker.state.tracks[0].expression.shape == (0,)


def _scaled(rec: FaceReconstruction, k: float) -> FaceReconstruction:
    """The same image read as a head k times as large, k times as far (the same points)."""
    V, t = rec.vertices * k, rec.pose.t_cv * k
    return replace(rec, vertices=V, pose=pose_result(V, rec.points, rec.pose.R_cv, t, K))


def test_size_frames_holds_the_head_size_of_a_track(topology):
    """A still head whose size the network reads with 3 % noise per frame (its distance
    moving with it, the image the same): with ``size_frames`` the answers keep the track's
    mean size, so size and distance stop jittering, and every answer still projects onto
    the frame's points as the network's own did."""
    rng = np.random.default_rng(11)
    t = np.array([0.01, 0.0, 0.6])
    sizes = np.exp(rng.normal(0.0, 0.03, 90))
    radius = float(rms_radius(topology.mean_shape))
    spread: dict[int, tuple[float, float]] = {}
    for size_frames in (0, 60):
        tracker = FaceTracker(topology, TrackingParams(smoothing=OneEuroParams(1.0, 0.0, 1.0), size_frames=size_frames))
        got_size, got_z = [], []
        for k, s in enumerate(sizes):
            rec = _scaled(_rec(topology, FRONTAL, t, point_noise_px=0.3, seed=k), float(s))
            tracker.faces_to_crop(640, 480)
            (out,) = tracker.update([rec], K, k / FPS, detected=k == 0, tracked=k > 0)
            got_size.append(rms_radius(out.vertices) / radius)
            got_z.append(out.pose.t_cv[2])
        spread[size_frames] = (float(np.std(got_size[30:])), float(np.std(got_z[30:])))
        track = tracker.state.tracks[0]
        kept = np.exp(track.log_size[0]) / radius
        assert kept == pytest.approx(np.exp(np.log(sizes).mean()) if size_frames else sizes[-1], rel=0.01)
    assert spread[60][0] < 0.3 * spread[0][0]  # the size ...
    assert spread[60][1] < 0.3 * spread[0][1]  # ... and with it the distance
    # The mean kept survives a record; a state stored before it existed starts from the frame.
    meta, arrays = tracker.state.to_record()
    np.testing.assert_array_equal(TrackingState.from_record(meta, arrays).tracks[0].log_size, track.log_size)
    old = TrackingState.from_record(meta, {k: v for k, v in arrays.items() if not k.endswith(".log_size")})
    tracker = FaceTracker(topology, TrackingParams(size_frames=60), old)
    tracker.faces_to_crop(640, 480)
    rec = _scaled(_rec(topology, FRONTAL, t, source="tracked"), 1.1)
    (out,) = tracker.update([rec], K, 90 / FPS, detected=False, tracked=True)
    assert tracker.state.tracks[0].log_size[0] == pytest.approx(np.log(1.1 * radius))


def test_a_face_put_at_another_size_projects_as_before(topology):
    from jmlr.tracking.tracker import _at_size

    rec = _rec(topology, FRONTAL @ rotvec_to_matrix(np.array([0.1, 0.3, 0.0])), np.array([0.03, 0.02, 0.5]), 0.5)
    out = _at_size(rec, 0.08)
    assert float(rms_radius(out.vertices)) == pytest.approx(0.08)
    again = pose_result(out.vertices, out.points, out.pose.R_cv, out.pose.t_cv, K)
    np.testing.assert_allclose(again.projected, rec.pose.projected, atol=1e-9)
    np.testing.assert_allclose(out.pose.R_t, opencv_to_rt(out.pose.R_cv, out.pose.t_cv))
    assert out.pose.t_cv[2] / rec.pose.t_cv[2] == pytest.approx(0.08 / float(rms_radius(rec.vertices)))


def test_size_frames_must_not_be_negative():
    with pytest.raises(ValueError, match="size_frames"):
        TrackingParams(size_frames=-1)


def test_state_round_trips_through_a_record(topology):
    tracker = FaceTracker(topology)
    tracker.faces_to_crop(640, 480)
    tracker.update([_rec(topology, FRONTAL, np.array([0.0, 0.0, 0.6]))], K, 0.5, detected=True)
    meta, arrays = tracker.state.to_record()
    back = TrackingState.from_record(meta, arrays)
    assert (back.width, back.height, back.t_s, back.frames, back.next_id) == (640, 480, 0.5, 1, 1)
    for name in ("landmarks5", "R_cv", "t_cv", "vertices", "v_speed"):
        np.testing.assert_array_equal(getattr(back.tracks[0], name), getattr(tracker.state.tracks[0], name))


def test_detector_framing_carries_the_detections_points_along(topology):
    """framing="detector": tracked crops are placed where the detector would have put them
    (its points of the last detection, in the frame of the network's points, carried by
    the network's latest points); framing="points" crops on the network's points."""
    from jmlr.geometry.crop import apply_affine, crop_transform

    t0, t1 = np.array([0.0, 0.0, 0.6]), np.array([0.02, -0.01, 0.55])
    first = _rec(topology, FRONTAL, t0)
    net0 = landmarks5_from_68(first.points[topology.landmarks68])
    # a detector that frames faces 8 % larger and 3 px lower than the network's points do
    det0 = (net0 - net0.mean(0)) * 1.08 + net0.mean(0) + np.array([0.0, 3.0])
    first = FaceReconstruction(Face(bbox_around_landmarks(det0), det0, 0.9, "detector"), first.vertices,
                               first.points, first.pose)
    for framing in ("points", "detector"):
        tracker = FaceTracker(topology, TrackingParams(framing=framing, smoothing=None))
        tracker.faces_to_crop(640, 480)
        tracker.update([first], K, 0.0, detected=True)
        track = tracker.state.tracks[0]
        np.testing.assert_allclose(track.landmarks5, det0 if framing == "detector" else net0, atol=1e-9)
        (face,) = tracker.faces_to_crop(640, 480)
        moved = _rec(topology, FRONTAL, t1, source="tracked")
        moved = FaceReconstruction(face, moved.vertices, moved.points, moved.pose)
        tracker.update([moved], K, 1 / 30, detected=False, tracked=True)
        net1 = landmarks5_from_68(moved.points[topology.landmarks68])
        got = tracker.state.tracks[0].landmarks5
        if framing == "points":
            np.testing.assert_allclose(got, net1, atol=1e-9)
            assert np.isnan(tracker.state.tracks[0].framing5).all()
        else:  # the same placement relative to the network's points as at the detection
            np.testing.assert_allclose(apply_affine(crop_transform(net1, 256), got),
                                       apply_affine(crop_transform(net0, 256), det0), atol=1e-6)
            assert np.abs(got - net1).max() > 2.0  # not simply the network's points
            # kept in the stored state; a state stored before framing5 existed still loads
            meta, arrays = tracker.state.to_record()
            np.testing.assert_allclose(TrackingState.from_record(meta, arrays).tracks[0].framing5,
                                       tracker.state.tracks[0].framing5)
            old = {k: v for k, v in arrays.items() if not k.endswith(".framing5")}
            assert np.isnan(TrackingState.from_record(meta, old).tracks[0].framing5).all()


# ----------------------------------------------------------------------------- session stores


@pytest.fixture(params=["memory", "storage"])
def store(request, storage):
    # ``storage`` is SQLite and Redis (tests/conftest.py); memory runs beside each.
    return MemorySessionStore() if request.param == "memory" else StorageSessionStore(storage)


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"0.vertices": rng.normal(size=(20, 3)), "0.R_cv": np.eye(3)}


def test_store_round_trip_and_compare_and_set(store):
    assert store.get("k:a") is None
    v1 = store.put("k:a", {"frames": 1}, _arrays(1), 60.0, None)
    assert v1
    assert store.put("k:a", {"frames": 9}, _arrays(9), 60.0, None) is None  # exists: create refused
    assert store.put("k:a", {"frames": 9}, _arrays(9), 60.0, "stale") is None
    meta, arrays, version = store.get("k:a")
    assert meta == {"frames": 1} and version == v1
    np.testing.assert_array_equal(arrays["0.vertices"], _arrays(1)["0.vertices"])
    v2 = store.put("k:a", {"frames": 2}, _arrays(2), 60.0, v1)
    assert v2 and v2 != v1
    assert store.put("k:a", {"frames": 3}, _arrays(3), 60.0, v1) is None  # v1 was used up
    assert store.get("k:a")[0] == {"frames": 2}
    assert store.get("other:a") is None  # keys are the whole namespace
    assert store.delete("k:a") and store.get("k:a") is None and not store.delete("k:a")


def test_store_sessions_expire(store):
    v = store.put("k:e", {"frames": 1}, _arrays(), 0.2, None)
    assert store.get("k:e") is not None
    time.sleep(0.4)
    assert store.get("k:e") is None
    assert store.put("k:e", {"frames": 1}, _arrays(), 60.0, v) is None  # expired: not continued
    assert store.put("k:e", {"frames": 1}, _arrays(), 60.0, None)  # but started again


def test_store_race_has_one_winner(store):
    v = store.put("k:r", {"frames": 1}, _arrays(), 60.0, None)
    barrier = threading.Barrier(6)

    def attempt(n: int):
        barrier.wait()
        return store.put("k:r", {"frames": n}, _arrays(n), 60.0, v)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(attempt, range(6)))
    winners = [n for n, r in enumerate(results) if r is not None]
    assert len(winners) == 1
    assert store.get("k:r")[0] == {"frames": winners[0]}


def test_memory_store_is_bounded():
    store = MemorySessionStore(max_sessions=3)
    for k in range(5):
        store.put(f"k:{k}", {}, _arrays(), 60.0, None)
    assert len(store) == 3 and store.get("k:0") is None and store.get("k:4") is not None


# ----------------------------------------------------------------------------- over HTTP

skimage_data = pytest.importorskip("skimage.data")

KEY_A, KEY_B = "key-a", "key-b"


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return _jpeg(skimage_data.astronaut())


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(
        _env_file=None,
        data_dir=Path(tmp_path_factory.mktemp("var")),
        device="cpu",
        api_keys=[KEY_A, KEY_B],
        rate_limit_per_minute=0,
        session_storage="memory",
        request_timeout_s=120.0,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _frame(c, data: bytes, key: str = KEY_A, **form):
    return c.post("/reconstruct", files={"image": ("f.jpg", data, "image/jpeg")}, data=form, headers={"X-API-Key": key})


def _code(r, status: int) -> str:
    assert r.status_code == status, r.text
    return r.json()["error"]["code"]


def test_session_lifecycle(client, astronaut):
    r1 = _frame(client, astronaut, session_id="life", include="blendshapes")
    assert r1.status_code == 200, r1.text
    s1, (f1,) = r1.json()["session"], r1.json()["faces"]
    assert s1["status"] == "started" and s1["frame"] == 0 and s1["detected"] is True and s1["tracks"] == 1
    assert f1["source"] == "detector" and f1["track_id"] == 0 and f1["blendshapes"]

    r2 = _frame(client, astronaut, session_id="life", include="blendshapes")
    s2, (f2,) = r2.json()["session"], r2.json()["faces"]
    assert s2["status"] == "continued" and s2["frame"] == 1 and s2["detected"] is False
    assert f2["source"] == "tracked" and f2["track_id"] == 0 and f2["score"] is None
    assert s2["timestamp_s"] == pytest.approx(1 / 30)  # no timestamp: JMLR_SESSION_FPS apart
    assert "detect" not in r2.json()["timings_ms"]

    info = client.get("/sessions/life", headers={"X-API-Key": KEY_A})
    assert info.status_code == 200 and info.json()["frames"] == 2 and info.json()["tracks"] == [0]
    assert client.delete("/sessions/life", headers={"X-API-Key": KEY_A}).status_code == 204
    assert _code(client.get("/sessions/life", headers={"X-API-Key": KEY_A}), 404) == "session_not_found"
    assert _code(client.delete("/sessions/life", headers={"X-API-Key": KEY_A}), 404) == "session_not_found"
    again = _frame(client, astronaut, session_id="life").json()["session"]
    assert again["status"] == "started" and again["frame"] == 0  # a deleted id starts over


def test_another_keys_session_is_not_found(client, astronaut):
    assert _frame(client, astronaut, session_id="mine").json()["session"]["status"] == "started"
    assert _code(client.get("/sessions/mine", headers={"X-API-Key": KEY_B}), 404) == "session_not_found"
    assert _code(client.delete("/sessions/mine", headers={"X-API-Key": KEY_B}), 404) == "session_not_found"
    # The same id under key B is B's own new session; A's is untouched.
    assert _frame(client, astronaut, KEY_B, session_id="mine").json()["session"]["status"] == "started"
    assert client.get("/sessions/mine", headers={"X-API-Key": KEY_A}).json()["frames"] == 1
    assert _code(client.get("/sessions/mine"), 401) == "missing_api_key"


def test_out_of_order_timestamps_are_refused(client, astronaut):
    assert _frame(client, astronaut, session_id="clock", timestamp="10.0").status_code == 200
    assert (
        _code(_frame(client, astronaut, session_id="clock", timestamp="9.5"), 409) == "session_timestamp_out_of_order"
    )
    assert (
        _code(_frame(client, astronaut, session_id="clock", timestamp="10.0"), 409) == "session_timestamp_out_of_order"
    )
    info = client.get("/sessions/clock", headers={"X-API-Key": KEY_A}).json()
    assert info["frames"] == 1 and info["last_timestamp_s"] == 10.0  # refused frames were not used
    r = _frame(client, astronaut, session_id="clock", timestamp="10.04")
    assert r.json()["session"]["status"] == "continued" and r.json()["session"]["timestamp_s"] == 10.04


def test_timestamps_a_hair_apart_are_answered(client, astronaut):
    # In order, but 5e-324 s apart: answered (the filters take at least a 1 ms step), and
    # the session goes on answering its face.
    for k, ts in enumerate(("0", "5e-324", "0.0333")):
        r = _frame(client, astronaut, session_id="ulp", timestamp=ts)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["session"]["frame"] == k and len(body["faces"]) == 1 and body["faces"][0]["track_id"] == 0
        assert not [w for w in body["warnings"] if "dropped" in w]


def test_openapi_documents_sessions(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for method in ("get", "delete"):
        op = paths["/sessions/{session_id}"][method]
        assert "404" in op["responses"], method
    post = paths["/reconstruct"]["post"]
    assert "409" in post["responses"]
    ref = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    form = spec["components"]["schemas"][ref]["properties"]
    assert {"session_id", "timestamp", "smoothing"} <= set(form)
    assert "pattern" in str(form["session_id"])
    response = spec["components"]["schemas"]["ReconstructResponse"]["properties"]
    assert "session" in response
    status = spec["components"]["schemas"]["SessionOut"]["properties"]["status"]
    assert set(status["enum"]) == {"started", "continued", "restarted"}


def test_frame_of_another_size_restarts_the_session(client, astronaut):
    import cv2

    assert _frame(client, astronaut, session_id="resize").json()["session"]["tracks"] == 1
    smaller = _jpeg(cv2.resize(skimage_data.astronaut(), (400, 400), interpolation=cv2.INTER_AREA))
    r = _frame(client, smaller, session_id="resize")
    s = r.json()["session"]
    assert s["status"] == "restarted" and s["reset_reason"] == "frame_size_changed" and s["detected"] is True
    assert r.json()["faces"][0]["source"] == "detector"
    info = client.get("/sessions/resize", headers={"X-API-Key": KEY_A}).json()
    assert (info["width"], info["height"], info["frames"]) == (400, 400, 2)


def test_bad_session_input_is_a_clear_422(client, astronaut):
    assert _code(_frame(client, astronaut, timestamp="1.0"), 422) == "invalid_session"
    assert _code(_frame(client, astronaut, session_id="s", smoothing='{"beta": -1}'), 422) == "invalid_smoothing"
    assert _code(_frame(client, astronaut, session_id="s", smoothing='{"wobble": 1}'), 422) == "invalid_smoothing"
    assert _code(_frame(client, astronaut, session_id="s", smoothing='{"size_frames": -3}'), 422) == "invalid_smoothing"
    for bad in ('{"predict": "sometimes"}', '{"agility": 5}'):
        assert _code(_frame(client, astronaut, session_id="s", smoothing=bad), 422) == "invalid_smoothing", bad
    assert client.get("/sessions/s", headers={"X-API-Key": KEY_A}).status_code == 404  # nothing was kept
    assert _code(_frame(client, astronaut, session_id="../etc"), 422) == "validation_error"
    assert _code(_frame(client, astronaut, session_id="s", timestamp="nan"), 422) == "validation_error"


def test_size_frames_comes_from_the_settings_or_the_frame(tmp_path):
    from service.schemas_sessions import SmoothingIn
    from service.sessions import Sessions
    from service.settings import Settings

    sessions = Sessions(Settings(_env_file=None, data_dir=tmp_path, session_size_frames=45), MemorySessionStore(4))
    assert sessions.params(None).size_frames == 45
    assert sessions.params(SmoothingIn(beta=0.1)).size_frames == 45
    own = sessions.params(SmoothingIn(size_frames=0, min_cutoff=2.0))
    assert own.size_frames == 0 and own.smoothing is not None and own.smoothing.min_cutoff == 2.0
    assert sessions.params(SmoothingIn(enabled=False)).smoothing is None


def test_prediction_comes_from_the_settings_or_the_frame(tmp_path):
    from service.schemas_sessions import SmoothingIn
    from service.sessions import Sessions
    from service.settings import Settings

    served = Sessions(Settings(_env_file=None, data_dir=tmp_path), MemorySessionStore(4))
    assert served.params(None).smoothing == OneEuroParams(1.0, 0.15, 0.5, predict=True)
    assert served.params(SmoothingIn(predict=False, beta=0.05)).smoothing == OneEuroParams(1.0, 0.05, 0.5)
    classic = Sessions(Settings(_env_file=None, data_dir=tmp_path, session_predict=False), MemorySessionStore(4))
    assert classic.params(SmoothingIn(min_cutoff=2.0)).smoothing == OneEuroParams(2.0, 0.15, 0.5, predict=False)


def test_smoothing_can_be_turned_off_per_frame(client, astronaut):
    r = _frame(client, astronaut, session_id="raw", smoothing='{"enabled": false}')
    assert r.json()["session"]["smoothed"] is False


def test_concurrent_frames_of_one_session_do_not_corrupt_it(client, astronaut):
    barrier = threading.Barrier(3)

    def send(_):
        barrier.wait()
        return _frame(client, astronaut, session_id="race")

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(send, range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    # One at a time: each frame saw the state the previous one left.
    assert sorted(a.json()["session"]["frame"] for a in answers) == [0, 1, 2]
    info = client.get("/sessions/race", headers={"X-API-Key": KEY_A}).json()
    assert info["frames"] == 3 and info["last_timestamp_s"] == pytest.approx(2 / 30)


def test_a_frame_that_lost_a_race_is_refused(topology):
    # Another replica writes the session while this frame is answered: the compare-and-set
    # refuses this frame's write (409) instead of merging two histories.
    import asyncio
    from types import SimpleNamespace

    from service.errors import ApiError
    from service.sessions import SessionRequest, Sessions
    from service.settings import Settings

    store = MemorySessionStore()
    sessions = Sessions(Settings(_env_file=None), store)

    async def answer(frame):
        return SimpleNamespace(session=None)

    async def answer_while_another_writes(frame):
        meta, arrays, version = store.get("open:s")
        assert store.put("open:s", meta, arrays, 60.0, version)
        return SimpleNamespace(session=None)

    async def answer_while_deleted(frame):
        assert store.delete("open:s")
        return SimpleNamespace(session=None)

    async def go():
        first = await sessions.run_frame("open", SessionRequest("s"), topology, answer)
        assert first.session.status == "started"
        for racer in (answer_while_another_writes, answer_while_deleted):
            with pytest.raises(ApiError) as err:
                await sessions.run_frame("open", SessionRequest("s"), topology, racer)
            assert (err.value.status_code, err.value.code) == (409, "session_conflict")

    asyncio.run(go())


def test_session_storage_outage_is_503(client, astronaut):
    from service.storage import StorageUnavailableError

    class Down:
        def get(self, key):
            raise StorageUnavailableError("redis: ConnectionError")

        put = delete = get

    sessions = client.app.state.sessions
    store, sessions.store = sessions.store, Down()
    try:
        assert _code(_frame(client, astronaut, session_id="down"), 503) == "storage_unavailable"
        assert _code(client.delete("/sessions/down", headers={"X-API-Key": KEY_A}), 503) == "storage_unavailable"
    finally:
        sessions.store = store


def test_max_faces_caps_tracked_faces_too(tmp_path):
    """A session's tracked faces obey ``max_faces`` like detections: lowering it mid-session
    answers that many faces and ends the other tracks."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    two = _jpeg(np.concatenate([skimage_data.astronaut()] * 2, axis=1))
    settings = Settings(_env_file=None, data_dir=tmp_path, device="cpu", api_keys=[KEY_A], rate_limit_per_minute=0,
                        session_storage="memory", request_timeout_s=120.0)
    with TestClient(create_app(settings)) as c:
        first = _frame(c, two, session_id="pair", max_faces="2").json()
        assert len(first["faces"]) == 2 and first["session"]["tracks"] == 2
        second = _frame(c, two, session_id="pair", max_faces="1").json()
        assert second["session"]["detected"] is False
        assert len(second["faces"]) == 1 and second["session"]["tracks"] == 1

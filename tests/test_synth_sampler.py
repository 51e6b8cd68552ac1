"""Samplers, crop folding and the layout reader/writer, without the real face model."""

from __future__ import annotations

import numpy as np

from jmlr.geometry.camera import WCPA_PROJECTION_MATRIX, intrinsics_from_projection, project_points
from jmlr.geometry.crop import apply_affine
from jmlr.synth.layout import (
    ChallengeSamples,
    load_sample,
    read_intrinsics,
    read_list,
    write_lists,
    write_resources,
    write_sample,
)
from jmlr.synth.preview import contact_sheet, draw_wireframe
from jmlr.synth.sampler import (
    EXPRESSION_PRESETS,
    FACIAL_ACTIONS,
    PoseSampler,
    euler_to_rotation,
    sample_expression,
    sample_identity,
    sample_pose,
)
from jmlr.synth.stream import CropJitter, crop_projection, jitter_similarity

K = intrinsics_from_projection(WCPA_PROJECTION_MATRIX, 800, 800)
ARKIT = [
    "browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
    "cheekPuff_L", "cheekPuff_R", "cheekSquint_L", "cheekSquint_R", "eyeBlink_L", "eyeBlink_R",
    "eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L", "eyeLookOut_R",
    "eyeLookUp_L", "eyeLookUp_R", "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R", "jawForward",
    "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimple_L", "mouthDimple_R", "mouthFrown_L",
    "mouthFrown_R", "mouthFunnel", "mouthLeft", "mouthLowerDown_L", "mouthLowerDown_R", "mouthPress_L",
    "mouthPress_R", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmile_L", "mouthSmile_R", "mouthStretch_L", "mouthStretch_R",
    "mouthUpperUp_L", "mouthUpperUp_R", "noseSneer_L", "noseSneer_R",
]


def test_presets_are_33_valid_arkit_mixes():
    assert len(FACIAL_ACTIONS) == 33 and FACIAL_ACTIONS[0] == "neutral"
    for name, weights in EXPRESSION_PRESETS.items():
        assert set(weights) <= set(ARKIT), name
        assert all(0 < w <= 1 for w in weights.values()), name


def test_sample_expression_ranges():
    rng = np.random.default_rng(0)
    jaw = ARKIT.index("jawOpen")
    w = np.stack([sample_expression(rng, ARKIT, "jaw_open_wide") for _ in range(50)])
    assert w.shape == (50, 53) and w.min() >= 0 and w.max() <= 1
    assert (w[:, jaw] >= 0.6).all()  # the preset dominates
    n = sample_expression(rng, ARKIT, "neutral")
    assert n.max() < 0.1
    mix = np.stack([sample_expression(rng, ARKIT, "random_mix") for _ in range(20)])
    assert ((mix > 0.1).sum(1) >= 3).all()


def test_identity_scale():
    rng = np.random.default_rng(0)
    a = sample_identity(rng, 4000, 100, scale=0.5)
    assert a.shape == (4000, 100) and a.dtype == np.float32
    assert abs(a.std() - 0.5) < 0.01


def test_euler_rotation_conventions():
    R = euler_to_rotation(np.array([30.0]), np.array([-20.0]), np.array([10.0]))[0]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(R), 1)
    # Positive yaw turns the face (+z) towards the subject's left (+x).
    Ry = euler_to_rotation(np.array([30.0]), np.array([0.0]), np.array([0.0]))[0]
    assert (Ry @ [0, 0, 1])[0] > 0.4


def test_pose_sampler_challenge_ranges():
    rng = np.random.default_rng(1)
    sampler = PoseSampler()
    R_t, ang = sampler.sample(rng, 5000, K)
    assert R_t.shape == (5000, 4, 4)
    np.testing.assert_array_equal(R_t[:, :3, 3], 0)
    np.testing.assert_array_equal(R_t[:, 3, 3], 1)
    R = R_t[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    face_distance = -R_t[:, 3, 2] - sampler.face_depth
    assert face_distance.min() >= 0.3 - 1e-5 and face_distance.max() <= 0.9 + 1e-5
    assert np.abs(ang[:, 0]).max() <= 90 and np.abs(ang[:, 1]).max() <= 60 and np.abs(ang[:, 2]).max() <= 30
    assert np.mean(np.abs(ang[:, 0]) < 30) > 0.5  # most mass near frontal
    assert np.abs(ang[:, 0]).max() > 80  # but profiles occur
    # Head centres land inside the frame, and off-centre ones occur.
    uv = project_points(np.zeros((5000, 1, 3)), R_t.astype(np.float64), K)[:, 0]
    assert (uv >= 0).all() and (uv < 800).all()
    assert np.abs(uv - 400).max() > 200
    assert sample_pose(rng, 3, K).shape == (3, 4, 4)


def test_crop_projection_equals_affine_of_projection():
    rng = np.random.default_rng(2)
    R_t = sample_pose(rng, 4, K).astype(np.float64)
    V = rng.uniform(-0.1, 0.1, (4, 30, 3))
    M = np.array([[0.8, -0.1, 12.0], [0.1, 0.8, -40.0]])[None] + 0 * R_t[:, :2, :3]
    M = np.concatenate([jitter_similarity(rng, 4, 256, CropJitter())[:, :, :2] @ M[:, :, :2],
                        M[:, :, 2:]], -1)
    Kc = crop_projection(M, np.broadcast_to(K, (4, 3, 3)))
    np.testing.assert_allclose(project_points(V, R_t, Kc), apply_affine(M, project_points(V, R_t, K)), atol=1e-8)


def test_jitter_none_is_identity_and_jitter_keeps_similarity():
    rng = np.random.default_rng(3)
    J = jitter_similarity(rng, 2, 256, CropJitter.none())
    np.testing.assert_allclose(J, np.broadcast_to([[1, 0, 0], [0, 1, 0]], (2, 2, 3)), atol=1e-12)
    J = jitter_similarity(rng, 100, 256, CropJitter(0.1, 10, 0.05))
    A = J[:, :, :2]
    np.testing.assert_allclose(A[:, 0, 0], A[:, 1, 1])
    np.testing.assert_allclose(A[:, 0, 1], -A[:, 1, 0])
    s = np.sqrt(np.linalg.det(A))
    assert s.min() >= 0.9 - 1e-9 and s.max() <= 1.1 + 1e-9 and s.std() > 0.02


def test_layout_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    verts = rng.normal(size=(50, 3)).astype(np.float32)
    R_t = np.eye(4, dtype=np.float32)
    R_t[3, :3] = [0.01, -0.02, -0.5]
    lm = rng.uniform(0, 800, (68, 2))
    img = np.zeros((800, 800, 3), np.uint8)
    import cv2

    _, buf = cv2.imencode(".jpg", img)
    paths = write_sample(tmp_path, "00003", "7", "000012", buf.tobytes(), verts, R_t, lm,
                         identity=np.ones(100), expression=np.zeros(53))
    assert paths["image"] == tmp_path / "image/00003/7/000012_ar.jpg"
    assert paths["info"] == tmp_path / "info/00003/7/000012_info.npz"
    assert paths["landmarks"] == tmp_path / "68landmarks/00003/7/000012_68landmarks.txt"
    write_resources(tmp_path)
    write_lists(tmp_path, [("00003", "7", "000012"), ("00004", "1", "000000")], val_subjects=["00004"])
    assert read_list(tmp_path, "train") == [("00003", "7", "000012")]
    assert read_list(tmp_path, "val") == [("00004", "1", "000000")]
    assert (tmp_path / "list/all.csv").read_text().splitlines()[0] == "subject_id,facial_action,img_id"
    s = load_sample(tmp_path, "00003", "7", "000012")
    np.testing.assert_array_equal(s.verts, verts)
    np.testing.assert_array_equal(s.R_t, R_t)
    np.testing.assert_allclose(s.landmarks68, lm, atol=1e-4)
    assert s.load_image().shape == (800, 800, 3)
    with np.load(paths["info"]) as info:
        assert info["coeffs"].shape == (153,)
    np.testing.assert_allclose(read_intrinsics(tmp_path), K, atol=1e-6)
    np.testing.assert_allclose(read_intrinsics(tmp_path, (400, 400))[0, 2], 200)
    assert len(ChallengeSamples(tmp_path)) == 2


def test_contact_sheet_and_wireframe():
    tiles = [np.zeros((32, 32, 3), np.uint8) for _ in range(6)]
    sheet = contact_sheet(tiles, cols=4, gap=2)
    assert sheet.shape == (2 * 32 + 3 * 2, 4 * 32 + 5 * 2, 3)
    wf = draw_wireframe(tiles[0], np.array([[2.0, 2.0], [28.0, 4.0], [15.0, 28.0]]), np.array([[0, 1, 2]]))
    assert wf.sum() > 0 and tiles[0].sum() == 0

"""Occluders sit where they belong: a hat covers the cranium above its band, never the face."""

from __future__ import annotations

import numpy as np
import pytest

from jmlr.synth.occluders import Anchors, draw_primitives, hat

SIZE, F = 256, 300.0
CENTRE, RADIUS = np.array([0.0, 0.01, 0.0]), 0.09  # a spherical head, head frame (y up, z out of the face)


def _landmarks() -> np.ndarray:
    """Just what `hat` reads: temples (0, 16), brows (17-26), nose bridge (27)."""
    lm = np.zeros((68, 3))
    lm[0], lm[16] = [-0.068, 0.0, 0.045], [0.068, 0.0, 0.045]
    lm[17:27] = np.c_[np.linspace(-0.05, 0.05, 10), np.full(10, 0.03), np.full(10, 0.08)]
    lm[27] = [0.0, 0.02, 0.09]
    return lm


def _anchors(pitch_deg: float) -> Anchors:
    """Head at 0.5 m straight ahead, pitched by ``pitch_deg`` (> 0: looking down, the crown
    towards the camera; < 0: looking up, the camera sees the face from below)."""
    t = np.deg2rad(pitch_deg)
    # Row vectors: p_cam = p @ R + T; rotating about x by -t lifts the face towards +y.
    R = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]]).T
    K = np.array([[F, 0, SIZE / 2], [0, F, SIZE / 2], [0, 0, 1.0]])
    return Anchors(lm=_landmarks(), R=R, T=np.array([0.0, 0.0, -0.5]), K=K)


def _head_depth(a: Anchors) -> np.ndarray:
    """OpenCV depth of the sphere at every pixel (0 off the head)."""
    u, v = np.meshgrid(np.arange(SIZE, dtype=float), np.arange(SIZE, dtype=float))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(a.K).T
    c = a.to_camera(CENTRE[None])[0]
    # |s r - c| = R: s^2 |r|^2 - 2 s r.c + |c|^2 - R^2 = 0, nearest root.
    rr, rc = (rays**2).sum(-1), rays @ c
    disc = rc**2 - rr * (c @ c - RADIUS**2)
    s = (rc - np.sqrt(np.maximum(disc, 0))) / rr
    return np.where(disc > 0, s, 0.0)  # s is the OpenCV depth (rays have z = 1)


def _pixel(a: Anchors, head_point) -> tuple[int, int, float]:
    uv, z = a.project(np.asarray(head_point, float)[None])
    x, y = np.round(uv[0]).astype(int)
    return int(x), int(y), float(z[0])


@pytest.mark.parametrize("seed", range(6))
def test_a_hat_covers_the_crown_and_never_a_face_seen_from_below(seed):
    face = CENTRE + RADIUS * np.array([0.0, -np.sin(0.3), np.cos(0.3)])  # below the brows, on the sphere
    crown = CENTRE + RADIUS * np.array([0.0, np.sin(1.0), np.cos(1.0)])  # high on the forehead
    for pitch in (-50.0, -25.0, 0.0, 25.0, 50.0):
        a = _anchors(pitch)
        depth = _head_depth(a)
        prims = hat(a, np.random.default_rng(seed), {})
        prims = prims[:1]  # the dome (the brim is depth-tested on its own)
        _, alpha, _ = draw_primitives(prims, a, depth, None)
        x, y, _ = _pixel(a, face)
        assert alpha[y, x] == 0.0, f"pitch {pitch}: the hat covers the face"
        x, y, z = _pixel(a, crown)
        if abs(depth[y, x] - z) < 1e-3:  # the crown point is in sight
            assert alpha[y, x] > 0.9, f"pitch {pitch}: the hat leaves the crown bare"


def _posed(lm: np.ndarray, yaw_deg: float, pitch_deg: float) -> Anchors:
    """The head at 0.45 m, turned by ``yaw_deg`` and pitched by ``pitch_deg`` (as `_anchors`)."""
    t, y = np.deg2rad(pitch_deg), np.deg2rad(yaw_deg)
    Rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    K = np.array([[F, 0, SIZE / 2], [0, F, SIZE / 2], [0, 0, 1.0]])
    return Anchors(lm=lm, R=(Ry @ Rx).T, T=np.array([0.0, 0.0, -0.45]), K=K)


@pytest.mark.parametrize("yaw", [-60.0, -30.0, 0.0, 30.0, 60.0])
def test_a_mask_covers_mouth_nose_and_chin_whatever_the_pose(yaw):
    """The mask's edge polygon alone folded on a turned face (at 60 degrees of yaw it
    covered none of the mouth); the bulge's hull keeps mouth, nose tip and chin covered,
    and a face seen from the front keeps its eyes."""
    from jmlr.facemodel.topology import Topology
    from jmlr.synth.occluders import mask

    topo = Topology.load()
    lm = topo.mean_shape[topo.landmarks68].astype(np.float64)
    for pitch in (-45.0, 0.0, 45.0):
        a = _posed(lm, yaw, pitch)
        _, alpha, _ = draw_primitives(mask(a, np.random.default_rng(0), {})[:2], a, np.zeros((SIZE, SIZE)), None)
        uv, _ = a.project(lm)

        def covered(i: int, alpha: np.ndarray = alpha, uv: np.ndarray = uv) -> bool:
            return bool(alpha[int(round(uv[i, 1])), int(round(uv[i, 0]))] > 0.5)

        # (the nose tip is on the outline in profile, where the edge is anti-aliased)
        bare = [i for i in (*range(48, 68), 33, 8, *((30,) if abs(yaw) <= 30 else ())) if not covered(i)]
        assert not bare, f"yaw {yaw}, pitch {pitch}: landmarks {bare} not under the mask"
        if abs(yaw) <= 30 and pitch == 0.0:
            eyes = [lm[36:42].mean(0), lm[42:48].mean(0)]
            (x0, y0), (x1, y1) = np.round(a.project(np.array(eyes))[0]).astype(int)
            assert alpha[y0, x0] == 0.0 and alpha[y1, x1] == 0.0, f"yaw {yaw}: the mask covers an eye"

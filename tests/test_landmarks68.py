"""The 68 points' jaw line on the visible outline (jmlr.facemodel.contour, jmlr.inference.landmarks)."""

from __future__ import annotations

import numpy as np
import pytest

from jmlr.facemodel.contour import CHIN_POINTS, jaw_contour
from jmlr.facemodel.topology import Topology, default_topology_path
from jmlr.geometry.rotation import euler_to_matrix
from jmlr.inference.landmarks import contour_landmarks_68

# OpenGL head frame (y up, z to the camera) -> OpenCV camera (y down, z forward)
GL_TO_CV = np.diag([1.0, -1.0, -1.0])


@pytest.fixture(scope="module")
def topology() -> Topology:
    return Topology.load(default_topology_path())


def _posed(topology: Topology, yaw: float, pitch: float = 0.0, roll: float = 0.0, distance: float = 0.5):
    """The mean face turned by (yaw, pitch, roll) degrees, ``distance`` m in front of a
    camera that makes it about 100 px wide: its vertices projected (N, 2) and the
    world -> OpenCV rotation."""
    R_cv = GL_TO_CV @ euler_to_matrix(yaw, pitch, roll)
    X = topology.mean_shape.astype(np.float64) @ R_cv.T + [0.0, 0.0, distance]
    return X[:, :2] / X[:, 2:] * (600.0 * distance / 0.5) + 320.0, R_cv


def test_candidates_lie_on_the_point_s_side_and_height(topology):
    c = jaw_contour(topology.mean_shape, topology.landmarks68, band_m=0.005, inner=0.5)
    V = topology.mean_shape
    assert len(c.candidates) == 17
    for k, cands in enumerate(c.candidates):
        v = topology.landmarks68[k]
        assert cands[0] == v and len(set(cands.tolist())) == len(cands)
        if k in CHIN_POINTS:
            assert len(cands) == 1
            continue
        assert len(cands) > 1
        assert np.all(np.abs(V[cands, 1] - V[v, 1]) <= 0.005 + 1e-9)
        assert np.all(np.sign(V[cands, 0]) == c.sides[k])
        assert np.all(np.abs(V[cands, 0]) <= abs(V[v, 0]) + 1e-9)
        assert np.all(np.abs(V[cands, 0]) >= 0.5 * abs(V[v, 0]) - 1e-9)
    # symmetric: the mirror of each point's candidates are its mirror point's
    for k in range(17):
        mirrored = set(topology.flip_index[c.candidates[k]].tolist())
        assert mirrored == set(c.candidates[16 - k].tolist())
    assert topology.jaw_contour.sides.tolist() == c.sides.tolist()  # the cached property


def test_a_frontal_face_seen_from_afar_keeps_its_fixed_points(topology):
    # Without perspective the furthest-out vertex of each line is the rim's, the jaw point;
    # the soft maximum blends in the rim's neighbours at almost the same reach, so the
    # points stay within 2 % of the face's height (about 3 px here), sideways within 1 %.
    P, R_cv = _posed(topology, 0.0, distance=50.0)
    out = contour_landmarks_68(P, R_cv, topology.landmarks68, topology.jaw_contour)
    fixed = P[topology.landmarks68]
    height = np.linalg.norm(fixed[8] - fixed[27])
    np.testing.assert_array_equal(out[17:], fixed[17:])
    assert np.abs(out[:17, 0] - fixed[:17, 0]).max() < 0.01 * height
    assert np.linalg.norm(out[:17] - fixed[:17], axis=1).max() < 0.02 * height


@pytest.mark.parametrize("yaw", [-50.0, -30.0, 0.0, 30.0, 50.0])
def test_jaw_points_move_out_to_their_furthest_candidate_the_far_side_most(topology, yaw):
    P, R_cv = _posed(topology, yaw, pitch=5.0, roll=8.0)
    fixed = P[topology.landmarks68]
    height = np.linalg.norm(fixed[8] - fixed[27])
    out = contour_landmarks_68(P, R_cv, topology.landmarks68, topology.jaw_contour)
    np.testing.assert_array_equal(out[17:], fixed[17:])
    np.testing.assert_array_equal(out[list(CHIN_POINTS)], fixed[list(CHIN_POINTS)])
    contour = topology.jaw_contour
    # the image direction of the head's +x side, across its rolled up axis
    up = R_cv[:2, 1]
    plus_x = np.array([-up[1], up[0]]) / np.linalg.norm(up)
    plus_x *= np.sign(plus_x @ R_cv[:2, 0])
    for k, cands in enumerate(contour.candidates):
        # about as far out as the furthest candidate (a soft maximum: within 2 % of the
        # face's height, about 3 px for this 170 px face), and near a candidate
        reach = contour.sides[k] * (P[cands] @ plus_x)
        got = contour.sides[k] * (out[k] @ plus_x)
        assert reach.max() - 0.02 * height < got <= reach.max() + 1e-9
        assert np.linalg.norm(P[cands] - out[k], axis=1).min() < 0.03 * height
    moved = np.linalg.norm(out[:17] - fixed[:17], axis=1)
    if yaw == 0.0:
        assert moved.max() < 8.0  # perspective alone: a few px
        return
    # the far side (its jaw deepest from the camera) moves most: the cheek hides its jaw
    depth = (topology.mean_shape.astype(np.float64) @ R_cv.T)[topology.landmarks68[:17], 2]
    far_side = contour.sides[int(np.argmax(depth))]
    far = [k for k in range(17) if contour.sides[k] == far_side]
    near = [k for k in range(17) if contour.sides[k] == -far_side]
    assert moved[far].max() > (20.0 if abs(yaw) == 50 else 10.0)
    assert moved[far].sum() > 2 * moved[near].sum()


def test_the_points_glide_as_the_head_turns(topology):
    """Turning 0.05 degrees at a time, no jaw point jumps (an argmax would jump a vertex
    spacing, several px, whenever another candidate takes over)."""
    prev, steps = None, []
    for yaw in np.arange(20.0, 50.0, 0.05):
        P, R_cv = _posed(topology, float(yaw), pitch=5.0, roll=8.0)
        out = contour_landmarks_68(P, R_cv, topology.landmarks68, topology.jaw_contour)[:17]
        if prev is not None:
            steps.append(np.linalg.norm(out - prev, axis=1).max())
        prev = out
    assert max(steps) < 0.5


def test_degenerate_rotations_leave_the_points_fixed(topology):
    P, _ = _posed(topology, 20.0)
    fixed = P[topology.landmarks68]
    for R in (np.full((3, 3), np.nan), np.zeros((3, 3))):
        np.testing.assert_array_equal(contour_landmarks_68(P, R, topology.landmarks68, topology.jaw_contour), fixed)

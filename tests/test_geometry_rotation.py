"""Rotation parameterisations round-trip and follow the documented axes."""

import cv2
import numpy as np
import pytest

from jmlr.geometry import rotation as rot


def random_rotations(n, seed=0):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return rot.quaternion_to_matrix(q)


def test_euler_roundtrip_and_axes():
    rng = np.random.default_rng(0)
    yaw, roll = rng.uniform(-179, 179, (2, 200))
    pitch = rng.uniform(-89, 89, 200)
    R = rot.euler_to_matrix(yaw, pitch, roll)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    y2, p2, r2 = rot.matrix_to_euler(R)
    np.testing.assert_allclose(np.stack([y2, p2, r2]), np.stack([yaw, pitch, roll]), atol=1e-9)
    # yaw turns about the up axis (y): +90° takes +z to +x
    np.testing.assert_allclose(rot.euler_to_matrix(90, 0, 0) @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    # pitch about x: +90° takes +y to +z; roll about z: +90° takes +x to +y
    np.testing.assert_allclose(rot.euler_to_matrix(0, 90, 0) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rot.euler_to_matrix(0, 0, 90) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_euler_gimbal_lock_still_reconstructs():
    R = rot.euler_to_matrix(30, 90, 20)
    np.testing.assert_allclose(rot.euler_to_matrix(*rot.matrix_to_euler(R)), R, atol=1e-9)


def test_head_pose_euler_from_rt():
    from jmlr.geometry.camera import rt_from_rotation_translation

    R_col = rot.euler_to_matrix(20, -10, 5)
    R_t = rt_from_rotation_translation(R_col.T, [0, 0, -0.5])
    np.testing.assert_allclose(rot.head_pose_euler(R_t), (20, -10, 5), atol=1e-9)


def test_view_direction_angles():
    from jmlr.geometry.camera import rt_from_rotation_translation

    def rt(yaw, pitch, t):
        return rt_from_rotation_translation(rot.euler_to_matrix(yaw, pitch, 0).T, t)

    # On the optical axis, the view is the head's rotation undone: azimuth -yaw, elevation pitch.
    np.testing.assert_allclose(rot.view_direction_angles(rt(20, 0, [0, 0, -0.5]), np.zeros(3)), (-20, 0), atol=1e-9)
    np.testing.assert_allclose(rot.view_direction_angles(rt(0, -10, [0, 0, -0.5]), np.zeros(3)), (0, -10), atol=1e-9)
    # An upright frontal head 0.3 m above the axis at 0.5 m is seen from below; batched.
    both = np.stack([rt(0, 0, [0, 0.3, -0.5]), rt(0, 0, [0.5, 0, -0.5])])
    az, el = rot.view_direction_angles(both, np.zeros((2, 3)))
    np.testing.assert_allclose(el, [-np.degrees(np.arctan2(0.3, 0.5)), 0], atol=1e-9)
    np.testing.assert_allclose(az, [0, -45], atol=1e-9)
    # The point matters: seen from a point 0.1 m above the head's origin.
    _, el = rot.view_direction_angles(rt(0, 0, [0, 0, -0.5]), np.array([0, 0.1, 0]))
    np.testing.assert_allclose(el, -np.degrees(np.arctan2(0.1, 0.5)), atol=1e-9)


def test_quaternion_roundtrip_all_branches():
    R = random_rotations(500)
    # include the identity and 180° turns (each Shepperd branch)
    R = np.concatenate([R, np.eye(3)[None], np.diag([1.0, -1, -1])[None], np.diag([-1.0, 1, -1])[None],
                        np.diag([-1.0, -1, 1])[None]])
    q = rot.matrix_to_quaternion(R)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1, atol=1e-12)
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(rot.quaternion_to_matrix(q), R, atol=1e-10)
    np.testing.assert_allclose(rot.matrix_to_quaternion(rot.euler_to_matrix(90, 0, 0)),
                               [np.sqrt(0.5), 0, np.sqrt(0.5), 0], atol=1e-12)


def test_rotvec_roundtrip_and_matches_cv2():
    R = random_rotations(300, seed=1)
    r = rot.matrix_to_rotvec(R)
    assert np.all(np.linalg.norm(r, axis=-1) <= np.pi + 1e-12)
    np.testing.assert_allclose(rot.rotvec_to_matrix(r), R, atol=1e-10)
    for i in range(5):
        np.testing.assert_allclose(r[i], cv2.Rodrigues(R[i])[0].ravel(), atol=1e-9)
    tiny = np.array([1e-9, -2e-9, 3e-10])
    np.testing.assert_allclose(rot.matrix_to_rotvec(rot.rotvec_to_matrix(tiny)), tiny, atol=1e-15)
    np.testing.assert_allclose(rot.rotvec_to_matrix(np.zeros(3)), np.eye(3))


def test_geodesic_angle():
    R = random_rotations(50, seed=2)
    axis = np.random.default_rng(3).normal(size=(50, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    for deg in (1e-6, 0.5, 37.0, 179.9):
        D = rot.rotvec_to_matrix(axis * np.deg2rad(deg))
        np.testing.assert_allclose(rot.geodesic_angle_deg(R, R @ D), deg, rtol=1e-6)
        np.testing.assert_allclose(rot.geodesic_angle_deg(np.swapaxes(R, -1, -2), np.swapaxes(R @ D, -1, -2)),
                                   deg, rtol=1e-6)
    assert rot.geodesic_angle_deg(np.eye(3), np.diag([-1.0, -1, 1])) == pytest.approx(180)


def test_pose_matrix_and_wrap():
    R = rot.euler_to_matrix(10, 20, 30)
    P = rot.pose_matrix(R, np.array([[1.0], [2], [3]]))
    np.testing.assert_allclose(P @ [1, 0, 0, 1], np.r_[R @ [1, 0, 0] + [1, 2, 3], 1])
    np.testing.assert_allclose(rot.wrap_angle_deg([190, -190, 180, 360]), [-170, 170, 180, 0])

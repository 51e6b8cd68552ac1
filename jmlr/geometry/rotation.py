"""Rotation parameterisations: Euler (yaw, pitch, roll), quaternion, rotation vector.

Unless stated, a rotation matrix here is a *column-vector* rotation (``x' = R @ x``),
batched over leading dimensions (…, 3, 3). The challenge's row-vector ``R_t[:3, :3]``
is the transpose of the column-vector rotation of the head in the OpenGL camera frame;
:func:`head_pose_euler` takes an ``R_t`` directly.

Euler convention: ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (intrinsic y-x'-z''), angles in
degrees, right-handed, with y the *up* axis of the frame (OpenGL camera / head frame),
x to the right, z towards the viewer. Yaw is the head turning left/right (about the
up axis), pitch nodding (about x), roll tilting in the image plane (about z).
Ranges: yaw, roll in (-180, 180], pitch in [-90, 90].

Quaternions are (w, x, y, z), unit norm, returned with w ≥ 0.
"""

from __future__ import annotations

import numpy as np


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], axis=-1).reshape(a.shape + (3, 3))


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], axis=-1).reshape(a.shape + (3, 3))


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], axis=-1).reshape(a.shape + (3, 3))


def euler_to_matrix(yaw, pitch, roll) -> np.ndarray:
    """Column-vector R (…, 3, 3) = Ry(yaw) @ Rx(pitch) @ Rz(roll); angles in degrees (broadcast)."""
    yaw, pitch, roll = np.broadcast_arrays(
        *(np.deg2rad(np.asarray(a, dtype=np.float64)) for a in (yaw, pitch, roll))
    )
    return _rot_y(yaw) @ _rot_x(pitch) @ _rot_z(roll)


def matrix_to_euler(R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(yaw, pitch, roll) in degrees, each (…,), of column-vector R (…, 3, 3); inverse of :func:`euler_to_matrix`.

    At gimbal lock (pitch = ±90°) roll is set to 0 and yaw absorbs the rest.
    """
    R = np.asarray(R, dtype=np.float64)
    sp = np.clip(-R[..., 1, 2], -1.0, 1.0)
    pitch = np.arcsin(sp)
    cp = np.hypot(R[..., 1, 0], R[..., 1, 1])
    locked = cp < 1e-9
    yaw = np.where(locked, np.arctan2(-R[..., 2, 0], R[..., 0, 0]), np.arctan2(R[..., 0, 2], R[..., 2, 2]))
    roll = np.where(locked, 0.0, np.arctan2(R[..., 1, 0], R[..., 1, 1]))
    return np.rad2deg(yaw), np.rad2deg(pitch), np.rad2deg(roll)


def head_pose_euler(R_t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(yaw, pitch, roll) degrees of the head in the OpenGL camera frame from challenge R_t (…, 4, 4).

    A frontal head (head frame aligned with the OpenGL camera frame) is (0, 0, 0).
    """
    R_t = np.asarray(R_t, dtype=np.float64)
    return matrix_to_euler(np.swapaxes(R_t[..., :3, :3], -1, -2))


def view_direction_angles(R_t: np.ndarray, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(azimuth, elevation) in degrees, each (…,), of the camera as seen from ``point``
    (…, 3) of the head (world frame, e.g. the face's centroid), from challenge R_t (…, 4, 4).

    Azimuth turns about the head's up axis (y) from its front (+z) towards its +x;
    elevation is the angle above the head's x-z plane. A frontal face on the optical axis
    is (0, 0). Unlike :func:`head_pose_euler`, this is how the camera sees the face: an
    upright head near the top edge of a close, wide-angle frame is seen from below.
    """
    R_t = np.asarray(R_t, dtype=np.float64)
    R, t = R_t[..., :3, :3], R_t[..., 3, :3]
    # Row vectors: x_cam = x R + t, so the camera centre is -t R^T in the world frame.
    eye = -np.einsum("...j,...ij->...i", t, R)
    d = eye - np.asarray(point, dtype=np.float64)
    azimuth = np.arctan2(d[..., 0], d[..., 2])
    elevation = np.arctan2(d[..., 1], np.hypot(d[..., 0], d[..., 2]))
    return np.rad2deg(azimuth), np.rad2deg(elevation)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (…, 4) (w, x, y, z), w ≥ 0, of R (…, 3, 3); stable for all angles (Shepperd)."""
    R = np.asarray(R, dtype=np.float64)
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    q_abs = np.sqrt(
        np.maximum(
            0.0,
            np.stack(
                [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=-1
            ),
        )
    )
    # candidate i is computed from the largest of |w|, |x|, |y|, |z| for numerical stability
    cands = np.stack(
        [
            np.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], axis=-1),
            np.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], axis=-1),
            np.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], axis=-1),
            np.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], axis=-1),
        ],
        axis=-2,
    ) / (2.0 * np.maximum(q_abs[..., :, None], 0.1))
    best = np.argmax(q_abs, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """R (…, 3, 3) from quaternion (…, 4) (w, x, y, z); q need not be normalised."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )  # fmt: skip
    return R.reshape(q.shape[:-1] + (3, 3))


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation vector (…, 3) (axis × angle, radians, angle in [0, π]) of R (…, 3, 3)."""
    q = matrix_to_quaternion(R)
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    # angle / s → 2 / w as s → 0
    factor = np.where(s > 1e-12, angle / np.maximum(s, 1e-300), 2.0 / q[..., :1])
    return v * factor


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """R (…, 3, 3) from a rotation vector (…, 3) in radians (Rodrigues)."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    half = 0.5 * np.linalg.norm(rotvec, axis=-1, keepdims=True)
    # sin(half)/|r| = 0.5 * sinc(half), well defined at 0
    q = np.concatenate([np.cos(half), rotvec * 0.5 * np.sinc(half / np.pi)], axis=-1)
    return quaternion_to_matrix(q)


def pose_matrix(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Column-vector 4×4 pose (…, 4, 4) ``[[R, t], [0, 1]]`` from R (…, 3, 3), t (…, 3) or (…, 3, 1).

    (For the challenge's row-vector layout use :func:`jmlr.geometry.camera.rt_from_rotation_translation`.)
    """
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if t.shape[-2:] == (3, 1):
        t = t[..., 0]
    shape = np.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    P = np.zeros(shape + (4, 4))
    P[..., :3, :3] = R
    P[..., :3, 3] = t
    P[..., 3, 3] = 1.0
    return P


def geodesic_angle_deg(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Angle (…,) in degrees of the rotation taking R1 to R2, in [0, 180].

    Computed as atan2(|vee(D - Dᵀ)| / 2, (tr D - 1) / 2) with D = R1ᵀ R2, accurate
    near 0 and 180° where arccos of the trace is not. Works for row- or column-vector
    matrices alike (the angle of Dᵀ equals that of D).
    """
    D = np.swapaxes(np.asarray(R1, dtype=np.float64), -1, -2) @ np.asarray(R2, dtype=np.float64)
    cos = 0.5 * (np.trace(D, axis1=-2, axis2=-1) - 1.0)
    vee = np.stack([D[..., 2, 1] - D[..., 1, 2], D[..., 0, 2] - D[..., 2, 0], D[..., 1, 0] - D[..., 0, 1]], axis=-1)
    sin = 0.5 * np.linalg.norm(vee, axis=-1)
    return np.rad2deg(np.arctan2(sin, cos))


def wrap_angle_deg(a) -> np.ndarray:
    """Wrap angles in degrees to (-180, 180]."""
    a = np.asarray(a, dtype=np.float64)
    return 180.0 - np.mod(180.0 - a, 360.0)

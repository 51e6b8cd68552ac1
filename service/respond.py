"""Reconstructions and intrinsics as the API answers them (rounded for JSON, nothing
recomputed: every number comes from the `FaceReconstruction` or the `Intrinsics`)."""

from __future__ import annotations

import math

import numpy as np

from jmlr.facemodel.topology import Topology
from jmlr.geometry.intrinsics import Intrinsics
from jmlr.geometry.rotation import head_pose_euler, matrix_to_quaternion, pose_matrix
from jmlr.inference import FaceReconstruction

from .schemas import CameraOut, CameraSource, Distortion, FaceOut, Pose


def rounded(a: np.ndarray, nd: int = 6) -> list:
    """Nested lists of ``a`` rounded to ``nd`` decimals (JSON needs no more)."""
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def camera_out(intrinsics: Intrinsics, source: CameraSource) -> CameraOut:
    K = intrinsics.K
    fov_x, fov_y = intrinsics.fov
    distortion = None if intrinsics.distortion is None else Distortion(**intrinsics.to_dict()["distortion"])
    return CameraOut(
        K=rounded(K), fx=intrinsics.fx, fy=intrinsics.fy, cx=intrinsics.cx, cy=intrinsics.cy,
        source=source, distortion=distortion, fov_x_deg=round(fov_x, 4), fov_y_deg=round(fov_y, 4),
    )


def pose_out(rec: FaceReconstruction) -> Pose:
    R, t = rec.pose.R_cv, rec.pose.t_cv
    yaw, pitch, roll = head_pose_euler(rec.pose.R_t)
    return Pose(
        rotation=rounded(R, 8), translation=rounded(t, 6), rotation_vector=rounded(rec.pose.rvec, 8),
        quaternion_wxyz=rounded(matrix_to_quaternion(R), 8), matrix=rounded(pose_matrix(R, t), 8),
        yaw=round(float(yaw), 4), pitch=round(float(pitch), 4), roll=round(float(roll), 4),
    )


def face_out(rec: FaceReconstruction, include: set[str], topology: Topology, outline: bool = True) -> FaceOut:
    """One face of the response; the optional arrays only when ``include`` names them.
    ``outline``: the 68 points' jaw line on the visible outline (`FaceReconstruction.landmarks_68`)."""
    f, rms = rec.face, float(rec.pose.rms_px)
    face = FaceOut(
        bbox=rounded(f.bbox, 2), score=None if f.score is None else round(float(f.score), 5), source=f.source,
        landmarks5=rounded(f.landmarks5, 2), pose=pose_out(rec), pose_ok=bool(rec.pose.success),
        reprojection_rms_px=round(rms, 4) if math.isfinite(rms) else None,
        distance_m=round(rec.distance_m, 6),
    )
    lm68 = rec.landmarks_68(topology, outline)
    if lm68 is not None:
        face.landmarks_68 = rounded(lm68, 2)
    if "landmarks_2d" in include:
        face.landmarks_2d = rounded(rec.pose.projected, 2)
    if "vertices" in include:
        face.vertices = rounded(rec.vertices, 6)
    if "vertices_camera" in include:
        face.vertices_camera = rounded(rec.vertices_camera, 6)
    return face

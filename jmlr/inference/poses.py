"""From predicted vertices and image points to posed faces: PnP with the camera, once.

A :class:`FaceReconstruction` keeps what PnP computed (rotation, translation, rotation
vector, reprojection) so that a response, a stored mesh and a metric all read the same
numbers instead of recomputing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jmlr.facemodel.topology import Topology
from jmlr.geometry.camera import world_to_opencv
from jmlr.geometry.intrinsics import Intrinsics
from jmlr.geometry.pnp import PnPResult, solve_pnp

from .faces import Face
from .landmarks import contour_landmarks_68

__all__ = ["FaceReconstruction", "solve_poses", "reconstruct_faces"]


@dataclass(frozen=True)
class FaceReconstruction:
    """One reconstructed face.

    Attributes:
        face: where it was found (box, five points, score, source).
        vertices: (N, 3) float64 world (head-frame) vertices, metres; the topology's order.
        points: (N, 2) float64 the network's 2D points of those vertices, image px (PnP's input).
        pose: the PnP result: world -> OpenCV camera ``R_cv``, ``t_cv`` (m), ``rvec``, the
            challenge's ``R_t``, ``rms_px``, ``success`` and ``projected`` (N, 2) image px.
        expression: (E,) float64 expression weights in [0, 1] from a model with an
            expression head (its ``expression_names`` order), else None.
    """

    face: Face
    vertices: np.ndarray
    points: np.ndarray
    pose: PnPResult
    expression: np.ndarray | None = None

    @property
    def finite(self) -> bool:
        """Every number finite (a face that is not cannot be answered in JSON)."""
        p = self.pose
        return bool(np.isfinite(self.vertices).all() and np.isfinite(self.points).all()
                    and np.isfinite(p.R_cv).all() and np.isfinite(p.t_cv).all() and np.isfinite(p.projected).all())

    @property
    def vertices_camera(self) -> np.ndarray:
        """(N, 3) vertices in the OpenCV camera frame, metres."""
        return world_to_opencv(self.vertices, self.pose.R_cv, self.pose.t_cv)

    @property
    def distance_m(self) -> float:
        """Distance from the camera centre to the head origin, metres."""
        return float(np.linalg.norm(self.pose.t_cv))

    def landmarks_68(self, topology: Topology, outline: bool = True) -> np.ndarray | None:
        """(68, 2) iBUG landmarks of the posed mesh projected, image px; None when the
        topology has no 68-landmark index. ``outline``: the side jaw points follow the
        face's visible outline as people annotate it (`jmlr.inference.landmarks`); else
        every point is its fixed vertex."""
        lm = getattr(topology, "landmarks68", None)
        if lm is None or len(lm) != 68:
            return None
        if outline:
            return contour_landmarks_68(self.pose.projected, self.pose.R_cv, lm, topology.jaw_contour)
        return self.pose.projected[np.asarray(lm)]


# PnP solves on every 4th of the network's points (their reprojection still covers all).
# On the held-out set (bench/pnp_cost.py --model) the shipped model's score, MAE_r and
# MAE_t move by at most 0.02 mm / 0.002° / 0.01 mm against all points; in the service
# PnP went from 1.9 to 1.0 ms a face (docs/bench_service.md).
PNP_STRIDE = 4


def solve_poses(verts: np.ndarray, points: np.ndarray, intrinsics: Intrinsics,
                stride: int = PNP_STRIDE) -> list[PnPResult]:
    """PnP per face: verts (F, N, 3) head-frame m, points (F, N, 2) image px, with the
    intrinsics' K and distortion, solved on every ``stride``-th point (`solve_pnp`). A
    face with a non-finite input gets ``PnPResult.failed`` without calling OpenCV."""
    out = []
    for V, p in zip(verts, points):
        V = np.asarray(V, dtype=np.float64)
        if np.isfinite(V).all() and np.isfinite(p).all():
            out.append(solve_pnp(V, p, intrinsics, stride=stride))
        else:
            out.append(PnPResult.failed(len(V)))
    return out


def reconstruct_faces(faces: Sequence[Face], verts: np.ndarray, points: np.ndarray,
                      intrinsics: Intrinsics, expression: np.ndarray | None = None) -> list[FaceReconstruction]:
    """Pose each face: verts (F, N, 3) m and points (F, N, 2) image px, in ``faces``' order;
    ``expression`` (F, E), if the model predicts it, travels with each face."""
    poses = solve_poses(verts, points, intrinsics)
    exprs = [None] * len(poses) if expression is None else [np.asarray(e, dtype=np.float64) for e in expression]
    return [FaceReconstruction(f, np.asarray(v, dtype=np.float64), np.asarray(p, dtype=np.float64), pose, e)
            for f, v, p, pose, e in zip(faces, verts, points, poses, exprs)]

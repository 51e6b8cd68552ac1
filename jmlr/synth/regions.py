"""Per-vertex head region masks of the neutral head, and the small geometric helpers they need.

`HeadRegions` holds soft masks (skin, lips, brows, stubble, scalp, mouth, eyes, ...) computed
once from a face model's neutral head, in the model's head frame (x to the subject's left,
y up, z out of the face, metres), using the model's 68 landmark vertices to place lips and
brows. `fit_sphere`, `polyline_distance` and `smoothstep` are the helpers they are built
with, shared by the head elements (`face_detail`, `hair`, `clothing`).

This module imports no other module of `jmlr.synth`, so every one of them can import it.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["HeadRegions", "CORNEA_DEG", "PUPIL_DEG", "fit_sphere", "polyline_distance", "smoothstep"]

CORNEA_DEG = 27.0  # half-angle of the visible iris, seen from the eyeball centre
PUPIL_DEG = 10.0


def fit_sphere(points: np.ndarray) -> np.ndarray:
    """Least-squares sphere centre (3,) of points (P, 3)."""
    A = np.c_[2 * points, np.ones(len(points))]
    x = np.linalg.lstsq(A, (points ** 2).sum(1), rcond=None)[0]
    return x[:3]


def polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance (P,) from 2D points (P, 2) to a polyline (L, 2)."""
    d = np.full(len(points), np.inf)
    for a, b in itertools.pairwise(line):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        d = np.minimum(d, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return d


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step of ``x``: 0 at ``e0``, 1 at ``e1`` (either order), smooth in between."""
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


@dataclass
class HeadRegions:
    """Per-vertex soft masks (V,) float32 in [0, 1] of the full head, and the positions
    (V, 3) of the neutral head used to evaluate procedural noise.

    Fields: skin, lips, brows, stubble, scalp, mouth (mouth socket), eye_socket, gums,
    teeth, sclera, iris, pupil, limbus, iris_angle (radians around the iris axis);
    cornea (V,) bool: sclera-shell vertices in front of the iris (not rendered).
    """

    positions: np.ndarray
    skin: np.ndarray
    lips: np.ndarray
    brows: np.ndarray
    stubble: np.ndarray
    scalp: np.ndarray
    mouth: np.ndarray
    eye_socket: np.ndarray
    gums: np.ndarray
    teeth: np.ndarray
    sclera: np.ndarray
    iris: np.ndarray
    pupil: np.ndarray
    limbus: np.ndarray
    iris_angle: np.ndarray
    cornea: np.ndarray

    def support(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices, weights) of the vertices where mask ``name`` is non-zero (cached)."""
        cache = self.__dict__.setdefault("_support", {})
        if name not in cache:
            m = getattr(self, name)
            idx = np.nonzero(m > 0)[0]
            cache[name] = (idx, m[idx].astype(np.float32))
        return cache[name]

    @classmethod
    def from_facemodel(cls, facemodel) -> HeadRegions:
        """Masks of a `jmlr.facemodel.FaceModel` (ICT-FaceKit region names)."""
        v = np.asarray(facemodel.neutral, np.float64)
        n = len(v)

        def region_mask(name: str) -> np.ndarray:
            m = np.zeros(n, np.float32)
            with contextlib.suppress(KeyError):
                m[facemodel.region(name)] = 1
            return m

        face = region_mask("face")
        skin = np.clip(face + region_mask("head_neck"), 0, 1)
        lm = v[np.asarray(facemodel.landmarks68)]
        xy = v[:, :2]
        front = smoothstep(lm[:, 2].min() - 0.03, lm[:, 2].min(), v[:, 2]) * face
        # Lips: inside the outer lip contour, with a soft 1.5 mm border.
        contour = lm[48:60, :2].astype(np.float32)
        sd = np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), True) for x, y in xy])
        lips = (smoothstep(-0.0015, 0.0008, sd) * front).astype(np.float32)
        # Brows: a band around each brow polyline, thinner towards the temples.
        dist = np.minimum(polyline_distance(xy, lm[17:22, :2]), polyline_distance(xy, lm[22:27, :2]))
        # Brows sit slightly above the landmark line.
        dist_up = np.minimum(polyline_distance(xy - [0, 0.002], lm[17:22, :2]),
                             polyline_distance(xy - [0, 0.002], lm[22:27, :2]))
        dist = np.minimum(dist, dist_up)
        brows = ((1 - smoothstep(0.0018, 0.0045, dist)) * front).astype(np.float32)
        # Stubble: below the nose, above the chin line, not on the lips.
        nose_y = lm[33, 1]
        chin_y = lm[8, 1]
        beard = smoothstep(nose_y - 0.002, nose_y - 0.008, v[:, 1]) * smoothstep(
            chin_y - 0.03, chin_y - 0.005, v[:, 1])
        jaw_x = np.abs(lm[3, 0] - lm[13, 0]) / 2
        beard *= 1 - smoothstep(jaw_x * 0.85, jaw_x * 1.05, np.abs(v[:, 0]))
        stubble = (beard * (1 - lips) * skin * smoothstep(-0.01, 0.02, v[:, 2])).astype(np.float32)
        # Scalp: above a hairline that runs from the forehead down to the nape.
        brow_y = lm[19, 1]
        z_front, z_back = lm[:, 2].max() - 0.03, v[:, 2].min() + 0.04
        t = np.clip((v[:, 2] - z_back) / (z_front - z_back), 0, 1)
        hairline = (brow_y + 0.05) * t + (nose_y - 0.02) * (1 - t)
        ears = (np.abs(v[:, 0]) > 0.065) & (v[:, 2] > -0.02) & (v[:, 1] < brow_y + 0.01)
        scalp = (smoothstep(hairline - 0.004, hairline + 0.008, v[:, 1]) * skin * (~ears)).astype(np.float32)
        scalp *= (1 - brows)
        # Eyes: ICT-FaceKit's sclera is an outer shell with a corneal bulge, its iris an
        # inner sphere. The cornea (the shell within CORNEA_DEG of the bulge axis) is
        # dropped by the renderer so the inner sphere shows through; on that sphere the
        # angle from the axis gives pupil, iris and limbus.
        iris = np.zeros(n, np.float32)
        pupil = np.zeros(n, np.float32)
        limbus = np.zeros(n, np.float32)
        angle = np.zeros(n, np.float32)
        cornea = np.zeros(n, bool)
        for side in ("left", "right"):
            if f"sclera_{side}" not in facemodel.region_names or f"iris_{side}" not in facemodel.region_names:
                continue
            sl_s, sl_i = facemodel.region(f"sclera_{side}"), facemodel.region(f"iris_{side}")
            centre = fit_sphere(v[sl_s])
            d = v[sl_s] - centre
            dist = np.linalg.norm(d, axis=1)
            axis = d[dist >= np.percentile(dist, 97)].mean(0)
            axis /= np.linalg.norm(axis)
            cos_s = (d / dist[:, None]) @ axis
            cornea[sl_s] = cos_s > np.cos(np.deg2rad(CORNEA_DEG))
            d = v[sl_i] - centre
            theta = np.rad2deg(np.arccos(np.clip((d / np.linalg.norm(d, axis=1)[:, None]) @ axis, -1, 1)))
            iris[sl_i] = 1 - smoothstep(CORNEA_DEG - 1.5, CORNEA_DEG + 0.5, theta)
            pupil[sl_i] = 1 - smoothstep(PUPIL_DEG - 1.0, PUPIL_DEG + 1.0, theta)
            limbus[sl_i] = smoothstep(CORNEA_DEG - 6.0, CORNEA_DEG - 1.0, theta)
            e1 = np.cross(axis, [0.0, 1.0, 0.0])
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(axis, e1)
            angle[sl_i] = np.arctan2(d @ e2, d @ e1)
        # The whole of both eyeballs is sclera-coloured except the iris disc.
        sclera = np.clip(region_mask("sclera_left") + region_mask("sclera_right")
                         + region_mask("iris_left") + region_mask("iris_right"), 0, 1)
        return cls(
            positions=v.astype(np.float32), skin=skin, lips=lips, brows=brows, stubble=stubble,
            scalp=scalp, mouth=region_mask("mouth_socket"),
            eye_socket=np.clip(region_mask("eye_socket_left") + region_mask("eye_socket_right"), 0, 1),
            gums=region_mask("gums_tongue"), teeth=region_mask("teeth"), sclera=sclera,
            iris=iris, pupil=pupil, limbus=limbus, iris_angle=angle, cornea=cornea,
        )

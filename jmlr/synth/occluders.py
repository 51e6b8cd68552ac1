"""Things in front of faces: glasses, hats, headphones, masks, hands, phones,
microphones and strands of hair, as simple procedural geometry.

Each occluder is built in the head's frame (x to the subject's left, y up, z out of the
face, metres) from the capture's own 68 landmarks (`Anchors`), so it sits on this face
in this expression, and is drawn with the capture's camera (R_t and the K it was
rendered with, a crop folded in). Its parts are `Primitive` polygons and thick
polylines, each with a colour, an opacity and a camera depth; `draw_primitives` fills
them far to near with OpenCV (anti-aliased) and tests each against the head's depth map,
so a temple of the glasses goes behind the ear, the far headphone cup behind the head,
and a hand in front of the chin covers it. Parts that lie on the skin (a mask, hair
strands) are drawn over the head without the test. Shading is per part: ambient plus the
key light on the part's normal. Ground truth never changes: occluders only cover pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Anchors", "Primitive", "OCCLUDER_BUILDERS", "build_occluders", "draw_primitives"]

_SUBPIX = 4  # fixed-point bits of cv2's polygon coordinates
_ON_SKIN = -1.0  # depth of parts drawn over the head without the depth test


@dataclass
class Anchors:
    """Landmark-derived points of one head in its own frame (metres) and the transform to
    the camera: ``R`` (3, 3), ``T`` (3,) row-vector world -> OpenGL camera, ``K`` (3, 3)
    OpenCV camera -> image pixels."""

    lm: np.ndarray  # (68, 3)
    R: np.ndarray
    T: np.ndarray
    K: np.ndarray

    @property
    def eye_r(self) -> np.ndarray:  # the subject's right eye (image left when frontal)
        return self.lm[36:42].mean(0)

    @property
    def eye_l(self) -> np.ndarray:
        return self.lm[42:48].mean(0)

    @property
    def eye_width(self) -> float:
        return float(np.linalg.norm(self.lm[39] - self.lm[36]) + np.linalg.norm(self.lm[45] - self.lm[42])) / 2

    @property
    def brow_y(self) -> float:
        return float(self.lm[17:27, 1].max())

    @property
    def face_z(self) -> float:
        """z of the face's outline at the temples (the head's widest point is behind it)."""
        return float((self.lm[0, 2] + self.lm[16, 2]) / 2)

    def ear(self, side: int) -> np.ndarray:
        """Ear centre, ``side`` -1 the subject's right, +1 the left."""
        p = self.lm[0] if side < 0 else self.lm[16]
        return np.array([p[0] + side * 0.008, (p[1] + self.lm[36 if side < 0 else 45, 1]) / 2 - 0.01, p[2] - 0.035])

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        """(P, 3) head-frame points -> (P, 3) OpenCV camera points."""
        cam = np.asarray(pts, np.float64) @ self.R + self.T
        return cam * np.array([1.0, -1.0, -1.0])

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P, 3) head-frame points -> pixels (P, 2) and OpenCV depth (P,)."""
        cv = self.to_camera(pts)
        p = cv @ self.K.T
        z = np.maximum(p[:, 2], 1e-6)
        return p[:, :2] / z[:, None], cv[:, 2]

    def px_per_metre(self, depth: np.ndarray) -> np.ndarray:
        return np.sqrt(abs(np.linalg.det(self.K[:2, :2]))) / np.maximum(depth, 1e-6)


@dataclass
class Primitive:
    """One part: a filled polygon (``width`` 0) or a polyline of ``width`` metres through
    ``points`` (P, 3) head-frame metres; ``colour`` (3,) sRGB [0, 1]; ``alpha`` opacity;
    ``on_skin``: drawn over the head without the depth test; ``shade``: lit by the key light;
    ``shadow``: casts a shadow on the face; ``hull``: the part is the outline of a
    surface sampled by ``points``."""

    points: np.ndarray
    colour: np.ndarray
    alpha: float = 1.0
    width: float = 0.0
    on_skin: bool = False
    shade: bool = True
    shadow: bool = True
    hull: bool = False  # fill the convex hull of the points' projections (a surface's outline)
    # (4,) head-frame plane (n, d): an ``on_skin`` part covers the head only where its
    # surface has n . p + d >= 0 (a hat covers the cranium above its band, not a face seen
    # from below), and everything off the head inside its outline.
    covers_above: np.ndarray | None = None


def _ring(centre, ax1, ax2, r1: float, r2: float, n: int = 24, power: float = 2.0, t0=0.0, t1=2 * np.pi):
    """Points (n, 3) of a superellipse ``|u/r1|^p + |v/r2|^p = 1`` in the plane of ax1, ax2."""
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * np.pi - 1e-9)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / power
    u = np.sign(c) * np.abs(c) ** e * r1
    v = np.sign(s) * np.abs(s) ** e * r2
    return np.asarray(centre) + u[:, None] * np.asarray(ax1) + v[:, None] * np.asarray(ax2)


X, Y, Z = np.eye(3)


def _colour(rng: np.random.Generator, palette: np.ndarray, jitter: float = 0.08) -> np.ndarray:
    c = palette[int(rng.integers(len(palette)))]
    return np.clip(c * rng.uniform(1 - jitter, 1 + jitter, 3), 0, 1)


_DARK = np.array([[0.05, 0.05, 0.05], [0.15, 0.1, 0.07], [0.3, 0.2, 0.12], [0.6, 0.6, 0.62], [0.75, 0.62, 0.3],
                  [0.5, 0.1, 0.12], [0.1, 0.15, 0.35], [0.85, 0.85, 0.85]])
_FABRIC = np.array([[0.1, 0.1, 0.12], [0.85, 0.85, 0.82], [0.6, 0.08, 0.1], [0.1, 0.2, 0.5], [0.2, 0.35, 0.2],
                    [0.55, 0.45, 0.3], [0.9, 0.6, 0.1], [0.4, 0.4, 0.42], [0.55, 0.75, 0.85]])


# ---------------------------------------------------------------------------- builders
def glasses(a: Anchors, rng: np.random.Generator, colours: dict) -> list[Primitive]:
    """Frames (thin metal or thick acetate), tinted or clear lenses with a reflection,
    a bridge over the nose and temples back to the ears."""
    w = a.eye_width * rng.uniform(0.62, 0.8)
    h = w * rng.uniform(0.6, 0.9)
    power = rng.uniform(2.0, 5.0)
    gap = rng.uniform(0.012, 0.02)
    lift = rng.uniform(-0.001, 0.004)
    frame_w = rng.uniform(0.0012, 0.005)
    frame_c = _colour(rng, _DARK)
    sun = rng.random() < 0.3
    tint = (np.array([0.05, 0.05, 0.05]) + rng.uniform(0, 0.25, 3)) if sun else rng.uniform(0.8, 1.0, 3)
    lens_alpha = rng.uniform(0.7, 0.93) if sun else rng.uniform(0.04, 0.18)
    prims = []
    inner = []
    for side, eye in ((-1, a.eye_r), (1, a.eye_l)):
        c = eye + np.array([side * rng.uniform(0.0, 0.002), lift, gap])
        lens = _ring(c, X, Y, w, h, 28, power)
        prims.append(Primitive(lens, tint, lens_alpha, shadow=sun))
        # A reflection: a smaller bright ellipse towards the upper outer corner.
        refl = _ring(c + np.array([side * 0.3 * w, 0.3 * h, 0.0005]), X, Y, 0.45 * w, 0.25 * h, 16)
        prims.append(Primitive(refl, np.ones(3), rng.uniform(0.05, 0.35), shade=False, shadow=False))
        prims.append(Primitive(np.vstack([lens, lens[:1]]), frame_c, 1.0, width=frame_w))
        inner.append(c + np.array([-side * w, 0.3 * h, 0.0]))
        outer = c + np.array([side * w, 0.35 * h, 0.0])
        ear = a.ear(side) + np.array([-side * 0.004, 0.012, 0.0])
        t = np.linspace(0, 1, 8)[:, None]
        temple = outer * (1 - t) + ear * t
        temple[:, 0] += side * 0.006 * np.sin(np.pi * t[:, 0])  # bows out round the temples
        prims.append(Primitive(temple, frame_c, 1.0, width=frame_w * 0.8))
    bridge = np.array([inner[0], (inner[0] + inner[1]) / 2 + np.array([0, 0.002, 0.003]), inner[1]])
    prims.append(Primitive(bridge, frame_c, 1.0, width=frame_w * 0.8))
    return prims


def hat(a: Anchors, rng: np.random.Generator, colours: dict) -> list[Primitive]:
    """A cap with a brim or a beanie: a dome over the cranium down to a band above the brows."""
    colour = _colour(rng, _FABRIC)
    band_y = a.brow_y + rng.uniform(0.012, 0.035)
    half_w = abs(a.lm[16, 0] - a.lm[0, 0]) / 2 + rng.uniform(0.008, 0.018)
    cz = a.face_z - rng.uniform(0.035, 0.05)
    depth = a.lm[27, 2] - cz + 0.015  # from the dome's axis to the forehead
    top = rng.uniform(0.09, 0.13)
    # Points on the dome; its outline in the image is their convex hull (drawn over the head).
    th = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ph = np.linspace(0, np.pi / 2, 6)
    ring = np.stack([np.sin(th), np.zeros_like(th), np.cos(th)], 1)
    pts = []
    for p in ph:
        r = np.cos(p)
        pts.append(np.c_[ring[:, 0] * half_w * r, np.full_like(th, band_y - 0.03 * (1 - ring[:, 2]) / 2) +
                         np.sin(p) * top, cz + ring[:, 2] * depth * r])
    dome = np.concatenate(pts)
    # The band's plane: at band_y over the forehead, 3 cm lower at the back of the head.
    slope = 0.03 / (2 * depth)
    band = np.array([0.0, 1.0, -slope, -band_y + slope * (cz + depth) + 0.004])
    prims = [Primitive(dome, colour, 1.0, on_skin=True, hull=True, covers_above=band)]
    if rng.random() < 0.6:  # the brim of a cap
        reach = rng.uniform(0.05, 0.08)
        c = np.array([0.0, band_y - 0.004, cz + depth])
        brim = _ring(c, X, Z + Y * -rng.uniform(0.0, 0.35), half_w * 0.9, reach, 20, 2.0, 0, np.pi)
        prims.append(Primitive(np.vstack([brim, c - X * half_w * 0.9, c + X * half_w * 0.9]),
                               colour * rng.uniform(0.7, 1.0), 1.0))
    else:  # the folded cuff of a beanie
        cuff = np.array([[-half_w, band_y + 0.012, cz + depth * 0.2], [0.0, band_y + 0.012, cz + depth + 0.004],
                         [half_w, band_y + 0.012, cz + depth * 0.2]])
        prims.append(Primitive(cuff, colour * 0.8, 1.0, width=0.02, on_skin=True))
    return prims


def headphones(a: Anchors, rng: np.random.Generator, colours: dict) -> list[Primitive]:
    """Over-ear cups on both ears joined by a band over the head."""
    colour = _colour(rng, _DARK)
    r = rng.uniform(0.035, 0.05)
    prims = []
    tops = []
    for side in (-1, 1):
        c = a.ear(side) + np.array([side * 0.012, 0.0, 0.0])
        prims.append(Primitive(_ring(c, Z, Y, r, r * 1.15, 20), colour, 1.0))
        prims.append(Primitive(_ring(c + X * side * 0.015, Z, Y, r * 0.8, r * 0.95, 20), colour * 0.6, 1.0))
        tops.append(c + Y * r)
    t = np.linspace(0, np.pi, 14)
    half = abs(tops[1][0] - tops[0][0]) / 2
    cy = (tops[0][1] + tops[1][1]) / 2
    height = a.brow_y + rng.uniform(0.1, 0.13) - cy
    band = np.c_[-np.cos(t) * half, cy + np.sin(t) * height, np.full_like(t, (tops[0][2] + tops[1][2]) / 2)]
    prims.append(Primitive(band, colour, 1.0, width=rng.uniform(0.012, 0.03)))
    return prims


def mask(a: Anchors, rng: np.random.Generator, colours: dict) -> list[Primitive]:
    """A face mask from the nose bridge over the chin, with pleats and ear loops."""
    colour = _colour(rng, np.array([[0.55, 0.75, 0.85], [0.92, 0.92, 0.92], [0.08, 0.08, 0.1], [0.3, 0.45, 0.7],
                                    [0.85, 0.6, 0.65]]), 0.05)
    lm = a.lm
    out = np.array([0, 0, 0.006])
    top = [lm[1] + X * -0.004, lm[28] + np.array([0, 0.004, 0.012]), lm[15] + X * 0.004]
    jaw = [lm[k] + out + np.array([0, -0.006 if 5 <= k <= 11 else 0, 0]) for k in range(14, 1, -1)]
    poly = np.array([top[0], top[1], top[2], *jaw])
    # The fabric bulges over the nose, mouth and chin. Its edge polygon alone folds on a
    # turned face or one seen from below and leaves them bare, so the hull of points on
    # the bulge joins it. Only the front of the jaw is in that hull: the jaw's far ends
    # sit behind the eyes, and a hull through them covers the eyes of a face seen from above.
    bulge = np.array([*jaw[2:-2], *(lm[k] + out for k in (*range(30, 36), *range(48, 60)))])
    prims = [Primitive(poly, colour, 1.0, on_skin=True), Primitive(bulge, colour, 1.0, on_skin=True, hull=True)]
    if rng.random() < 0.6:  # pleats
        for f in (0.35, 0.55, 0.75):
            y = lm[28, 1] * (1 - f) + lm[8, 1] * f
            prims.append(Primitive(np.array([[lm[3, 0] + 0.01, y, lm[3, 2] + 0.01], [0, y - 0.003, lm[30, 2]],
                                             [lm[13, 0] - 0.01, y, lm[13, 2] + 0.01]]), colour * 0.8,
                                   0.7, width=0.0015, on_skin=True, shadow=False))
    for side, k in ((-1, 1), (1, 15)):
        loop = np.array([lm[k], a.ear(side) + Y * 0.01])
        prims.append(Primitive(loop, colour, 1.0, width=0.0025))
    return prims


def _hand(centre, up, right, normal, scale: float, skin: np.ndarray, rng) -> list[Primitive]:
    """A flat hand: palm and five fingers, fingers towards ``up``."""
    prims = [Primitive(_ring(centre, right, up, 0.042 * scale, 0.05 * scale, 20), skin, 1.0)]
    for k, (dx, length) in enumerate(((-0.03, 0.07), (-0.01, 0.085), (0.01, 0.08), (0.029, 0.065))):
        bend = rng.uniform(-0.01, 0.02)
        base = centre + right * dx * scale + up * 0.04 * scale
        tip = base + up * length * scale + normal * bend + right * dx * 0.2 * scale
        prims.append(Primitive(np.array([base, (base + tip) / 2 + normal * bend * 0.5, tip]), skin * (0.97 - 0.02 * k),
                               1.0, width=0.018 * scale))
    thumb0 = centre - right * 0.04 * scale
    prims.append(Primitive(np.array([thumb0, thumb0 - right * 0.03 * scale + up * 0.04 * scale]), skin * 0.95,
                           1.0, width=0.02 * scale))
    return prims


def hand(a: Anchors, rng: np.random.Generator, colours: dict) -> list[Primitive]:
    """A hand in front of the lower face: on the chin, over the mouth, or on a cheek."""
    skin = np.clip(colours["skin"] * rng.uniform(0.9, 1.05, 3), 0, 1)
    lm = a.lm
    pose = int(rng.integers(3))
    front = rng.uniform(0.015, 0.05)
    if pose == 0:  # chin resting on the hand, fingers up one cheek
        centre, up = lm[8] + np.array([0.0, -0.035, front]), np.array([rng.uniform(-0.4, 0.4), 1.0, 0.0])
    elif pose == 1:  # over the mouth
        centre, up = lm[57] + np.array([rng.uniform(-0.02, 0.02), -0.03, front + 0.01]), np.array(
            [rng.choice([-1.0, 1.0]), rng.uniform(0.2, 0.8), 0.0])
    else:  # on a cheek
        side = rng.choice([-1, 1])
        centre = lm[4 if side < 0 else 12] + np.array([side * 0.01, -0.02, front])
        up = np.array([-side * 0.3, 1.0, 0.0])
    up = up / np.linalg.norm(up)
    normal = Z
    right = np.cross(up, normal)
    return _hand(centre, up, right, normal, rng.uniform(0.9, 1.1), skin, rng)


def phone(a: Anchors, rng: np.random.Generator, colours: dict) -> list[Primitive]:
    """A phone held to an ear, or in front of the chin, with the fingers round it."""
    body = _colour(rng, _DARK, 0.05)
    skin = np.clip(colours["skin"] * rng.uniform(0.9, 1.05, 3), 0, 1)
    half = np.array([0.036, 0.075])
    if rng.random() < 0.5:
        side = rng.choice([-1, 1])
        centre = a.ear(side) + np.array([side * 0.02, -0.03, 0.045])
        ax1, ax2 = Z, (Y + Z * 0.3) / np.linalg.norm(Y + Z * 0.3)
    else:
        centre = a.lm[8] + np.array([rng.uniform(-0.03, 0.03), -0.06, 0.09])
        tilt = rng.uniform(0.3, 0.9)
        ax1, ax2 = X, (Y * np.cos(tilt) + Z * np.sin(tilt))
    rect = _ring(centre, ax1, ax2, half[0], half[1], 24, 8.0)
    screen = _ring(centre + np.cross(ax1, ax2) * 0.001, ax1, ax2, half[0] * 0.9, half[1] * 0.92, 24, 8.0)
    prims = [Primitive(rect, body, 1.0), Primitive(screen, rng.uniform(0.0, 0.25) * np.ones(3), 1.0)]
    for k in range(3):
        base = centre + ax1 * half[0] * 1.05 + ax2 * (k - 1) * 0.022
        prims.append(Primitive(np.array([base, base - ax1 * 0.03]), skin, 1.0, width=0.016))
    return prims


def microphone(a: Anchors, rng: np.random.Generator, colours: dict) -> list[Primitive]:
    """A handheld microphone in front of the mouth: a ball grille on a handle."""
    r = rng.uniform(0.02, 0.03)
    ball = a.lm[57] + np.array([rng.uniform(-0.02, 0.02), -rng.uniform(0.0, 0.03), rng.uniform(0.04, 0.1)])
    grille = _colour(rng, np.array([[0.25, 0.25, 0.27], [0.6, 0.6, 0.62], [0.1, 0.1, 0.1]]), 0.05)
    direction = np.array([rng.uniform(-0.3, 0.3), -1.0, rng.uniform(0.2, 0.6)])
    direction /= np.linalg.norm(direction)
    handle = np.array([ball + direction * r * 0.8, ball + direction * 0.18])
    return [Primitive(handle, np.full(3, 0.07), 1.0, width=0.028),
            Primitive(_ring(ball, X, Y, r, r, 24), grille, 1.0),
            Primitive(_ring(ball + Z * 0.002 + Y * r * 0.3 - X * r * 0.3, X, Y, r * 0.4, r * 0.3, 12),
                      np.ones(3), 0.3, shade=False, shadow=False)]


def hair_strands(a: Anchors, rng: np.random.Generator, colours: dict) -> list[Primitive]:
    """Strands of hair from the hairline over the forehead, some down to the eyes."""
    colour = colours["hair"]
    prims = []
    lm = a.lm
    x0 = rng.uniform(-0.04, 0.04)  # where the fringe falls from
    fall = rng.uniform(0.03, 0.07)
    for _ in range(int(rng.integers(8, 40))):
        x = x0 + rng.normal(0, 0.02)
        start = np.array([x, a.brow_y + rng.uniform(0.04, 0.07), lm[27, 2] - 0.005])
        end = start + np.array([rng.normal(0.0, 0.02), -fall * rng.uniform(0.5, 1.2), 0.004])
        mid = (start + end) / 2 + np.array([rng.normal(0, 0.008), 0.0, 0.006])
        t = np.linspace(0, 1, 6)[:, None]
        curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * mid + t * t * end
        prims.append(Primitive(curve, np.clip(colour * rng.uniform(0.7, 1.2), 0, 1), rng.uniform(0.6, 1.0),
                               width=rng.uniform(0.0004, 0.0012), on_skin=True))
    return prims


OCCLUDER_BUILDERS: dict[str, Callable[[Anchors, np.random.Generator, dict], list[Primitive]]] = {
    "glasses": glasses, "hat": hat, "headphones": headphones, "mask": mask, "hand": hand, "phone": phone,
    "microphone": microphone, "hair_strands": hair_strands,
}


def build_occluders(a: Anchors, rngs: Mapping[str, np.random.Generator], probabilities: dict[str, float],
                    colours: dict) -> list[Primitive]:
    """The primitives of every occluder switched on for this capture (each decides with its
    own generator; the decision is drawn whether or not the element is on)."""
    prims = []
    for name, build in OCCLUDER_BUILDERS.items():
        if rngs[name].random() < probabilities.get(name, 0.0):
            prims += build(a, rngs[name], colours)
    return prims


# ---------------------------------------------------------------------------- drawing
def _head_side(a: Anchors, head_depth: np.ndarray, box: tuple[int, int, int, int], plane: np.ndarray) -> np.ndarray:
    """(y1 - y0, x1 - x0): ``n . p + d`` of the head's surface point ``p`` (head frame) seen
    at each pixel of ``box``, +inf where no head is seen."""
    x0, y0, x1, y1 = box
    d = head_depth[y0:y1, x0:x1].astype(np.float64)
    u, v = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(a.K).T  # OpenCV camera, z = 1
    cam = rays * d[..., None] * np.array([1.0, -1.0, -1.0])  # OpenGL camera
    head = (cam - a.T) @ np.linalg.inv(a.R)
    side = head @ plane[:3] + plane[3]
    return np.where(d > 0, side, np.inf)


def draw_primitives(prims: list[Primitive], a: Anchors, head_depth: np.ndarray, light_dir: np.ndarray | None,
                    ambient: float = 0.55) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterize primitives into a layer over an image of the head's size.

    Args:
        prims: the parts. a: the head's `Anchors` (camera and landmarks).
        head_depth: (H, W) OpenCV depth of the head (0 where there is none).
        light_dir: (3,) key light direction in OpenGL camera space (towards the light), or None.

    Returns:
        colour (H, W, 3) float32 premultiplied by alpha, alpha (H, W) float32, and
        shadow_alpha (H, W) float32 (the coverage of the parts that cast shadows).
    """
    H, W = head_depth.shape
    colour = np.zeros((H, W, 3), np.float32)
    alpha = np.zeros((H, W), np.float32)
    shadow = np.zeros((H, W), np.float32)
    items = []
    for p in prims:
        uv, z = a.project(p.points)
        if (z <= 0.01).any():
            continue
        if p.width > 0:  # polylines: one item per segment, each at its own depth
            wpx = p.width * a.px_per_metre(z)
            for k in range(len(uv) - 1):
                items.append((_ON_SKIN if p.on_skin else (z[k] + z[k + 1]) / 2, p, uv[k:k + 2],
                              max((wpx[k] + wpx[k + 1]) / 2, 1.0)))
        else:
            items.append((_ON_SKIN if p.on_skin else float(z.mean()), p, uv, 0.0))
    # Far to near; parts on the skin come first, everything else is nearer than the skin.
    items.sort(key=lambda it: (it[0] != _ON_SKIN, -it[0]))
    ld = None if light_dir is None else np.asarray(light_dir, np.float64) / max(np.linalg.norm(light_dir), 1e-9)
    for depth, p, uv, wpx in items:
        pts = uv.reshape(-1, 2)
        x0, y0 = np.floor(pts.min(0) - wpx - 2).astype(int)
        x1, y1 = np.ceil(pts.max(0) + wpx + 2).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if x1 <= x0 or y1 <= y0:
            continue
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        fixed = np.round((pts - [x0, y0]) * (1 << _SUBPIX)).astype(np.int32)
        if wpx > 0:
            cv2.line(m, tuple(fixed[0]), tuple(fixed[1]), 255, max(int(round(wpx)), 1), cv2.LINE_AA, _SUBPIX)
        elif p.hull:
            cv2.fillConvexPoly(m, cv2.convexHull(fixed), 255, cv2.LINE_AA, _SUBPIX)
        else:
            cv2.fillPoly(m, [fixed], 255, cv2.LINE_AA, _SUBPIX)
        a_p = m.astype(np.float32) * np.float32(p.alpha / 255.0)
        if p.covers_above is not None:
            a_p *= _head_side(a, head_depth, (x0, y0, x1, y1), p.covers_above) >= 0
        if depth != _ON_SKIN:
            hd = head_depth[y0:y1, x0:x1]
            a_p *= ~((hd > 0) & (hd < depth))
        shade = 1.0
        if p.shade and ld is not None and len(p.points) >= 3 and p.width == 0:
            cam = a.to_camera(p.points[:3]) * np.array([1.0, -1.0, -1.0])  # back to OpenGL for the light
            n = np.cross(cam[1] - cam[0], cam[2] - cam[0])
            n /= max(np.linalg.norm(n), 1e-12)
            shade = ambient + (1 - ambient) * abs(float(n @ ld))
        elif p.shade:
            shade = ambient + (1 - ambient) * 0.6
        c = (np.clip(p.colour * shade, 0, 1)).astype(np.float32)
        sl = (slice(y0, y1), slice(x0, x1))
        keep = (1 - a_p)[..., None]
        colour[sl] = colour[sl] * keep + c * a_p[..., None]
        alpha[sl] = alpha[sl] * (1 - a_p) + a_p
        if p.shadow:
            shadow[sl] = np.maximum(shadow[sl], a_p)
    return colour, alpha, shadow

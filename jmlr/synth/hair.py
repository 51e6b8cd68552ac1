"""Scalp hair geometry: a shell over the scalp and strand ribbons (clumps) on top of it.

Both are plain triangles with per-vertex colour, so the OpenGL and the PyTorch renderers
draw them alike. A subject's hair is built once in the neutral head frame (x to the
subject's left, y up, z out of the face, metres) and follows the head of every capture
by the displacement of one anchor vertex per hair vertex (`dress`): identity and
expression move the scalp and the hair rides on it.

* The shell is the scalp region of the head mesh (`HeadRegions.scalp` > 0.5) pushed out
  along the neutral normals by the style's thickness, tapering to 0.4 mm at the hairline
  so that it meets the skin there without a step.
* Ribbons are clumps of strands, ``RIBBONS`` x ``SEGMENTS`` quads of a fixed topology:
  each starts at a scalp vertex, follows a flow field over the head (away from a crown,
  a side or centre parting, or swept back, plus gravity and curl) at a small height above
  the surface (looked up in a spherical radius map of the head), and hangs straight down
  once it passes the head's widest point. Ribbons stop where they would enter the face
  (below the style's fringe line, between the temples), taper to their tips, and get
  darker roots, lighter tips and a per-clump tint. Unused ribbons collapse to a point
  (zero-area triangles, which both renderers skip).

Hair may cover the forehead, ears and cheeks like in photographs; it never changes the
ground truth (the topology vertices are not moved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .regions import HeadRegions, fit_sphere, smoothstep

__all__ = ["HairStyle", "HairAssets", "HairMesh", "HAIR_KINDS", "sample_hair_style", "sample_hair_color", "RIBBONS",
           "SEGMENTS"]

RIBBONS = 360
SEGMENTS = 10
HAIR_KINDS = ("short", "medium", "long", "afro", "ponytail")
_GRID = (48, 96)  # polar x azimuth cells of the head's radius map
# Partings whose flow runs away from a point on the head ("side" takes the style's side).
_PARTINGS = {"crown": (0.0, 0.85, -0.5), "back": (0.0, 0.7, 0.7)}
HairMesh = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""rest (Vh, 3) float32, anchor (Vh,) int64, albedo (Vh, 3) float32, specular (Vh,), occlusion (Vh,)."""


@dataclass
class HairStyle:
    """One subject's hair.

    kind: one of `HAIR_KINDS`; color (3,) sRGB; length: ribbon length m; thickness: shell
    height m; parting: ``crown``, ``side``, ``centre``, ``back`` (swept back) or ``none``
    (random directions, for curly hair); side: -1 or 1; fringe: height of the lowest hair
    over the forehead above the brows, m; droop: weight of gravity in the flow; curl:
    random turn per segment, rad; width: ribbon width m; seed.
    """

    kind: str
    color: np.ndarray
    length: float
    thickness: float
    parting: str
    side: float
    fringe: float
    droop: float
    curl: float
    width: float
    seed: int


# Natural hair colours (sRGB): black, dark brown, brown, light brown, dark blonde, blonde,
# auburn, red, grey, white; and dyed (burgundy, blue-black, copper).
_HAIR_PALETTE = np.array(
    [
        [0.05, 0.045, 0.04],
        [0.13, 0.09, 0.06],
        [0.26, 0.17, 0.10],
        [0.42, 0.30, 0.18],
        [0.58, 0.45, 0.28],
        [0.80, 0.66, 0.44],
        [0.40, 0.16, 0.08],
        [0.62, 0.27, 0.12],
        [0.50, 0.49, 0.47],
        [0.82, 0.81, 0.79],
        [0.35, 0.06, 0.10],
        [0.06, 0.07, 0.12],
        [0.70, 0.35, 0.15],
    ]
)
_HAIR_P = np.array([0.28, 0.24, 0.14, 0.08, 0.06, 0.05, 0.03, 0.02, 0.05, 0.02, 0.01, 0.01, 0.01])


def sample_hair_color(rng: np.random.Generator) -> np.ndarray:
    """A natural (rarely dyed) hair colour (3,) sRGB: palette entry, lightness and a slight tint."""
    c = _HAIR_PALETTE[int(rng.choice(len(_HAIR_PALETTE), p=_HAIR_P / _HAIR_P.sum()))]
    return np.clip(c * rng.uniform(0.85, 1.15) * rng.uniform(0.96, 1.04, 3), 0, 1)


# Per style, the U(lo, hi) ranges of length (m), thickness (m), fringe (m), droop, curl and
# ribbon width (m), in the order they are drawn (a seed keeps its hair), and the parting the
# style forces (None: the drawn one). Afros are curled in every direction; ponytails are
# tight over the scalp, gathered at the back.
_STYLE_RANGES: dict[str, tuple[tuple[tuple[float, float], ...], str | None]] = {
    "short": (((0.03, 0.07), (0.003, 0.007), (0.03, 0.06), (0.2, 0.6), (0, 0.3), (0.006, 0.012)), None),
    "medium": (((0.12, 0.2), (0.005, 0.011), (0.012, 0.06), (0.8, 1.6), (0, 0.25), (0.012, 0.022)), None),
    "long": (((0.22, 0.42), (0.005, 0.01), (0.015, 0.06), (1.0, 2.0), (0, 0.3), (0.014, 0.026)), None),
    "afro": (((0.025, 0.05), (0.025, 0.05), (0.045, 0.065), (0, 0.2), (0.8, 1.6), (0.015, 0.025)), "none"),
    "ponytail": (((0.1, 0.3), (0.002, 0.004), (0.045, 0.065), (0.3, 0.8), (0, 0.15), (0.007, 0.012)), "back"),
}


def sample_hair_style(rng: np.random.Generator, masculine: bool, color: np.ndarray) -> HairStyle:
    p = [0.55, 0.15, 0.07, 0.15, 0.08] if masculine else [0.12, 0.28, 0.38, 0.10, 0.12]
    kind = HAIR_KINDS[int(rng.choice(len(HAIR_KINDS), p=p))]
    parting = str(rng.choice(["crown", "side", "centre", "back"], p=[0.3, 0.35, 0.2, 0.15]))
    u = rng.uniform
    ranges, forced_parting = _STYLE_RANGES[kind]
    length, thick, fringe, droop, curl, width = (u(lo, hi) for lo, hi in ranges)
    parting = forced_parting or parting
    return HairStyle(
        kind=kind,
        color=np.clip(np.asarray(color) * u(0.95, 1.05), 0, 1),
        length=float(length),
        thickness=float(thick),
        parting=parting,
        side=float(rng.choice([-1.0, 1.0])),
        fringe=float(fringe),
        droop=float(droop),
        curl=float(curl),
        width=float(width),
        seed=int(rng.integers(1 << 31)),
    )


def _vertex_normals_np(v: np.ndarray, tris: np.ndarray) -> np.ndarray:
    fn = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, tris[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products (...,) of 3-vectors (..., 3): ``(a * b).sum(-1)`` with the same rounding,
    several times faster (numpy reduces a length-3 last axis slowly)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.sqrt(_dot(a, a)), 1e-12)[..., None]


class HairAssets:
    """What a face model's hair needs, computed once: the scalp shell's vertices and
    faces, root candidates, the radius map and the face's keep-out box.

    Args:
        neutral: (V, 3) neutral head, metres.
        skin_triangles: (T, 3) triangles of the skin (face and back of the head).
        regions: the model's `HeadRegions`.
        landmarks68: (68,) vertex indices.

    Vertex layout of `build` and `faces`: shell vertices first (``num_shell``), then
    ``RIBBONS * (SEGMENTS + 1) * 2`` ribbon vertices; faces index that layout.
    """

    def __init__(self, neutral: np.ndarray, skin_triangles: np.ndarray, regions: HeadRegions, landmarks68: np.ndarray):
        v = np.asarray(neutral, np.float64)
        self.neutral = v
        normals = _vertex_normals_np(v, skin_triangles)
        scalp = regions.scalp
        in_scalp = scalp > 0.5
        shell_tris = skin_triangles[in_scalp[skin_triangles].all(1)]
        self.shell_idx = np.unique(shell_tris)
        remap = np.full(len(v), -1)
        remap[self.shell_idx] = np.arange(len(self.shell_idx))
        self.shell_faces = remap[shell_tris]
        self.shell_normals = normals[self.shell_idx]
        self.shell_taper = smoothstep(0.5, 1.0, scalp[self.shell_idx])
        self.num_shell = len(self.shell_idx)
        self.root_idx = np.nonzero(scalp > 0.7)[0]
        self.normals = normals
        self.scalp = scalp
        lm = v[np.asarray(landmarks68)]
        self.centre = np.array([0.0, *fit_sphere(v[in_scalp])[1:]])
        self.brow_y = float(lm[17:27, 1].max())
        self.chin_y = float(lm[8, 1])
        self.face_half_width = float(np.abs(lm[[0, 16], 0]).max()) - 0.004
        self.face_z = float(lm[[0, 16], 2].max())
        self.radius = _radius_map(v[np.unique(skin_triangles)] - self.centre)
        # The ponytail gathers at the back of the head, a little above the centre.
        back = self.root_idx[np.argmin(v[self.root_idx, 2] - 0.5 * (v[self.root_idx, 1] - self.centre[1]))]
        self.gather_idx = int(back)
        # Ribbon topology: two vertices across per station, two triangles per segment.
        n, s = RIBBONS, SEGMENTS
        base = (np.arange(n)[:, None] * (s + 1) + np.arange(s)[None]) * 2  # (n, s) left vertex of station k
        a0, a1, b0, b1 = base, base + 1, base + 2, base + 3
        quads = np.stack([np.stack([a0, a1, b0], -1), np.stack([a1, b1, b0], -1)], 2).reshape(-1, 3)
        self.faces = np.concatenate([self.shell_faces, quads + self.num_shell]).astype(np.int64)
        self.num_vertices = self.num_shell + n * (s + 1) * 2

    def _surface(self, u: np.ndarray) -> np.ndarray:
        """Radius of the head (P,) in the unit directions u (P, 3) from the centre."""
        a = np.arccos(np.clip(u[:, 1], -1, 1))
        b = np.arctan2(u[:, 0], u[:, 2])
        na, nb = self.radius.shape
        ia = np.clip((a / np.pi * na).astype(int), 0, na - 1)
        ib = ((b + np.pi) / (2 * np.pi) * nb).astype(int) % nb
        return self.radius[ia, ib]

    def build(self, style: HairStyle) -> HairMesh:
        """A subject's hair: rest positions (Vh, 3) float32 in the neutral frame, anchor
        vertex (Vh,) int64, albedo (Vh, 3), specular scale (Vh,) and occlusion (Vh,)."""
        return self.build_many([style])[0]

    def build_many(self, styles: Sequence[HairStyle]) -> list[HairMesh]:
        """`build` for several subjects at once, each result the same as built alone.

        The ribbons grow one segment at a time, some thirty small array operations a step;
        growing every subject's ribbons together pays their per-call cost once per batch
        instead of once per subject (about half of a subject's hair time at 360 ribbons).
        Every subject draws its random numbers from its own generator, in the order of a
        single build, so a seed gives the same hair whatever the batch.
        """
        if not styles:
            return []
        n, s = RIBBONS, SEGMENTS
        draws = [self._draws(st) for st in styles]
        cat = lambda k: np.concatenate([d[k] for d in draws])  # noqa: E731
        per_ribbon = lambda name: np.repeat(np.array([getattr(st, name) for st in styles], np.float64), n)  # noqa: E731
        thickness, length, fringe = per_ribbon("thickness"), per_ribbon("length"), per_ribbon("fringe")
        ponytail = np.repeat(np.array([st.kind == "ponytail" for st in styles]), n)
        random_flow = np.repeat(np.array([st.parting == "none" for st in styles]), n)
        roots, layer, tail = cat("roots"), cat("layer"), cat("tail")
        # Ribbons: roots on the scalp, a little above the shell.
        lift = thickness * smoothstep(0.5, 1.0, self.scalp[roots]) + 0.0015 + layer * (0.002 + 0.25 * thickness)
        pos = self.neutral[roots] + self.normals[roots] * lift[:, None]
        anchor = roots.copy()
        hanging = tail.copy()
        if tail.any():  # ponytails gather at the back of the head and hang from there
            g = self.neutral[self.gather_idx] + self.normals[self.gather_idx] * 0.012
            pos[tail] = g + cat("gather_jitter")
            anchor[tail] = self.gather_idx
        c = self.centre
        rel = pos - c
        u = _unit(rel)
        height = np.sqrt(_dot(rel, rel)) - self._surface(u)
        seg = np.where(tail, length, np.where(ponytail, 0.09, length)) / s
        seg = seg * cat("seg_jitter")
        flow_p, flow_centre, droop = self._flow_params(styles)
        r = cat("flow_noise")  # zeros where the parting is not "none"
        direction = np.where(random_flow[:, None], _unit(r - u * _dot(r, u)[:, None]),
                             self._flow(u, flow_p, flow_centre, droop))
        curl = np.concatenate([d["curl"] for d in draws], axis=1)  # (s, P); zero without curl
        P = len(roots)
        points = np.empty((P, s + 1, 3))
        points[:, 0] = pos
        alive = np.ones(P, bool)
        for k in range(1, s + 1):
            # Surface-following step for ribbons on the head; straight down once hanging.
            direction = _rotate_about(direction, u, curl[k - 1])
            flow = np.where(random_flow[:, None], direction, self._flow(u, flow_p, flow_centre, droop))
            d = _unit(0.55 * direction + 0.45 * flow)
            d = _unit(d - u * _dot(d, u)[:, None])
            step = pos + d * seg[:, None]
            su = _unit(step - c)
            on_head = c + su * (self._surface(su) + height)[:, None]
            radial = _unit(np.c_[pos[:, 0] - c[0], np.zeros(P), pos[:, 2] - c[2]])
            down = pos + (np.array([0.0, -1.0, 0.0]) + 0.12 * radial) * seg[:, None] / 1.007
            new = np.where(hanging[:, None], down, on_head)
            hanging |= su[:, 1] < -0.12
            direction = np.where(hanging[:, None], np.array([0.0, -1.0, 0.0]), d)
            alive &= ~self._in_face(new, fringe)
            pos = np.where(alive[:, None], new, pos)
            u = _unit(pos - c)
            points[:, k] = pos
        # Cross direction: tangent to the head, across the ribbon; normals point outwards.
        tangent = np.gradient(points, axis=1)
        outward = _unit(points - c)
        hang_out = _unit(np.c_[points[..., 0] - c[0], np.zeros((P, s + 1)), points[..., 2] - c[2]].reshape(P, s + 1, 3))
        below = (outward[..., 1] < -0.12)[..., None]
        outward = np.where(below, hang_out, outward)
        side = _unit(np.cross(tangent, outward))
        thinning = np.where(length < 0.1, 0.65, 0.3)
        taper = 1 - thinning[:, None] * np.linspace(0, 1, s + 1)[None]
        half = (0.5 * per_ribbon("width"))[:, None] * cat("width_jitter")[:, None] * taper
        left, right = points - side * half[..., None], points + side * half[..., None]
        verts = np.stack([left, right], 2).reshape(P, -1, 3)
        # Collapse ribbons that never left their root (their faces have no area).
        moved = np.linalg.norm(points[:, -1] - points[:, 0], axis=1) > 1e-4
        verts[~moved] = self.centre
        rib_anchor = np.repeat(np.where(moved, anchor, 0), (s + 1) * 2).reshape(len(styles), -1)
        colour = np.repeat(np.array([np.asarray(st.color, np.float64) for st in styles]), n, axis=0)
        tint = np.exp(cat("tint"))[:, None] * cat("tint_rgb")
        along = 0.82 + 0.3 * np.linspace(0, 1, s + 1)
        rib_alb = np.clip(colour[:, None] * tint[:, None] * along[None, :, None], 0, 1)
        rib_alb = np.repeat(rib_alb, 2, axis=1).reshape(len(styles), -1, 3)
        rib_occ = np.repeat(
            (0.55 + 0.45 * layer)[:, None] * (0.85 + 0.15 * np.linspace(0, 1, s + 1))[None], 2, 1
        ).reshape(len(styles), -1)
        verts = verts.reshape(len(styles), -1, 3)
        out = []
        for b, st in enumerate(styles):
            col = np.asarray(st.color, np.float64)
            # The shell: the scalp pushed out by the style's thickness, tapering at the hairline.
            t = st.thickness * self.shell_taper + 0.0004
            shell = self.neutral[self.shell_idx] + self.shell_normals * t[:, None]
            shell_alb = np.broadcast_to(col * 0.72, shell.shape)
            rest = np.concatenate([shell, verts[b]]).astype(np.float32)
            out.append((
                rest,
                np.concatenate([self.shell_idx, rib_anchor[b]]).astype(np.int64),
                np.concatenate([shell_alb, rib_alb[b]]).astype(np.float32),
                np.full(len(rest), 0.7, np.float32),
                np.concatenate([np.full(self.num_shell, 0.7), rib_occ[b]]).astype(np.float32),
            ))
        return out

    def _draws(self, style: HairStyle) -> dict[str, np.ndarray]:
        """Every random number of one subject's hair, from its own generator, in the order
        the ribbons use them."""
        rng = np.random.default_rng(style.seed)
        n, s = RIBBONS, SEGMENTS
        d = {"roots": rng.choice(self.root_idx, n), "layer": rng.uniform(0.15, 1.0, n)}
        if style.kind == "ponytail":
            d["tail"] = rng.random(n) < 0.35
            d["gather_jitter"] = rng.normal(0, 0.006, (int(d["tail"].sum()), 3))
        else:
            d["tail"] = np.zeros(n, bool)
            d["gather_jitter"] = np.zeros((0, 3))
        d["seg_jitter"] = rng.uniform(0.75, 1.1, n)
        d["flow_noise"] = rng.standard_normal((n, 3)) if style.parting == "none" else np.zeros((n, 3))
        d["curl"] = rng.normal(0, style.curl, (s, n)) if style.curl > 0 else np.zeros((s, n))
        d["width_jitter"] = rng.uniform(0.6, 1.3, n)
        d["tint"] = rng.normal(0, 0.12, n)
        d["tint_rgb"] = rng.uniform(0.94, 1.06, (n, 3))
        return d

    @staticmethod
    def _flow_params(styles: Sequence[HairStyle]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per ribbon: the parting's unit direction (P, 3), whether it is a centre parting
        (P,) and the style's droop (P,)."""
        p, centre = [], []
        for st in styles:
            if st.parting == "side":
                point = (0.45 * st.side, 0.85, 0.25)
            else:  # "none" gets a placeholder: its flow is random
                point = _PARTINGS.get(st.parting, _PARTINGS["crown"])
            p.append(_unit(np.array(point)))
            centre.append(st.parting == "centre")
        rep = lambda a: np.repeat(np.asarray(a), RIBBONS, axis=0)  # noqa: E731
        return rep(p), rep(centre), rep([st.droop for st in styles])

    @staticmethod
    def _flow(u: np.ndarray, parting: np.ndarray, centre: np.ndarray, droop: np.ndarray) -> np.ndarray:
        """Unit tangent flow directions (P, 3) at unit directions u (P, 3): away from the
        parting (P, 3) (from the mid-plane where ``centre`` (P,)), plus gravity by ``droop``."""
        sgn = np.where(u[:, 0] >= 0, 1.0, -1.0)[:, None]
        from_centre = sgn * (np.array([1.0, 0.0, 0.0]) - u * u[:, :1])
        from_point = u * _dot(u, parting)[:, None] - parting
        away = np.where(centre[:, None], from_centre, from_point)
        g = np.array([0.0, -1.0, 0.0]) - u * (-u[:, 1:2])
        return _unit(_unit(away) + droop[:, None] * g)

    def _in_face(self, p: np.ndarray, fringe: np.ndarray) -> np.ndarray:
        """Points (P, 3) in front of the face, below the fringe line (``fringe`` (P,) m
        above the brows): hair stops there."""
        return (
            (p[:, 2] > self.face_z)
            & (np.abs(p[:, 0]) < self.face_half_width)
            & (p[:, 1] < self.brow_y + fringe)
            & (p[:, 1] > self.chin_y - 0.04)
        )


def _rotate_about(d: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate vectors d (P, 3) about unit axes (P, 3) by angles (P,) (Rodrigues)."""
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return d * c + np.cross(axis, d) * s + axis * _dot(axis, d)[:, None] * (1 - c)


def _radius_map(rel: np.ndarray) -> np.ndarray:
    """(48, 96) largest radius of the head per (polar, azimuth) cell around its centre;
    empty cells take their nearest filled neighbour's value."""
    from scipy import ndimage  # slow to import, and only the hair assets need it

    na, nb = _GRID
    r = np.linalg.norm(rel, axis=1)
    u = rel / r[:, None]
    ia = np.clip((np.arccos(np.clip(u[:, 1], -1, 1)) / np.pi * na).astype(int), 0, na - 1)
    ib = ((np.arctan2(u[:, 0], u[:, 2]) + np.pi) / (2 * np.pi) * nb).astype(int) % nb
    grid = np.zeros(_GRID)
    np.maximum.at(grid, (ia, ib), r)
    empty = grid == 0
    if empty.any():
        _, (ja, jb) = ndimage.distance_transform_edt(empty, return_indices=True)
        grid = grid[ja, jb]
    return grid

"""Neck, shoulders and a clothed torso below the head (a proxy, not a body model).

The head mesh ends in a cut at the base of the neck. `TorsoAssets` continues that cut
ring downwards: ``RINGS`` rings of the cut's vertex count, blending from the cut's shape
into a rounded-box chest section with sloping shoulders, about 35 cm down. Ring 0 is
the cut itself (the head's own vertices, so the seam shades smoothly); every other
vertex follows the displacement of the cut vertex above it, so identity and expression
carry the torso along. Per subject (`ClothingStyle`): shoulder width, chest depth,
shoulder slope, a neckline (crew, V, scoop, boat, or bare shoulders), and a garment
colour with a pattern (solid, stripes, heather, or an open jacket over a shirt). Skin
above the neckline takes the subject's skin colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .regions import smoothstep

__all__ = ["ClothingStyle", "TorsoAssets", "sample_clothing", "RINGS", "NECKLINES", "PATTERNS"]

RINGS = 30
NECKLINES = ("crew", "v", "scoop", "boat", "bare")
PATTERNS = ("solid", "stripes", "heather", "jacket")

# Garment colours (sRGB): black, charcoal, grey, white, navy, denim, olive, burgundy,
# beige, brown, and a random saturated one.
_GARMENTS = np.array([
    [0.05, 0.05, 0.06], [0.18, 0.18, 0.2], [0.45, 0.45, 0.47], [0.88, 0.88, 0.86], [0.08, 0.11, 0.25],
    [0.25, 0.35, 0.5], [0.3, 0.33, 0.18], [0.4, 0.07, 0.12], [0.75, 0.68, 0.55], [0.35, 0.22, 0.14],
])


@dataclass
class ClothingStyle:
    """shoulder: half-width m; depth: chest half-depth m; slope: shoulder drop m;
    neckline: one of `NECKLINES`; plunge: neckline depth m; colors: (2, 3) sRGB (garment,
    second colour: stripes or shirt); pattern: one of `PATTERNS`; stripe: period m; seed."""

    shoulder: float
    depth: float
    slope: float
    neckline: str
    plunge: float
    colors: np.ndarray
    pattern: str
    stripe: float
    seed: int


def _garment_color(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.75:
        return np.clip(_GARMENTS[rng.integers(len(_GARMENTS))] * rng.uniform(0.85, 1.15, 3), 0, 1)
    h = rng.uniform(0, 6)
    rgb = np.clip(np.abs(((h + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)  # hue wheel
    s, v = rng.uniform(0.3, 0.9), rng.uniform(0.25, 0.9)
    return v * (1 - s + s * rgb)


def sample_clothing(rng: np.random.Generator, masculine: bool) -> ClothingStyle:
    neck = NECKLINES[int(rng.choice(len(NECKLINES), p=[0.4, 0.2, 0.15, 0.1, 0.15] if not masculine
                                    else [0.6, 0.2, 0.08, 0.07, 0.05]))]
    plunge = {"crew": rng.uniform(0.005, 0.02), "v": rng.uniform(0.06, 0.13), "scoop": rng.uniform(0.04, 0.09),
              "boat": rng.uniform(0.01, 0.03), "bare": rng.uniform(0.07, 0.12)}[neck]
    return ClothingStyle(
        shoulder=float(rng.uniform(0.19, 0.23) if masculine else rng.uniform(0.16, 0.2)),
        depth=float(rng.uniform(0.09, 0.125)), slope=float(rng.uniform(0.03, 0.07)), neckline=neck,
        plunge=float(plunge), colors=np.stack([_garment_color(rng), _garment_color(rng)]),
        pattern=str(rng.choice(PATTERNS, p=[0.5, 0.2, 0.15, 0.15])), stripe=float(rng.uniform(0.03, 0.06)),
        seed=int(rng.integers(1 << 31)))


class TorsoAssets:
    """The neck cut of a face model and the torso's topology.

    Args:
        neutral: (V, 3) neutral head, metres.
        cut: (C,) vertex indices of the head's open boundary at the neck (any order).

    `faces` index the layout [head vertices (V), torso rings 1..RINGS (RINGS * C)]:
    ring 0 is the cut itself.
    """

    def __init__(self, neutral: np.ndarray, cut: np.ndarray):
        v = np.asarray(neutral, np.float64)
        self.num_head = len(v)
        p = v[cut]
        centre = p.mean(0)
        az = np.arctan2(p[:, 0] - centre[0], p[:, 2] - centre[2])
        order = np.argsort(az)
        self.cut = np.asarray(cut)[order]
        self.azimuth = az[order]  # from the front (+z) towards the subject's left (+x)
        self.centre = centre
        self.cut_positions = v[self.cut]
        C = len(self.cut)
        self.num_vertices = RINGS * C
        idx = np.concatenate([self.cut, self.num_head + np.arange(RINGS * C)]).reshape(RINGS + 1, C)
        a, b = idx[:-1], np.roll(idx[:-1], -1, 1)
        c, d = idx[1:], np.roll(idx[1:], -1, 1)
        faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
        # Outward normals: flip the winding if the front face points inwards.
        rest = self._rings(ClothingStyle(0.2, 0.11, 0.05, "crew", 0.01, np.zeros((2, 3)), "solid", 0.02, 0))
        allv = np.concatenate([v, rest.reshape(-1, 3)])
        f = faces[0]
        n = np.cross(allv[f[1]] - allv[f[0]], allv[f[2]] - allv[f[0]])
        if n @ (allv[f].mean(0) - np.r_[centre[0], allv[f].mean(0)[1], centre[2]]) < 0:
            faces = faces[:, ::-1]
        self.faces = np.ascontiguousarray(faces, np.int64)

    def _rings(self, style: ClothingStyle) -> np.ndarray:
        """Rest positions (RINGS, C, 3) of rings 1..RINGS in the neutral frame, and sets
        ``self._arc`` (RINGS, C) m of surface below the cut."""
        p = self.cut_positions
        drop = 0.34 * (np.arange(1, RINGS + 1) / RINGS) ** 1.25  # finer rings near the neck
        sa, ca = np.sin(self.azimuth), np.cos(self.azimuth)
        m = 2.0 / 3.0  # superellipse exponent: a rounded box
        sx = np.sign(sa) * np.abs(sa) ** m
        sz = np.sign(ca) * np.abs(ca) ** m
        # Shoulders reach their width within ~5 cm of the cut, then the chest falls straight.
        blend = smoothstep(0.0, 0.05, drop)[:, None]
        section = np.stack([self.centre[0] + style.shoulder * sx, np.zeros_like(sx),
                            self.centre[2] - 0.01 + style.depth * sz], -1)
        rings = p[None] * (1 - blend[..., None]) + section[None] * blend[..., None]
        rings[..., 1] = p[None, :, 1] - 0.6 * drop[:, None] - style.slope * np.abs(sx)[None] * blend \
            - 0.4 * drop[:, None] * blend
        self._arc = np.cumsum(np.linalg.norm(np.diff(np.concatenate([p[None], rings]), axis=0), axis=-1), 0)
        return rings

    def build(self, style: ClothingStyle, skin: np.ndarray):
        """A subject's torso: rest positions (RINGS * C, 3) float32, anchor vertex
        (RINGS * C,), albedo (RINGS * C, 3), specular scale and occlusion (RINGS * C,)."""
        rest = self._rings(style)
        arc = self._arc
        C = len(self.cut)
        az = self.azimuth[None]
        front = np.clip(1 - np.abs(az) / 0.9, 0, 1)  # V and scoop open towards the front
        if style.neckline == "v":
            depth = 0.012 + (style.plunge - 0.012) * front
        elif style.neckline == "scoop":
            depth = 0.012 + (style.plunge - 0.012) * np.sqrt(front)
        elif style.neckline == "boat":
            depth = style.plunge + 0.02 * np.abs(np.sin(az))
        else:
            depth = np.full_like(az, style.plunge)
        cloth = smoothstep(depth - 0.006, depth + 0.006, arc)
        rng = np.random.default_rng(style.seed)
        y = rest[..., 1]
        c0, c1 = style.colors
        if style.pattern == "stripes":
            k = (np.sin(2 * np.pi * y / style.stripe) > 0)[..., None]
            garment = np.where(k, c0, c1)
        elif style.pattern == "heather":
            garment = c0 * (0.85 + 0.3 * rng.random((RINGS, C, 1)))
        elif style.pattern == "jacket":
            shirt = (np.abs(az) < 0.35 + 0.25 * smoothstep(0, 0.2, arc))[..., None]
            garment = np.where(shirt, c1, c0)
        else:
            garment = np.broadcast_to(c0, rest.shape)
        skin_col = np.asarray(skin) * (1 + 0.04 * rng.standard_normal((RINGS, C, 1)))
        albedo = skin_col * (1 - cloth[..., None]) + garment * cloth[..., None]
        spec = 1.0 - 0.75 * cloth
        occ = np.ones((RINGS, C))
        anchors = np.broadcast_to(self.cut, (RINGS, C)).reshape(-1)
        return (rest.reshape(-1, 3).astype(np.float32), anchors.astype(np.int64),
                np.clip(albedo, 0, 1).reshape(-1, 3).astype(np.float32), spec.reshape(-1).astype(np.float32),
                occ.reshape(-1).astype(np.float32))

"""Albedo and specular layers of a face: skin detail, eyebrows, eyelashes, facial hair,
eyes and make-up, all per vertex.

Masks are computed once per face model (`DetailRegions`) from the neutral head and its 68
landmark vertices, in the model's head frame (x to the subject's left, y up, z out of
the face, metres), like `jmlr.synth.regions.HeadRegions`. A subject's parameters
(``sample_*``) are drawn once; `apply_detail` paints them onto the subject's albedo.

Detail finer than the mesh cannot be drawn per vertex: on the face the vertices are
about 2 mm apart, so pores, stubble and brow hairs are mottling and speckle at that
scale (a pixel or so of a 128-256 px face crop), not individual hairs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from .regions import HeadRegions, fit_sphere, smoothstep

__all__ = [
    "DetailRegions",
    "BrowStyle",
    "LashStyle",
    "FacialHairStyle",
    "EyeStyle",
    "SkinDetail",
    "Makeup",
    "SpecularStyle",
    "sample_brows",
    "sample_lashes",
    "sample_facial_hair",
    "sample_eyes",
    "sample_skin",
    "sample_makeup",
    "sample_specular",
    "apply_skin_detail",
    "apply_detail",
    "detail_specular",
    "FITZPATRICK_TONES",
]

# Representative sRGB skin albedo of Fitzpatrick types I-VI (light to dark); a subject
# interpolates within half a type of its own and gets an undertone.
FITZPATRICK_TONES = np.array(
    [
        [0.95, 0.82, 0.74],
        [0.89, 0.73, 0.62],
        [0.80, 0.62, 0.48],
        [0.66, 0.47, 0.33],
        [0.48, 0.32, 0.22],
        [0.30, 0.20, 0.14],
    ]
)
# Undertones as per-channel gains: neutral, warm/golden, pink/cool, olive.
_UNDERTONES = np.array([[1.0, 1.0, 1.0], [1.03, 1.0, 0.92], [1.03, 0.97, 1.02], [0.97, 1.02, 0.93]])
_LIPSTICKS = np.array(
    [
        [0.62, 0.10, 0.14],
        [0.78, 0.30, 0.38],
        [0.45, 0.16, 0.20],
        [0.70, 0.42, 0.38],
        [0.38, 0.12, 0.24],
        [0.85, 0.45, 0.50],
    ]
)
_SHADOWS = np.array(
    [
        [0.35, 0.25, 0.20],
        [0.55, 0.42, 0.35],
        [0.30, 0.30, 0.38],
        [0.50, 0.35, 0.45],
        [0.25, 0.30, 0.25],
        [0.70, 0.55, 0.45],
    ]
)


def _polyline_param(points: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance (P,), arc-length parameter in [0, 1] (P,) and signed side (P,) of 2D
    points (P, 2) to the nearest point of a polyline (L, 2) (side > 0: left of travel)."""
    seg = np.diff(line, axis=0)
    lengths = np.linalg.norm(seg, axis=1)
    starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]]) / max(lengths.sum(), 1e-12)
    best_d = np.full(len(points), np.inf)
    best_t = np.zeros(len(points))
    best_s = np.zeros(len(points))
    for a, ab, l0, ln in zip(line[:-1], seg, starts, lengths / max(lengths.sum(), 1e-12)):
        rel = points - a
        t = np.clip((rel @ ab) / max(ab @ ab, 1e-12), 0, 1)
        d = np.linalg.norm(rel - t[:, None] * ab, axis=1)
        better = d < best_d
        best_d = np.where(better, d, best_d)
        best_t = np.where(better, l0 + t * ln, best_t)
        best_s = np.where(better, ab[0] * rel[:, 1] - ab[1] * rel[:, 0], best_s)
    return best_d, best_t, np.sign(best_s)


@dataclass
class _Band:
    """Vertices near a feature line: indices (P,), distance (P,) m, parameter (P,) from
    the inner end (0) to the outer end (1), and height (P,) m above the line (y)."""

    idx: np.ndarray
    dist: np.ndarray
    t: np.ndarray
    above: np.ndarray


def _band(xy: np.ndarray, candidates: np.ndarray, line: np.ndarray, reach: float) -> _Band:
    d, t, _ = _polyline_param(xy[candidates], line)
    # Height above the line at the nearest parameter, by interpolating the line's y.
    seg_len = np.linalg.norm(np.diff(line, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg_len)]) / max(seg_len.sum(), 1e-12)
    above = xy[candidates, 1] - np.interp(t, s, line[:, 1])
    keep = d < reach
    return _Band(
        candidates[keep], d[keep].astype(np.float32), t[keep].astype(np.float32), above[keep].astype(np.float32)
    )


@dataclass
class DetailRegions:
    """Per-face-model masks and feature bands for the detail layers (see module doc).

    skin_idx: indices of skin vertices (face and head/neck). face_idx: the face region.
    tzone, cheeks, blush, freckle_zone: (V,) float32 soft masks.
    moustache, goatee, beard: (V,) soft masks of facial-hair zones (not on the lips).
    brow_base: two (5, 2) xy brow polylines from inner to outer end; brow_idx: vertices
    near them; upper_lid, lower_lid, liner: `_Band` lists (one per eye) around the lid
    margins (liner: the upper lid with a wing past the outer corner); shadow: upper-lid
    band up to the brows. eyes: per eye (iris indices, iris unit directions (P, 3) from
    the eyeball centre, axis, up) for the corneal highlight; sclera_idx with
    sclera_side (|horizontal| offset from the axis) for reddened corners.
    """

    num_vertices: int
    xy: np.ndarray
    skin_idx: np.ndarray
    face_idx: np.ndarray
    tzone: np.ndarray
    cheeks: np.ndarray
    blush: np.ndarray
    freckle_zone: np.ndarray
    moustache: np.ndarray
    goatee: np.ndarray
    beard: np.ndarray
    brow_base: list
    brow_idx: np.ndarray
    upper_lid: list
    lower_lid: list
    liner: list
    shadow: list
    eyes: list
    sclera_idx: np.ndarray
    sclera_side: np.ndarray

    @classmethod
    def from_facemodel(cls, facemodel, regions: HeadRegions) -> DetailRegions:
        v = np.asarray(facemodel.neutral, np.float64)
        n = len(v)
        xy = v[:, :2]
        lm = v[np.asarray(facemodel.landmarks68)]

        def region(name: str) -> np.ndarray:
            m = np.zeros(n, bool)
            with contextlib.suppress(KeyError):
                m[facemodel.region(name)] = True
            return m

        face = region("face")
        skin = regions.skin > 0
        # Front of the face: in front of the landmarks' deepest point minus 3 cm.
        front = (smoothstep(lm[:, 2].min() - 0.03, lm[:, 2].min(), v[:, 2]) * face).astype(np.float32)
        nolips = 1 - regions.lips

        def gauss(centre, sx, sy):
            return np.exp(-0.5 * (((xy[:, 0] - centre[0]) / sx) ** 2 + ((xy[:, 1] - centre[1]) / sy) ** 2))

        brow_y = lm[17:27, 1].mean()
        nose_y, chin_y = lm[33, 1], lm[8, 1]
        tzone = (
            np.maximum.reduce(
                [
                    gauss((0, brow_y + 0.03), 0.03, 0.022),  # forehead
                    gauss((0, (brow_y + nose_y) / 2), 0.011, 0.035),  # nose
                    gauss((0, chin_y + 0.012), 0.018, 0.012),  # chin
                ]
            )
            * front
        )
        cheek_r = (lm[2] + lm[31] + lm[41]) / 3
        cheek_l = (lm[14] + lm[35] + lm[46]) / 3
        cheeks = np.maximum(gauss(cheek_r, 0.02, 0.018), gauss(cheek_l, 0.02, 0.018)) * front
        blush = (
            np.maximum(
                gauss(cheek_r + [-0.006, 0.004, 0], 0.017, 0.013), gauss(cheek_l + [0.006, 0.004, 0], 0.017, 0.013)
            )
            * front
        )
        freckle_zone = gauss(lm[29], 0.038, 0.02) * front
        mouth_x = abs(lm[54, 0] - lm[48, 0]) / 2
        top_lip = lm[50:53, 1].max()
        moustache = (
            smoothstep(nose_y - 0.0005, nose_y - 0.003, v[:, 1])
            * smoothstep(top_lip - 0.006, top_lip, v[:, 1])
            * (1 - smoothstep(mouth_x + 0.001, mouth_x + 0.006, np.abs(v[:, 0])))
            * front
            * nolips
        )
        low_lip = lm[57, 1]
        goatee = (
            smoothstep(low_lip - 0.001, low_lip - 0.005, v[:, 1])
            * smoothstep(chin_y - 0.02, chin_y - 0.004, v[:, 1])
            * (1 - smoothstep(mouth_x * 0.8, mouth_x * 1.15, np.abs(v[:, 0])))
            * skin
            * nolips
            * smoothstep(-0.01, 0.03, v[:, 2])
        )
        beard = np.maximum.reduce([regions.stubble / max(regions.stubble.max(), 1e-6), moustache, goatee])
        # Under the chin: the front of the neck down to about 3 cm below the chin.
        under = (
            smoothstep(chin_y + 0.005, chin_y - 0.005, v[:, 1])
            * smoothstep(chin_y - 0.045, chin_y - 0.025, v[:, 1])
            * (1 - smoothstep(0.04, 0.06, np.abs(v[:, 0])))
            * smoothstep(-0.02, 0.02, v[:, 2])
            * skin
        )
        beard = np.maximum(beard, under) * nolips

        brow_base = [np.c_[lm[21::-1][:5, 0], lm[21::-1][:5, 1] + 0.002], np.c_[lm[22:27, 0], lm[22:27, 1] + 0.002]]
        fr = np.nonzero(front > 0.2)[0]
        near_brow = np.zeros(n, bool)
        for line in brow_base:
            d, _, _ = _polyline_param(xy[fr], line)
            near_brow[fr[d < 0.014]] = True
        eyes_lm = [(lm[[39, 38, 37, 36]], lm[[39, 40, 41, 36]]), (lm[[42, 43, 44, 45]], lm[[42, 47, 46, 45]])]
        upper, lower, liner, shadow = [], [], [], []
        for _k, (up, lo) in enumerate(eyes_lm):
            up2, lo2 = up[:, :2], lo[:, :2]
            cand = fr[np.linalg.norm(xy[fr] - up2.mean(0), axis=1) < 0.04]
            upper.append(_band(xy, cand, up2, 0.005))
            lower.append(_band(xy, cand, lo2, 0.003))
            outward = np.sign(up2[-1, 0] - up2[0, 0])
            wing = up2[-1] + np.array([outward * 0.007, 0.003])
            liner.append(_band(xy, cand, np.vstack([up2, wing]), 0.005))
            shadow.append(_band(xy, cand, up2, 0.012))
        eyes = []
        for side in ("left", "right"):
            if f"sclera_{side}" not in facemodel.region_names or f"iris_{side}" not in facemodel.region_names:
                continue
            sl_s, sl_i = facemodel.region(f"sclera_{side}"), facemodel.region(f"iris_{side}")
            centre, axis = _eye_centre_axis(v[sl_s])
            idx = np.arange(n)[sl_i]
            d = v[idx] - centre
            up = np.array([0.0, 1.0, 0.0]) - axis * axis[1]
            eyes.append(
                (idx, (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32), axis, up / np.linalg.norm(up))
            )
        sclera_idx = np.nonzero(regions.sclera > 0)[0]
        sclera_side = np.zeros(len(sclera_idx), np.float32)
        for side in ("left", "right"):
            if f"sclera_{side}" not in facemodel.region_names:
                continue
            sl_s = facemodel.region(f"sclera_{side}")
            centre, axis = _eye_centre_axis(v[sl_s])
            d = v[sl_s] - centre
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            horiz = np.cross(axis, [0.0, 1.0, 0.0])
            pos = np.searchsorted(sclera_idx, np.arange(n)[sl_s])
            ok = (pos < len(sclera_idx)) & (sclera_idx[np.minimum(pos, len(sclera_idx) - 1)] == np.arange(n)[sl_s])
            sclera_side[pos[ok]] = np.abs(d[ok] @ horiz / max(np.linalg.norm(horiz), 1e-9))
        f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
        return cls(
            num_vertices=n,
            xy=xy.astype(np.float32),
            skin_idx=np.nonzero(skin)[0],
            face_idx=np.nonzero(face)[0],
            tzone=f32(tzone),
            cheeks=f32(cheeks),
            blush=f32(blush),
            freckle_zone=f32(freckle_zone),
            moustache=f32(moustache),
            goatee=f32(goatee),
            beard=f32(beard),
            brow_base=brow_base,
            brow_idx=np.nonzero(near_brow)[0],
            upper_lid=upper,
            lower_lid=lower,
            liner=liner,
            shadow=shadow,
            eyes=eyes,
            sclera_idx=sclera_idx,
            sclera_side=sclera_side,
        )


def _eye_centre_axis(sclera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (3,) and unit optical axis (3,) of an eyeball's sclera shell (its corneal bulge)."""
    centre = fit_sphere(sclera)
    d = sclera - centre
    dist = np.linalg.norm(d, axis=1)
    axis = d[dist >= np.percentile(dist, 97)].mean(0)
    return centre, axis / np.linalg.norm(axis)


# --------------------------------------------------------------------------- styles
@dataclass
class BrowStyle:
    color: np.ndarray  # (3,) sRGB
    thickness: float  # m, at the inner end
    taper: float  # outer thickness / inner thickness
    arch: float  # m, lift of the arch at 60 % of the brow
    lift: float  # m, whole brow
    density: float  # 0..1
    seed: int


@dataclass
class LashStyle:
    strength: float  # darkening of the upper lash line
    width: float  # m at the outer corner
    color: np.ndarray


@dataclass
class FacialHairStyle:
    kind: str  # stubble, moustache, goatee, beard, moustache_goatee
    color: np.ndarray
    density: float
    seed: int


@dataclass
class EyeStyle:
    inner: np.ndarray  # collarette tint (3,) gain
    fibres: int  # radial fibre count
    crypts: float
    highlight_dir: tuple[float, float]  # (up, side) tilt of the corneal highlight from the axis
    highlight_size: float  # cos of its angular radius
    sclera_red: float


@dataclass
class SkinDetail:
    fitzpatrick: int  # 1..6
    tone: np.ndarray  # (3,) sRGB base skin
    pores: float
    freckles: float
    moles: int
    blemishes: int
    dark_circles: float
    seed: int


@dataclass
class Makeup:
    lipstick: np.ndarray | None
    lip_amount: float
    liner: float
    shadow: np.ndarray | None
    shadow_amount: float
    blush: float


@dataclass
class SpecularStyle:
    oil: float  # overall specular scale
    tzone: float  # extra on the T-zone
    matte_cheeks: float
    gloss: float  # multiplies the image's shininess (smoother skin: sharper highlights)


def sample_brows(rng: np.random.Generator, hair_color: np.ndarray) -> BrowStyle:
    dark = rng.uniform(0.45, 0.9)
    return BrowStyle(
        color=np.clip(hair_color * dark * rng.uniform(0.9, 1.1, 3), 0, 1),
        thickness=float(rng.uniform(0.0025, 0.0055)),
        taper=float(rng.uniform(0.35, 0.8)),
        arch=float(rng.uniform(0.0, 0.0045)),
        lift=float(rng.uniform(-0.001, 0.003)),
        density=float(rng.uniform(0.55, 1.0)),
        seed=int(rng.integers(1 << 31)),
    )


def sample_lashes(rng: np.random.Generator, masculine: bool) -> LashStyle:
    return LashStyle(
        strength=float(rng.uniform(0.6, 0.9) if not masculine else rng.uniform(0.45, 0.8)),
        width=float(rng.uniform(0.002, 0.0035)),
        color=np.array([0.05, 0.04, 0.04]) * rng.uniform(0.8, 1.5),
    )


def sample_facial_hair(rng: np.random.Generator, hair_color: np.ndarray) -> FacialHairStyle:
    kind = ("stubble", "moustache", "goatee", "beard", "moustache_goatee")[
        int(rng.choice(5, p=[0.35, 0.12, 0.12, 0.28, 0.13]))
    ]
    grey = rng.random() < 0.15
    color = np.array([0.5, 0.49, 0.47]) if grey else hair_color * rng.uniform(0.6, 1.0)
    return FacialHairStyle(
        kind=kind, color=np.clip(color, 0, 1), density=float(rng.uniform(0.5, 1.0)), seed=int(rng.integers(1 << 31))
    )


def sample_eyes(rng: np.random.Generator) -> EyeStyle:
    return EyeStyle(
        inner=np.clip(np.array([1.25, 1.05, 0.7]) * rng.uniform(0.8, 1.2, 3), 0.5, 1.6),
        fibres=int(rng.integers(28, 64)),
        crypts=float(rng.uniform(0.1, 0.35)),
        highlight_dir=(float(rng.uniform(0.12, 0.32)), float(rng.uniform(-0.25, 0.25))),
        highlight_size=float(np.cos(np.deg2rad(rng.uniform(3.0, 6.0)))),
        sclera_red=float(rng.uniform(0.0, 0.35)),
    )


def sample_skin(rng: np.random.Generator, legacy_skin: np.ndarray) -> SkinDetail:
    """Skin detail; the base tone is redrawn uniformly over Fitzpatrick types I-VI."""
    fitz = int(rng.integers(1, 7))
    t = np.clip(fitz - 1 + rng.uniform(-0.5, 0.5), 0, len(FITZPATRICK_TONES) - 1)
    i = int(t)
    j = min(i + 1, len(FITZPATRICK_TONES) - 1)
    tone = FITZPATRICK_TONES[i] * (1 - (t - i)) + FITZPATRICK_TONES[j] * (t - i)
    tone = tone * _UNDERTONES[rng.integers(len(_UNDERTONES))] * rng.uniform(0.96, 1.04, 3)
    light = fitz <= 3
    return SkinDetail(
        fitzpatrick=fitz,
        tone=np.clip(tone, 0.05, 1),
        pores=float(rng.uniform(0.02, 0.06)),
        freckles=float(rng.uniform(0.2, 1.0)) if rng.random() < (0.35 if light else 0.08) else 0.0,
        moles=int(rng.integers(0, 5)),
        blemishes=int(rng.integers(0, 8)) if rng.random() < 0.5 else 0,
        dark_circles=float(rng.uniform(0.0, 0.15)),
        seed=int(rng.integers(1 << 31)),
    )


def sample_makeup(rng: np.random.Generator) -> Makeup:
    lips = rng.random() < 0.75
    shadow = rng.random() < 0.6
    return Makeup(
        lipstick=_LIPSTICKS[rng.integers(len(_LIPSTICKS))] * rng.uniform(0.85, 1.1) if lips else None,
        lip_amount=float(rng.uniform(0.5, 0.9)),
        liner=float(rng.uniform(0.4, 0.9) if rng.random() < 0.6 else 0),
        shadow=_SHADOWS[rng.integers(len(_SHADOWS))] * rng.uniform(0.8, 1.2) if shadow else None,
        shadow_amount=float(rng.uniform(0.25, 0.6)),
        blush=float(rng.uniform(0.15, 0.45) if rng.random() < 0.6 else 0),
    )


def sample_specular(rng: np.random.Generator) -> SpecularStyle:
    return SpecularStyle(
        oil=float(np.exp(rng.uniform(np.log(0.5), np.log(1.8)))),
        tzone=float(rng.uniform(0, 1.2)),
        matte_cheeks=float(rng.uniform(0, 0.5)),
        gloss=float(np.exp(rng.uniform(np.log(0.6), np.log(2.0)))),
    )


# --------------------------------------------------------------------------- painting
def _mix(alb: np.ndarray, idx: np.ndarray, color, weight: np.ndarray) -> None:
    w = np.asarray(weight, np.float32)[:, None]
    alb[idx] = alb[idx] * (1 - w) + np.asarray(color, np.float32) * w


def _paint_skin(alb: np.ndarray, dr: DetailRegions, s: SkinDetail, positions: np.ndarray) -> None:
    rng = np.random.default_rng(s.seed)
    idx = dr.skin_idx
    u = rng.random((2, dr.num_vertices), dtype=np.float32)
    # Pores: per-vertex mottling (the mesh's ~2 mm spacing), stronger on the T-zone.
    pore = (u[0, idx] - 0.5) * np.float32(2 * s.pores) * (1 + dr.tzone[idx])
    alb[idx] *= (1 + pore)[:, None]
    if s.freckles > 0:
        f = dr.freckle_zone[idx] * np.float32(s.freckles)
        speck = (u[1, idx] < 0.2 * f).astype(np.float32) * (0.4 + 0.4 * f)
        alb[idx] *= 1 - speck[:, None] * np.array([0.18, 0.26, 0.3], np.float32)
    f_idx = dr.face_idx
    spots = [(0.45, np.array([0.55, 0.42, 0.36]), rng.uniform(0.0009, 0.0022)) for _ in range(s.moles)]
    spots += [(0.5, np.array([1.05, 0.72, 0.72]), rng.uniform(0.0012, 0.003)) for _ in range(s.blemishes)]
    if spots:
        centres = positions[rng.choice(f_idx, len(spots))]
        for (amount, tint, radius), c in zip(spots, centres):
            d2 = ((positions[f_idx] - c) ** 2).sum(1)
            near = d2 < (3 * radius) ** 2
            w = amount * np.exp(-0.5 * d2[near] / radius**2)
            i = f_idx[near]
            _mix(alb, i, alb[i] * tint.astype(np.float32), w)
    if s.dark_circles > 0:
        for band in dr.lower_lid:
            below = band.above < 0
            w = s.dark_circles * (1 - smoothstep(0.001, 0.003, band.dist)) * below
            alb[band.idx] *= 1 - w[:, None] * np.array([0.9, 1.1, 1.0], np.float32)


def _paint_facial_hair(alb: np.ndarray, dr: DetailRegions, fh: FacialHairStyle) -> None:
    mask = {
        "stubble": dr.beard,
        "beard": dr.beard,
        "moustache": dr.moustache,
        "goatee": dr.goatee,
        "moustache_goatee": np.maximum(dr.moustache, dr.goatee),
    }[fh.kind]
    idx = np.nonzero(mask > 0.01)[0]
    w = mask[idx]
    u = np.random.default_rng(fh.seed).random(len(idx), dtype=np.float32)
    if fh.kind == "stubble":
        hairs = (u < 0.6 * fh.density).astype(np.float32)
        _mix(alb, idx, fh.color, w * (0.2 + 0.3 * hairs) * fh.density)
        alb[idx] *= (1 - 0.12 * w * fh.density)[:, None]
    else:
        hairs = (u < fh.density).astype(np.float32)
        _mix(alb, idx, fh.color * (0.85 + 0.3 * u[:, None]), w * (0.55 + 0.4 * hairs))


def _paint_brows(alb: np.ndarray, dr: DetailRegions, b: BrowStyle) -> np.ndarray:
    """Paints the brows; returns their (V,) mask (for the specular layer)."""
    idx = dr.brow_idx
    xy = dr.xy[idx].astype(np.float64)
    mask = np.zeros(dr.num_vertices, np.float32)
    for base in dr.brow_base:
        t = np.linspace(0, 1, len(base))
        line = base + np.c_[np.zeros(len(base)), b.lift + b.arch * np.exp(-(((t - 0.6) / 0.28) ** 2))]
        d, tt, _ = _polyline_param(xy, line)
        half = 0.5 * b.thickness * (1 - (1 - b.taper) * tt)
        mask[idx] = np.maximum(mask[idx], 1 - smoothstep(half * 0.7, half * 1.15 + 0.0006, d))
    u = np.random.default_rng(b.seed).random(len(idx), dtype=np.float32)
    w = mask[idx] * b.density * (0.6 + 0.4 * u)
    _mix(alb, idx, b.color * (0.8 + 0.4 * u[:, None]), np.clip(w, 0, 1))
    return mask


def _paint_lashes(alb: np.ndarray, dr: DetailRegions, lashes: LashStyle | None, liner: float) -> None:
    for up, lo, ln in zip(dr.upper_lid, dr.lower_lid, dr.liner):
        if lashes is not None:
            width = lashes.width * (0.5 + 0.5 * up.t)  # fuller towards the outer corner
            w = lashes.strength * (1 - smoothstep(width * 0.5, width, up.dist)) * (up.above > -0.0008)
            _mix(alb, up.idx, lashes.color, w)
            w = 0.5 * lashes.strength * (1 - smoothstep(0.0004, 0.0009, lo.dist)) * (lo.above < 0.0003) * lo.t
            _mix(alb, lo.idx, lashes.color, w)
        if liner > 0:
            w = liner * (1 - smoothstep(0.0012, 0.002 + 0.0015 * ln.t, ln.dist)) * (ln.above > -0.0005)
            _mix(alb, ln.idx, np.array([0.03, 0.03, 0.035]), w)


def _paint_makeup(alb: np.ndarray, dr: DetailRegions, regions: HeadRegions, m: Makeup, skin: np.ndarray) -> None:
    if m.shadow is not None:
        for band in dr.shadow:
            w = m.shadow_amount * (1 - smoothstep(0.005, 0.011, band.dist)) * (band.above > 0)
            _mix(alb, band.idx, m.shadow, w)
    if m.blush > 0:
        i = np.nonzero(dr.blush > 0.02)[0]
        _mix(alb, i, skin * np.array([1.1, 0.7, 0.72]), m.blush * dr.blush[i])
    if m.lipstick is not None:
        i, w = regions.support("lips")
        _mix(alb, i, m.lipstick, w * m.lip_amount)


def _paint_eyes(alb: np.ndarray, dr: DetailRegions, regions: HeadRegions, e: EyeStyle) -> None:
    for idx, dirs, axis, up in dr.eyes:
        iris = regions.iris[idx]
        on = iris > 0
        i, d, w = idx[on], dirs[on], iris[on]
        cos = d @ axis.astype(np.float32)
        theta = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        collarette = (1 - smoothstep(12.0, 17.0, theta)) * (1 - regions.pupil[i])
        fibre = 0.85 + 0.15 * np.sin(regions.iris_angle[i] * e.fibres) * np.sin(regions.iris_angle[i] * 7 + theta)
        alb[i] *= (1 + (e.inner.astype(np.float32) - 1) * collarette[:, None] * w[:, None]) * fibre[:, None]
        # Corneal highlight: the reflection of a light above and to one side of the camera.
        side = np.cross(up, axis)
        hd = axis + e.highlight_dir[0] * up + e.highlight_dir[1] * side
        hd /= np.linalg.norm(hd)
        spot = smoothstep(e.highlight_size - 0.002, e.highlight_size + 0.001, d @ hd.astype(np.float32))
        _mix(alb, i, np.array([0.97, 0.97, 0.97]), spot)
    if e.sclera_red > 0 and len(dr.sclera_idx):
        w = e.sclera_red * smoothstep(0.55, 0.95, dr.sclera_side)
        _mix(alb, dr.sclera_idx, np.array([0.85, 0.55, 0.52]), w)


def apply_skin_detail(alb: np.ndarray, regions: HeadRegions, dr: DetailRegions, style) -> None:
    """Paint a `jmlr.synth.heads.HeadStyle`'s skin detail onto the base skin albedo (V, 3) in place."""
    if style.skin_detail is not None:
        _paint_skin(alb, dr, style.skin_detail, regions.positions)


def apply_detail(alb: np.ndarray, regions: HeadRegions, dr: DetailRegions, style, skin: np.ndarray) -> None:
    """Paint the layers over the skin (facial hair, make-up, brows, lashes, eyes) in place,
    after the legacy lips, mouth and eyes."""
    if style.facial_hair is not None:
        _paint_facial_hair(alb, dr, style.facial_hair)
    if style.makeup is not None:
        _paint_makeup(alb, dr, regions, style.makeup, skin)
    if style.eyebrows is not None:
        _paint_brows(alb, dr, style.eyebrows)
    liner = style.makeup.liner if style.makeup is not None else 0.0
    if style.eyelashes is not None or liner > 0:
        _paint_lashes(alb, dr, style.eyelashes, liner)
    if style.eyes is not None:
        _paint_eyes(alb, dr, regions, style.eyes)


def detail_specular(base: np.ndarray, dr: DetailRegions, style) -> np.ndarray:
    """Per-vertex specular scale (V,) of a subject from the generator's ``base`` (V,)."""
    s = style.specular_variation
    if s is None:
        return base
    spec = (
        base * np.float32(s.oil) * (1 + np.float32(s.tzone) * dr.tzone) * (1 - np.float32(s.matte_cheeks) * dr.cheeks)
    )
    spec[dr.sclera_idx] = base[dr.sclera_idx] * 1.5  # a wet cornea stays glossy whatever the skin
    return spec.astype(np.float32)

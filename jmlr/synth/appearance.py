"""Randomised appearance: skin and eye albedo, lights, backgrounds, camera effects.

Everything a network could use as a shortcut is randomised: skin tone over the human
range with procedural blotches, lips, brows, stubble and hair; sclera and iris colours;
Lambert + specular light from random directions; gradient, noise, stripe and clutter
backgrounds; blur, noise, colour cast and JPEG compression.

The per-vertex masks these are painted through (`HeadRegions`, computed once from the
neutral head) are in `jmlr.synth.regions`; `HeadRegions` is re-exported here.
Albedo is in [0, 1] sRGB-like values; the renderer linearises it.
Images are numpy uint8 H x W x 3 RGB (docs/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .face_detail import apply_detail, apply_skin_detail
from .heads import sample_head_style, style_rng
from .regions import HeadRegions
from .render import Lighting

__all__ = [
    "HeadRegions",
    "SubjectAppearance",
    "sample_subject_appearance",
    "albedo_from_appearance",
    "sample_lighting",
    "sample_background",
    "apply_camera_effects",
    "composite",
    "encode_jpeg",
]

# Skin tones (sRGB, [0, 1]) from very light to very dark; a subject interpolates
# between neighbours, then gets a small hue jitter.
_SKIN_TONES = np.array([
    [0.96, 0.83, 0.75], [0.92, 0.76, 0.65], [0.86, 0.68, 0.55], [0.78, 0.58, 0.44],
    [0.66, 0.46, 0.33], [0.52, 0.35, 0.24], [0.40, 0.26, 0.18], [0.29, 0.19, 0.13],
])
_HAIR_COLORS = np.array([
    [0.06, 0.05, 0.05], [0.17, 0.11, 0.07], [0.32, 0.20, 0.11], [0.52, 0.36, 0.20],
    [0.74, 0.60, 0.38], [0.55, 0.23, 0.10], [0.55, 0.53, 0.52], [0.85, 0.84, 0.82],
])
_IRIS_COLORS = np.array([
    [0.25, 0.14, 0.07], [0.38, 0.22, 0.10], [0.12, 0.07, 0.04], [0.30, 0.42, 0.58],
    [0.42, 0.55, 0.66], [0.33, 0.42, 0.24], [0.45, 0.36, 0.18], [0.40, 0.44, 0.47],
])


@dataclass
class SubjectAppearance:
    """What stays fixed for one person across captures (all colours sRGB in [0, 1])."""

    skin: np.ndarray  # (3,)
    lip: np.ndarray  # (3,)
    hair: np.ndarray  # (3,)
    hair_amount: float  # 0 bald .. 1 full scalp colour
    brow_amount: float
    stubble_amount: float
    iris: np.ndarray  # (3,)
    sclera: np.ndarray  # (3,)
    teeth: np.ndarray  # (3,)
    blotch: float  # strength of low-frequency redness / unevenness
    freckles: float
    noise_freq: np.ndarray  # (K, 3) rad per metre
    noise_phase: np.ndarray  # (K,)
    noise_amp: np.ndarray  # (K, 3)
    style: object | None = None  # jmlr.synth.heads.HeadStyle: hair, brows, eyes, skin detail, clothing...


def sample_subject_appearance(rng: np.random.Generator, heads=None) -> SubjectAppearance:
    """Draw one person's colours and procedural-detail parameters.

    ``heads``: a `jmlr.synth.heads.HeadConfig`; its elements are drawn from a generator
    derived from ``rng`` without advancing it (`jmlr.synth.heads.style_rng`), so ``rng``
    ends in the same state whatever the config.
    """
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    i = int(t)
    j = min(i + 1, len(_SKIN_TONES) - 1)
    skin = _SKIN_TONES[i] * (1 - (t - i)) + _SKIN_TONES[j] * (t - i)
    skin = np.clip(skin * rng.uniform(0.93, 1.07, 3) * rng.uniform(0.9, 1.08), 0.05, 1)
    lip = np.clip(skin * np.array([0.95, 0.62, 0.62]) * rng.uniform(0.8, 1.0), 0, 1)
    hair = np.clip(_HAIR_COLORS[rng.integers(len(_HAIR_COLORS))] * rng.uniform(0.8, 1.2, 3), 0, 1)
    iris = np.clip(_IRIS_COLORS[rng.integers(len(_IRIS_COLORS))] * rng.uniform(0.8, 1.2, 3), 0, 1)
    sclera = np.clip(np.array([0.92, 0.88, 0.84]) * rng.uniform(0.8, 1.0) + rng.uniform(-0.04, 0.04, 3), 0, 1)
    teeth = np.clip(np.array([0.90, 0.86, 0.76]) * rng.uniform(0.75, 1.0), 0, 1)
    k = 24
    # Wavelengths from 3 cm down to 3 mm: blotches and pores-scale unevenness.
    wavelength = np.exp(rng.uniform(np.log(0.003), np.log(0.03), k))
    direction = rng.standard_normal((k, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    amp = rng.uniform(-1, 1, (k, 3)) * 0.3 + rng.uniform(-1, 1, (k, 1))
    a = SubjectAppearance(
        skin=skin, lip=lip, hair=hair,
        hair_amount=float(rng.choice([0.0, rng.uniform(0.5, 1.0)], p=[0.25, 0.75])),
        brow_amount=float(rng.uniform(0.35, 0.85)),
        stubble_amount=float(rng.choice([0.0, rng.uniform(0.2, 0.8)], p=[0.65, 0.35])),
        iris=iris, sclera=sclera, teeth=teeth,
        blotch=float(rng.uniform(0.02, 0.10)), freckles=float(rng.choice([0.0, rng.uniform(0.0, 0.12)], p=[0.7, 0.3])),
        noise_freq=2 * np.pi / wavelength[:, None] * direction, noise_phase=rng.uniform(0, 2 * np.pi, k),
        noise_amp=amp / np.sqrt(k),
    )
    if heads is not None and heads.any:
        a.style = st = sample_head_style(style_rng(rng), heads, a.skin)
        if heads.hair > 0:  # the scalp (hair, buzz cut or stubble) takes the natural colour
            a.hair = st.hair_color
        if st.skin_detail is not None:  # the new tone keeps the subject's lip-to-skin ratio
            a.lip = np.clip(st.skin_detail.tone * a.lip / np.maximum(a.skin, 1e-3), 0, 1)
            a.skin = st.skin_detail.tone
        if st.hair is not None:  # the scalp under the hair shell
            a.hair_amount = 1.0
    return a


def _mix(alb: np.ndarray, color, weight: np.ndarray, idx: np.ndarray) -> None:
    """In place: blend ``alb[idx] (P, 3)`` towards ``color`` ((3,) or (P, 3)) by ``weight (P,)``."""
    w = weight[:, None]
    alb[idx] = alb[idx] * (1 - w) + np.asarray(color, np.float32) * w


def albedo_from_appearance(regions: HeadRegions, appearance: SubjectAppearance, detail=None) -> np.ndarray:
    """Per-vertex albedo (V, 3) float32 of one subject.

    Masks are applied only on their support (a few hundred vertices each), which
    keeps this at a few milliseconds per subject. ``detail``: the face model's
    `jmlr.synth.face_detail.DetailRegions`, needed when the appearance has a style; its
    elements replace the corresponding legacy layers (brows, stubble, freckles).
    """
    r = regions
    sup = r.support
    a = appearance
    st = a.style
    if st is not None and detail is None:
        raise ValueError("an appearance with a head style needs the face model's DetailRegions")
    freq = np.ascontiguousarray(a.noise_freq.T, np.float32)  # (3, K)
    phase = r.positions @ freq + a.noise_phase.astype(np.float32)  # (V, K)
    noise = np.sin(phase) @ a.noise_amp.astype(np.float32)  # (V, 3), roughly unit variance
    lum = np.clip((noise[:, 0] + noise[:, 1] + noise[:, 2]) / 3, 0, None)  # mean(1) is 15x slower
    # Unevenness, redness where it peaks (cheeks, nose), freckles as dark speckles.
    alb = a.skin.astype(np.float32)[None] * (1 + np.float32(a.blotch) * noise)
    alb *= 1 + np.float32(a.blotch) * lum[:, None] * np.array([0.3, -0.25, -0.25], np.float32)
    if st is not None:
        apply_skin_detail(alb, regions, detail, st)
    if a.freckles > 0 and (st is None or st.skin_detail is None):
        speck = np.clip(np.sin(phase[:, -8:] * 3.1).prod(1) * 4, 0, 1)
        alb *= 1 - np.float32(a.freckles) * speck[:, None] * np.array([0.6, 0.8, 0.9], np.float32)
    i, w = sup("lips")
    _mix(alb, a.lip * (1 + 0.05 * noise[i]), w * 0.9, i)
    i, w = sup("stubble")
    if a.stubble_amount > 0 and (st is None or st.legacy_stubble):
        _mix(alb, a.hair, w * a.stubble_amount * 0.5, i)
        alb[i] *= 1 - w[:, None] * np.float32(a.stubble_amount * 0.15)
    i, w = sup("scalp")
    if a.hair_amount > 0:
        hair_tex = np.clip(1 + 0.25 * noise[i].mean(1, keepdims=True), 0.5, 1.5)
        _mix(alb, a.hair * hair_tex, w * a.hair_amount, i)
    if st is None or st.eyebrows is None:  # else the style's brows replace these
        i, w = sup("brows")
        brow_tex = np.clip(0.75 + 0.5 * np.sin(phase[i, :4] * 4.0).mean(1), 0.3, 1.0)
        _mix(alb, a.hair * 0.8, w * a.brow_amount * brow_tex, i)
    i, w = sup("eye_socket")
    _mix(alb, a.skin * np.array([0.75, 0.45, 0.45]), w, i)
    i, w = sup("mouth")
    _mix(alb, np.array([0.35, 0.08, 0.08]), w, i)
    i, w = sup("gums")
    _mix(alb, np.array([0.72, 0.35, 0.36]), w, i)
    i, w = sup("teeth")
    _mix(alb, a.teeth, w, i)
    i, w = sup("sclera")
    vein = np.clip(noise[i, :1] * 0.5, 0, 1) * np.array([0.0, 0.25, 0.25], np.float32)
    _mix(alb, a.sclera - vein * 0.3, w, i)
    i, w = sup("iris")
    stripes = 0.75 + 0.25 * np.sin(r.iris_angle[i] * 23 + 3 * noise[i, 1])
    _mix(alb, a.iris[None] * stripes[:, None] * (1 - 0.6 * r.limbus[i, None]), w, i)
    i, w = sup("pupil")
    _mix(alb, np.array([0.02, 0.02, 0.02]), w, i)
    if st is not None:
        apply_detail(alb, regions, detail, st, a.skin)
    return np.clip(alb, 0, 1, out=alb)


def specular_and_occlusion(regions: HeadRegions) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex specular scale and ambient occlusion (V,) for a head."""
    r = regions
    spec = 1.0 + 1.5 * r.lips + 0.8 * r.sclera - 0.7 * r.scalp
    occ = 1.0 - 0.75 * r.mouth - 0.45 * r.gums - 0.35 * r.teeth - 0.3 * r.eye_socket
    return spec.astype(np.float32), np.clip(occ, 0.05, 1).astype(np.float32)


def sample_lighting(rng: np.random.Generator, batch: int) -> Lighting:
    """Ambient + one or two directional lights in OpenGL camera space (from the camera side)."""
    amb, dirs, cols, spec, shin = [], [], [], [], []
    for _ in range(batch):
        tint = np.clip(1 + rng.uniform(-0.12, 0.12, 3), 0, None)
        amb.append(rng.uniform(0.15, 0.55) * tint)
        d = np.zeros((2, 3))
        c = np.zeros((2, 3))
        for k in range(2):
            v = rng.standard_normal(3)
            v[2] = abs(v[2]) + 0.5  # towards the camera side of the head
            d[k] = v / np.linalg.norm(v)
            strength = rng.uniform(0.4, 1.0) if k == 0 else rng.uniform(0.0, 0.5) * (rng.random() < 0.6)
            c[k] = strength * np.clip(1 + rng.uniform(-0.15, 0.15, 3), 0, None)
        dirs.append(d)
        cols.append(c)
        spec.append(rng.uniform(0.03, 0.25))
        shin.append(rng.uniform(8, 40))
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return Lighting(f(amb), f(dirs), f(cols), f(spec), f(shin))


def _random_color(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour in [0, 255] (float64), mostly of moderate saturation."""
    hsv = np.array([[[rng.uniform(0, 180), 255 * rng.beta(1.2, 2.2), 255 * rng.uniform(0.1, 1.0)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def sample_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random background (H, W, 3) uint8 RGB: gradient, smooth noise, stripes/checks
    or flat colour, then clutter (rectangles, discs, lines, polygons) and maybe blur.

    Colours are drawn in HSV with mostly moderate saturation, like indoor scenes.
    """
    kind = int(rng.integers(4))
    if kind == 0:  # linear gradient, computed small and upsampled (it is smooth)
        h, w = max(height // 8, 2), max(width // 8, 2)
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * np.arange(w, dtype=np.float32)[None] + np.sin(a) * np.arange(h, dtype=np.float32)[:, None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        c0, c1 = _random_color(rng), _random_color(rng)
        small = (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)
        bg = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    elif kind == 1:  # smooth coloured noise
        s = int(rng.integers(2, 12))
        small = np.stack([_random_color(rng) for _ in range(s * s)]).reshape(s, s, 3).astype(np.float32)
        bg = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    elif kind == 2:  # stripes / checks, a stand-in for man-made textures
        period = rng.uniform(8, 80)
        a = rng.uniform(0, np.pi)
        xx = np.arange(width, dtype=np.float32)[None]
        yy = np.arange(height, dtype=np.float32)[:, None]
        k = np.float32(2 * np.pi / period)
        sgn = np.sin((np.float32(np.cos(a)) * xx + np.float32(np.sin(a)) * yy) * k)
        if rng.random() < 0.5:
            sgn = sgn * np.sin((np.float32(-np.sin(a)) * xx + np.float32(np.cos(a)) * yy) * k)
        t = (sgn > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * sgn
        c0, c1 = _random_color(rng).astype(np.float32), _random_color(rng).astype(np.float32)
        bg = c0 + (c1 - c0) * t[..., None]
    else:  # flat
        bg = np.empty((height, width, 3), np.float32)
        bg[:] = _random_color(rng)
    bg = np.clip(bg, 0, 255).astype(np.uint8)
    # Clutter: filled shapes and lines.
    scale = max(width, height)
    for _ in range(int(rng.integers(0, 10))):
        color = tuple(float(c) for c in _random_color(rng))
        shape = rng.integers(4)
        p = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        size = int(rng.uniform(0.02, 0.3) * scale)
        if shape == 0:
            q = (p[0] + int(rng.uniform(-1, 1) * size), p[1] + int(rng.uniform(-1, 1) * size))
            cv2.rectangle(bg, p, q, color, -1)
        elif shape == 1:
            cv2.circle(bg, p, max(size // 2, 1), color, -1, lineType=cv2.LINE_AA)
        elif shape == 2:
            q = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            cv2.line(bg, p, q, color, max(1, int(rng.uniform(0.002, 0.015) * scale)), lineType=cv2.LINE_AA)
        else:
            pts = (np.array(p) + rng.uniform(-size, size, (int(rng.integers(3, 7)), 2))).astype(np.int32)
            cv2.fillPoly(bg, [pts], color, lineType=cv2.LINE_AA)
    if rng.random() < 0.5:
        bg = cv2.GaussianBlur(bg, (0, 0), rng.uniform(1, 6) * scale / 800)
    return bg


def composite(foreground: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Blend a rendered head (H, W, 3) float [0, 1] over a uint8 background with a soft edge.

    Pinholes where the mesh's shells meet (eyelids, lip corners) are closed, and the
    binary coverage is feathered by about half a pixel so that silhouettes are not
    stair-stepped; colour just outside the mask comes from the nearest head pixels.
    Work is limited to the mask's bounding box.
    """
    out = background.copy()
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if len(ys) == 0:
        return out
    h, w = mask.shape
    y0, y1 = max(ys[0] - 3, 0), min(ys[-1] + 4, h)
    x0, x1 = max(xs[0] - 3, 0), min(xs[-1] + 4, w)
    m = mask[y0:y1, x0:x1]
    fg = np.ascontiguousarray(foreground[y0:y1, x0:x1], dtype=np.float32) * np.float32(255)
    m8 = m.astype(np.uint8)
    closed = cv2.morphologyEx(m8, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    fg_d = cv2.dilate(fg, np.ones((3, 3), np.uint8))
    fg = np.where(m[..., None], fg, fg_d)
    alpha = cv2.GaussianBlur(closed.astype(np.float32), (3, 3), 0.6)
    alpha = (np.minimum(alpha * np.float32(1.6), 1.0) * (alpha > 0))[..., None]
    bg = background[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(fg * alpha + bg * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)
    return out


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB uint8 image."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def apply_camera_effects(image: np.ndarray, rng: np.random.Generator, jpeg: bool = True,
                         scale: float = 1.0) -> np.ndarray:
    """Colour cast, exposure, contrast, blur (Gaussian or motion), sensor noise and
    (optionally) a JPEG round trip with quality 35-95, on a uint8 RGB image.

    ``scale`` is the image's size relative to the 800x800 frame, so that blur has the
    same look on a 256x256 crop. Noise comes from OpenCV's generator seeded from ``rng``.
    """
    gains = rng.uniform(0.9, 1.1, 3) * rng.uniform(0.75, 1.25)
    contrast = rng.uniform(0.75, 1.15) if rng.random() < 0.3 else 1.0
    # out = contrast * (gain * x - 128) + 128, per channel, saturating to uint8.
    mat = np.zeros((3, 4), np.float32)
    mat[np.arange(3), np.arange(3)] = contrast * gains
    mat[:, 3] = 128 * (1 - contrast)
    img = cv2.transform(image, mat)
    r = rng.random()
    if r < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), max(rng.uniform(0.3, 1.6) * scale, 0.1))
    elif r < 0.7:
        k = max(3, int(rng.uniform(3, 12) * scale) | 1)
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= max(kernel.sum(), 1e-6)
        img = cv2.filter2D(img, -1, kernel)
    if rng.random() < 0.7:
        noise = np.empty(img.shape, np.int16)
        cv2.setRNGSeed(int(rng.integers(1 << 31)))
        cv2.randn(noise, 0, rng.uniform(1, 7))
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    if jpeg:
        buf = encode_jpeg(img, int(rng.integers(35, 96)))
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return img

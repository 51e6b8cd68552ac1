"""The world around a rendered head: coloured light, a photographed or procedural
background, shadows, occluders, and the phone camera that takes the picture.

`colour_lighting` recolours the lights a head is shaded with (at render time);
`finish_capture` turns one rendered head (image, mask, depth) into the final picture:

1. background: a photograph (`jmlr.synth.backgrounds`) or the procedural one, maybe
   defocused as by a lens focused on the face;
2. the head's soft cast shadow on the background, away from the key light;
3. spill: the background's colour on the head (ambient from the surroundings, strongest
   at the silhouette, where real light wraps round);
4. the head composited (`jmlr.synth.appearance.composite`);
5. occluders (`jmlr.synth.occluders`) depth-tested against the head, with their soft
   shadows on the face;
6. the phone camera (`jmlr.synth.camera.apply_phone_effects`).

Each step draws from its own generator (`jmlr.synth.world.element_rngs`) and is switched
by its probability in `jmlr.synth.world.WorldConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .appearance import composite, sample_background
from .camera import apply_phone_effects, disc_kernel
from .occluders import Anchors, build_occluders, draw_primitives
from .render import Lighting
from .world import WorldConfig

__all__ = ["colour_lighting", "colour_temperature", "CaptureContext", "finish_capture", "cast_shadow"]

# Colour of a black body (sRGB-like, normalised to mean 1) at kelvin temperatures.
_KELVIN = np.array([2000, 2700, 3500, 4500, 5500, 6500, 7500, 9000], np.float64)
_KELVIN_RGB = np.array([[1.0, 0.54, 0.17], [1.0, 0.66, 0.36], [1.0, 0.76, 0.54], [1.0, 0.86, 0.73],
                        [1.0, 0.93, 0.87], [1.0, 0.98, 1.0], [0.91, 0.92, 1.0], [0.82, 0.86, 1.0]])


def colour_temperature(kelvin: float) -> np.ndarray:
    """(3,) RGB of a light of ``kelvin`` (2000-9000 K), mean 1."""
    c = np.array([np.interp(kelvin, _KELVIN, _KELVIN_RGB[:, k]) for k in range(3)])
    return c / c.mean()


def _hue(rng: np.random.Generator, saturation: float) -> np.ndarray:
    """(3,) a random hue at ``saturation`` (0 white .. 1 pure), mean 1."""
    hsv = np.array([[[rng.uniform(0, 180), 255 * saturation, 255]]], np.uint8)
    c = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255.0
    return c / max(c.mean(), 1e-6)


def colour_lighting(lighting: Lighting, rngs: Sequence[Mapping[str, np.random.Generator]],
                    probability: float) -> Lighting:
    """Lighting with coloured sources: a key of a colour temperature (2000-9000 K), a
    fill of another temperature or (now and then) a saturated colour, and a tinted
    ambient; strengths are kept. ``rngs``: one mapping of element generators per image."""
    amb = lighting.ambient.clone()
    cols = lighting.colors.clone()
    for b, r in enumerate(rngs):
        rc = r["colour_light"]
        if not rc.random() < probability:
            continue
        key = torch.as_tensor(colour_temperature(rc.uniform(2000, 9000)), dtype=cols.dtype)
        cols[b, 0] = cols[b, 0].mean() * key
        if cols.shape[1] > 1:
            fill = _hue(rc, rc.uniform(0.4, 0.9)) if rc.random() < 0.3 else colour_temperature(rc.uniform(2500, 9000))
            cols[b, 1:] = cols[b, 1:].mean(-1, keepdim=True) * torch.as_tensor(fill, dtype=cols.dtype)
        amb[b] = amb[b].mean() * torch.as_tensor(_hue(rc, rc.uniform(0.0, 0.35)), dtype=amb.dtype)
    return Lighting(amb, lighting.directions, cols, lighting.specular, lighting.shininess)


@dataclass
class CaptureContext:
    """What `finish_capture` knows of a capture besides its pixels.

    anchors: the head's `Anchors` (None: no occluders, sizes from the image).
    colours: ``{"skin": (3,), "hair": (3,)}`` sRGB of the subject (for hands and strands).
    light_dir: (3,) key light direction in OpenGL camera space (None: no shadows).
    frame_from_image: (2, 3) image px -> frame px (None: the image is the frame).
    frame_size: (W, H) of the frame; principal_point (cx, cy) in it.
    """

    anchors: Anchors | None = None
    colours: dict | None = None
    light_dir: np.ndarray | None = None
    frame_from_image: np.ndarray | None = None
    frame_size: tuple[int, int] = (800, 800)
    principal_point: tuple[float, float] | None = None

    def face_px(self, shape: tuple[int, int]) -> float:
        """The face's size in image pixels (sqrt of its landmark box's area)."""
        if self.anchors is None:
            return 0.4 * max(shape)
        uv, _ = self.anchors.project(self.anchors.lm)
        w, h = uv.max(0) - uv.min(0)
        return float(max(np.sqrt(max(w, 1.0) * max(h, 1.0)), 8.0))


def _light_offset(light_dir: np.ndarray) -> np.ndarray:
    """Unit image direction (dx, dy) in which shadows fall (away from the light)."""
    d = np.array([-light_dir[0], light_dir[1]], np.float64)  # OpenGL y up -> image y down
    n = np.linalg.norm(d)
    return d / n if n > 1e-6 else np.array([0.0, 1.0])


def cast_shadow(image: np.ndarray, occluder: np.ndarray, offset: np.ndarray, blur: float, strength: float,
                receiver: np.ndarray | None = None) -> np.ndarray:
    """Darken ``image`` (H, W, 3) by the soft shadow of ``occluder`` (H, W) float coverage
    moved by ``offset`` (dx, dy) pixels and blurred by ``blur`` px; only where
    ``receiver`` (H, W) float weights are (default everywhere). Returns float32."""
    A = np.array([[1.0, 0.0, offset[0]], [0.0, 1.0, offset[1]]])
    h, w = occluder.shape
    s = cv2.warpAffine(occluder.astype(np.float32), A, (w, h), flags=cv2.INTER_LINEAR)
    if blur > 0.3:
        s = cv2.GaussianBlur(s, (0, 0), blur)
    s *= np.float32(strength)
    if receiver is not None:
        s *= receiver
    return image.astype(np.float32) * (1 - s[..., None])


def _spill(fg: np.ndarray, mask: np.ndarray, bg: np.ndarray, rng: np.random.Generator, face_px: float) -> np.ndarray:
    """The head (H, W, 3) float [0, 1] lit a little by its surroundings: a global tint
    towards the background's mean colour and light wrapping round the silhouette."""
    bgf = bg.astype(np.float32) / 255.0
    mean = bgf.reshape(-1, 3).mean(0)
    tint = np.clip(mean / max(float(mean.mean()), 1e-3), 0.6, 1.5)
    k = np.float32(rng.uniform(0.05, 0.25))
    out = fg * ((1 - k) + k * tint.astype(np.float32))
    sigma = max(0.04 * face_px, 1.0)
    wrap = cv2.GaussianBlur(1.0 - mask.astype(np.float32), (0, 0), sigma) * mask
    wrap *= np.float32(rng.uniform(0.2, 0.6))
    glow = cv2.GaussianBlur(bgf, (0, 0), sigma)
    return out * (1 - wrap[..., None]) + glow * wrap[..., None]


def finish_capture(image: np.ndarray, mask: np.ndarray, depth: np.ndarray, rngs: Mapping[str, np.random.Generator],
                   config: WorldConfig, ctx: CaptureContext, photos=None, jpeg: bool = True) -> np.ndarray:
    """One rendered head -> the final uint8 (H, W, 3) RGB picture (see the module docstring).

    image: (H, W, 3) float [0, 1] head render; mask: (H, W) bool; depth: (H, W) OpenCV
    depth (0 off the head); rngs: one generator per element; photos: a
    `jmlr.synth.backgrounds.PhotoBackgrounds` or None.
    """
    H, W = mask.shape
    face_px = ctx.face_px((H, W))
    # 1. background
    rb = rngs["photo_background"]
    if rb.random() < config.photo_background and photos is not None:
        bg = photos.sample(rb, H, W)
    else:
        bg = sample_background(rb, H, W)
    rd = rngs["background_defocus"]
    if rd.random() < config.background_defocus:
        bg = cv2.filter2D(bg, -1, disc_kernel(rd.uniform(0.01, 0.08) * face_px))
    # 2. the head's shadow on the background
    rs = rngs["shadow"]
    shadows = rs.random() < config.shadow and ctx.light_dir is not None
    if shadows:
        off = _light_offset(ctx.light_dir) * rs.uniform(0.05, 0.35) * face_px
        bg = cast_shadow(bg, mask, off, rs.uniform(0.04, 0.15) * face_px, rs.uniform(0.25, 0.6))
        bg = np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    # 3. spill of the surroundings' colour on the head
    fg = image
    rc = rngs["colour_light"]
    if rc.random() < config.colour_light:
        fg = _spill(np.asarray(image, np.float32), mask, bg, rc, face_px)
    # 4. the head
    out = composite(fg, mask, bg)
    # 5. occluders and their shadows on the face
    if ctx.anchors is not None and any(p > 0 for p in config.occluders.values()):
        prims = build_occluders(ctx.anchors, rngs, config.occluders, ctx.colours or {})
        if prims:
            colour, alpha, shadow = draw_primitives(prims, ctx.anchors, depth, ctx.light_dir)
            img = out.astype(np.float32)
            if shadows and shadow.any():
                gap = rs.uniform(0.01, 0.03) * face_px / 0.15  # a part 1-3 cm off the skin, face ~15 cm
                img = cast_shadow(img, shadow, _light_offset(ctx.light_dir) * gap, 0.02 * face_px,
                                  rs.uniform(0.3, 0.6), receiver=mask.astype(np.float32) * (1 - alpha))
            out = np.clip(img * (1 - alpha[..., None]) + colour * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # 6. the camera, metering the face where it is known
    face_points = ctx.anchors.project(ctx.anchors.lm)[0] if ctx.anchors is not None else None
    return apply_phone_effects(out, rngs, config, scale=face_px / 100.0, jpeg=jpeg,
                               frame_from_image=ctx.frame_from_image, frame_size=ctx.frame_size,
                               principal_point=ctx.principal_point, face_points=face_points)

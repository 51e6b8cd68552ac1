"""Which realism elements a synthetic person gets, and how each is drawn.

`HeadConfig` holds one probability per element (scalp hair, eyebrows, eyelashes, facial
hair, eye detail, skin detail, make-up, specular variation, clothing); all zero
(`HeadConfig.legacy`) gives the earlier generator's heads byte for byte, so an A/B of
old against new data is one flag (``$JMLR_SYNTH_HEADS=legacy`` or
``SyntheticFaceGenerator(heads=HeadConfig.legacy())``).

`sample_head_style` draws a subject's `HeadStyle` from a generator of its own, derived
from the subject's generator without advancing it: switching an element on or off never
changes identity, expression, pose, lighting or background, so the ground truth of a
seed is the same whatever the config. Each element also draws from its own stream, so
switching one element leaves the others as they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from jmlr.facemodel.topology import boundary_loops

from . import clothing, face_detail, hair
from .clothing import TorsoAssets
from .elements import ElementProbabilities
from .face_detail import DetailRegions, detail_specular
from .hair import HairAssets, HairMesh

__all__ = ["HeadConfig", "HeadStyle", "HEADS_ENV", "sample_head_style", "style_rng"]

HEADS_ENV = "JMLR_SYNTH_HEADS"


@dataclass(frozen=True)
class HeadConfig(ElementProbabilities):
    """Probability that a subject gets each element (0 switches it off).

    hair: scalp hair geometry (shell and strand ribbons, `jmlr.synth.hair`); the rest
    of the subjects are bald or have a buzz cut. eyebrows: per-subject brow shape and
    density. eyelashes: lash lines on the lid margins. facial_hair: beard, moustache,
    goatee or stubble, for masculine-looking subjects. eyes: iris pattern, corneal
    highlight, reddened sclera corners. skin_detail: Fitzpatrick I-VI tones with
    undertones, pores, freckles, moles and blemishes. makeup: lipstick, eyeliner,
    eyeshadow, blush (mostly for feminine-looking subjects). specular_variation: oily
    T-zone, matte cheeks, per-subject gloss. clothing: neck, shoulders and a torso with
    a neckline and a patterned garment (`jmlr.synth.clothing`).
    """

    hair: float = 0.85
    eyebrows: float = 1.0
    eyelashes: float = 1.0
    facial_hair: float = 0.5
    eyes: float = 1.0
    skin_detail: float = 1.0
    makeup: float = 0.4
    specular_variation: float = 1.0
    clothing: float = 1.0

    element_kind = "head"
    env_var = HEADS_ENV


# Element order fixes which stream each element draws from: append, never reorder.
_ELEMENTS = (
    "masculine",
    "hair",
    "eyebrows",
    "eyelashes",
    "facial_hair",
    "eyes",
    "skin_detail",
    "makeup",
    "specular_variation",
    "clothing",
)


@dataclass
class HeadStyle:
    """One subject's elements; ``None`` where the element is off for this subject.

    masculine: the look the draws lean to (facial hair, make-up, hair length).
    legacy_stubble: whether the earlier generator's stubble may still be painted (only
    when the facial-hair element is off in the config). hair_color: (3,) sRGB, the
    subject's natural hair colour (scalp, brows, beard).
    Each other field is the parameter object of its module (`jmlr.synth.hair.HairStyle`,
    `jmlr.synth.face_detail.*`, `jmlr.synth.clothing.ClothingStyle`).
    """

    masculine: bool
    legacy_stubble: bool = True
    hair_color: np.ndarray | None = None
    hair: object | None = None
    eyebrows: object | None = None
    eyelashes: object | None = None
    facial_hair: object | None = None
    eyes: object | None = None
    skin_detail: object | None = None
    makeup: object | None = None
    specular_variation: object | None = None
    clothing: object | None = None

    @property
    def has_geometry(self) -> bool:
        return self.hair is not None or self.clothing is not None


def style_rng(rng: np.random.Generator) -> np.random.Generator:
    """A generator derived from ``rng`` without advancing it (``rng`` is left as it was)."""
    bg = rng.bit_generator
    if hasattr(bg, "jumped"):
        return np.random.Generator(bg.jumped())
    state = json.dumps(bg.state, sort_keys=True, default=str)  # a bit generator without jumps
    return np.random.default_rng(np.frombuffer(state.encode(), np.uint8).astype(np.uint32))


def sample_head_style(rng: np.random.Generator, config: HeadConfig, skin: np.ndarray) -> HeadStyle:
    """Draw a subject's `HeadStyle` from ``rng`` (use `style_rng` of the subject's generator).

    ``skin`` (3,) sRGB is the subject's legacy skin colour. Every element draws from its own
    stream whether it is on or not.
    """
    seeds = rng.integers(0, 1 << 63, len(_ELEMENTS))
    r = {name: np.random.default_rng(int(s)) for name, s in zip(_ELEMENTS, seeds)}
    masculine = bool(r["masculine"].random() < 0.5)
    # The look's stream also gives the hair colour that scalp, brows and beard share (the
    # legacy colour's per-channel jitter made greys green or violet).
    hair_color = hair.sample_hair_color(r["masculine"])
    style = HeadStyle(masculine=masculine, legacy_stubble=config.facial_hair == 0, hair_color=hair_color)

    def on(name: str, p: float) -> bool:
        return bool(r[name].random() < p)  # always drawn, so that p does not shift the element's draws

    # Make-up and facial hair lean on the look; their probabilities are scaled, not replaced.
    if on("hair", config.hair):
        style.hair = hair.sample_hair_style(r["hair"], masculine, hair_color)
    if on("eyebrows", config.eyebrows):
        style.eyebrows = face_detail.sample_brows(r["eyebrows"], hair_color)
    if on("eyelashes", config.eyelashes):
        style.eyelashes = face_detail.sample_lashes(r["eyelashes"], masculine)
    if on("facial_hair", config.facial_hair * (1.0 if masculine else 0.0)):
        style.facial_hair = face_detail.sample_facial_hair(r["facial_hair"], hair_color)
    if on("eyes", config.eyes):
        style.eyes = face_detail.sample_eyes(r["eyes"])
    if on("skin_detail", config.skin_detail):
        style.skin_detail = face_detail.sample_skin(r["skin_detail"], skin)
    if on("makeup", config.makeup * (0.15 if masculine else 1.0)):
        style.makeup = face_detail.sample_makeup(r["makeup"])
    if on("specular_variation", config.specular_variation):
        style.specular_variation = face_detail.sample_specular(r["specular_variation"])
    if on("clothing", config.clothing):
        style.clothing = clothing.sample_clothing(r["clothing"], masculine)
    return style


@dataclass
class SubjectMesh:
    """What a subject adds to the head mesh, in the generator's vertex layout.

    albedo (V + X, 3), specular (V + X,), occlusion (V + X,): per-vertex shading inputs
    of the head and the X extra vertices; rest (X, 3) float32 neutral-frame positions and
    anchor (X,) head vertex of each extra vertex (an extra vertex sits at
    ``rest + head[anchor] - neutral[anchor]``); gloss multiplies the image's shininess.
    """

    albedo: np.ndarray
    specular: np.ndarray
    occlusion: np.ndarray
    rest: np.ndarray
    anchor: np.ndarray
    gloss: float = 1.0


class HeadAssets:
    """Per-face-model data of the head elements, made once by the generator.

    Holds the detail masks (`jmlr.synth.face_detail.DetailRegions`), and for the elements
    with geometry the hair (`jmlr.synth.hair.HairAssets`) and torso
    (`jmlr.synth.clothing.TorsoAssets`) topologies. Extra vertices follow the head's:
    hair block, then torso block, present when the config can draw them. ``faces`` (F, 3)
    are the extra triangles in that layout (indices >= V, or head vertices for the torso's
    top ring).
    """

    def __init__(self, facemodel, regions, config: HeadConfig, skin_triangles: np.ndarray):
        self.config = config
        self.neutral = np.asarray(facemodel.neutral, np.float32)
        V = len(self.neutral)
        self.num_head = V
        self.detail = DetailRegions.from_facemodel(facemodel, regions)
        self.hair = (
            HairAssets(self.neutral, skin_triangles, regions, np.asarray(facemodel.landmarks68))
            if config.hair > 0
            else None
        )
        self.torso = None
        if config.clothing > 0:
            cut = _neck_cut(facemodel, skin_triangles)
            if cut is not None:
                self.torso = TorsoAssets(self.neutral, cut)
        faces, offset = [], V
        if self.hair is not None:
            faces.append(self.hair.faces + offset)
            self.hair_range = (offset, offset + self.hair.num_vertices)
            offset += self.hair.num_vertices
        if self.torso is not None:
            f = self.torso.faces
            faces.append(np.where(f >= V, f - V + offset, f))
            self.torso_range = (offset, offset + self.torso.num_vertices)
            offset += self.torso.num_vertices
        self.num_extra = offset - V
        self.faces = np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)

    def subject_mesh(
        self, style: HeadStyle, albedo: np.ndarray, specular: np.ndarray, occlusion: np.ndarray, skin: np.ndarray,
        hair: HairMesh | None = None,
    ) -> SubjectMesh:
        """Extend a subject's head albedo (V, 3), specular and occlusion (V,) with its hair
        and torso (collapsed where the subject has none). ``hair``: the style's hair if
        already built (`HairAssets.build_many`), else it is built here."""
        spec = detail_specular(specular, self.detail, style)
        parts = [(albedo, spec, occlusion, np.zeros((0, 3), np.float32), np.zeros(0, np.int64))]
        if self.hair is not None:
            if style.hair is not None:
                rest, anchor, a, s, o = hair if hair is not None else self.hair.build(style.hair)
            else:
                n = self.hair.num_vertices
                rest, anchor = np.zeros((n, 3), np.float32), np.zeros(n, np.int64)
                a, s, o = np.zeros((n, 3), np.float32), np.ones(n, np.float32), np.ones(n, np.float32)
            parts.append((a, s, o, rest, anchor))
        if self.torso is not None:
            if style.clothing is not None:
                rest, anchor, a, s, o = self.torso.build(style.clothing, skin)
            else:  # every ring on the cut: the torso's triangles have no area
                n = self.torso.num_vertices
                anchor = np.resize(self.torso.cut, n).astype(np.int64)
                rest = self.neutral[anchor]
                a, s, o = np.zeros((n, 3), np.float32), np.ones(n, np.float32), np.ones(n, np.float32)
            parts.append((a, s, o, rest, anchor))
        cat = lambda k, dt: np.ascontiguousarray(np.concatenate([p[k] for p in parts]), dt)  # noqa: E731
        gloss = style.specular_variation.gloss if style.specular_variation is not None else 1.0
        return SubjectMesh(
            cat(0, np.float32),
            cat(1, np.float32),
            cat(2, np.float32),
            cat(3, np.float32),
            cat(4, np.int64),
            float(gloss),
        )


def _neck_cut(facemodel, skin_triangles: np.ndarray) -> np.ndarray | None:
    """Vertex indices of the skin's open boundary at the neck (the lowest loop), or None."""
    loops = boundary_loops(skin_triangles)
    if not loops:
        return None
    v = np.asarray(facemodel.neutral)
    return np.asarray(min(loops, key=lambda loop: v[loop, 1].mean()))

"""Which world and camera elements a synthetic capture gets (issue 10, items 2 and 3).

`WorldConfig` holds one probability per element: photographic backgrounds, coloured
environment light, cast shadows, occluders (glasses, hats, headphones, masks, hands,
phones, microphones, hair strands), other people in the full frame, phone cameras (focal
length and distance), and the phone camera's image effects. All zero
(`WorldConfig.legacy`) gives the earlier generator's backgrounds, light and effects byte
for byte, so an A/B of old against new data is one flag (``$JMLR_SYNTH_WORLD=legacy`` or
``SyntheticFaceGenerator(world=WorldConfig.legacy())``).

Every element draws from a stream of its own (`element_rngs`), derived from the
capture's generator without advancing it: switching an element on or off never changes
identity, expression, pose or the other elements, and never the ground truth (only
``camera``, which draws the intrinsics and the distance, changes targets: K and R_t).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .elements import ElementProbabilities

__all__ = ["WorldConfig", "WORLD_ENV", "WORLD_ELEMENTS", "ElementRngs", "element_rngs", "derived_rng"]

WORLD_ENV = "JMLR_SYNTH_WORLD"


@dataclass(frozen=True)
class WorldConfig(ElementProbabilities):
    """Probability of each element per capture (0 switches it off).

    photo_background: a crop of a real photograph (`jmlr.synth.backgrounds`) instead of
    a procedural background. background_defocus: the background blurred as by a lens
    focused on the face. colour_light: coloured key/fill lights (colour temperature,
    tinted or saturated sources) and spill of the background's colour onto the head's
    edges. shadow: a soft cast shadow of the head on the background and of occluders on
    the face. glasses ... hair_strands: occluders (`jmlr.synth.occluders`), each drawn
    independently. bystanders: other people in the full frame (`SyntheticFaceGenerator.finish`
    of full frames only; crops skip it). camera: a phone camera, 13-80 mm equivalent at
    0.2-2 m (`jmlr.synth.camera.PhoneCameraModel`), else the WCPA camera and distances.
    noise ... jpeg: the phone camera's image pipeline (`jmlr.synth.camera.apply_phone_effects`):
    signal-dependent sensor noise, lens defocus, motion blur, exposure error, white
    balance error, vignetting, JPEG at a quality drawn from what phones and apps use.
    auto_exposure: the camera exposes the face to mid-grey (face-priority metering,
    `jmlr.synth.camera.auto_exposure_gain`) before its exposure error.
    """

    photo_background: float = 0.8
    background_defocus: float = 0.5
    colour_light: float = 0.7
    shadow: float = 0.7
    glasses: float = 0.2
    hat: float = 0.1
    headphones: float = 0.06
    mask: float = 0.06
    hand: float = 0.08
    phone: float = 0.04
    microphone: float = 0.04
    hair_strands: float = 0.15
    bystanders: float = 0.3
    camera: float = 0.8
    noise: float = 0.85
    defocus: float = 0.25
    motion_blur: float = 0.12
    exposure: float = 0.7
    white_balance: float = 0.7
    vignetting: float = 0.5
    jpeg: float = 1.0
    auto_exposure: float = 1.0

    element_kind = "world"
    env_var = WORLD_ENV

    def without_camera_effects(self) -> WorldConfig:
        """This config with the camera's image effects (noise ... jpeg) off."""
        return dataclasses.replace(self, **dict.fromkeys(CAMERA_EFFECTS, 0.0))

    @property
    def occluders(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in OCCLUDERS}

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


CAMERA_EFFECTS = ("noise", "defocus", "motion_blur", "exposure", "white_balance", "vignetting", "jpeg",
                  "auto_exposure")
OCCLUDERS = ("glasses", "hat", "headphones", "mask", "hand", "phone", "microphone", "hair_strands")

# Element order fixes which stream each element draws from: append, never reorder.
WORLD_ELEMENTS = (
    "photo_background",
    "background_defocus",
    "colour_light",
    "shadow",
    *OCCLUDERS,
    "bystanders",
    "camera",
    "noise",
    "defocus",
    "motion_blur",
    "exposure",
    "white_balance",
    "vignetting",
    "jpeg",
    "layout",
    "auto_exposure",
)


def derived_rng(rng: np.random.Generator) -> np.random.Generator:
    """A generator derived from ``rng`` without advancing it (``rng`` is left as it was)."""
    return np.random.Generator(rng.bit_generator.jumped())


class ElementRngs(Mapping[str, np.random.Generator]):
    """One generator per `WORLD_ELEMENTS` name, each made from its seed when first asked
    for: a step reads a few of the 23 names, and making a generator costs tens of
    microseconds."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self._seeds = dict(zip(WORLD_ELEMENTS, (int(s) for s in seeds), strict=True))
        self._made: dict[str, np.random.Generator] = {}

    def __getitem__(self, name: str) -> np.random.Generator:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = np.random.default_rng(self._seeds[name])
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._seeds)

    def __len__(self) -> int:
        return len(self._seeds)


def element_rngs(rng: np.random.Generator, count: int) -> list[ElementRngs]:
    """``count`` mappings of one generator per `WORLD_ELEMENTS` name, derived from ``rng``
    without advancing it (one per image of a batch that shares ``rng``)."""
    seeds = derived_rng(rng).integers(0, 1 << 63, (count, len(WORLD_ELEMENTS)))
    return [ElementRngs(row) for row in seeds]

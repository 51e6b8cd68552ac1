"""The phone camera's face-priority auto exposure (jmlr.synth.camera)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jmlr.synth.camera import AE_GAIN_RANGE, AE_TARGET, apply_phone_effects, auto_exposure_gain
from jmlr.synth.world import CAMERA_EFFECTS, WORLD_ELEMENTS, WorldConfig, element_rngs

FACE = np.array([[40.0, 40.0], [120.0, 40.0], [120.0, 120.0], [40.0, 120.0]])  # a square "face", image px


def _level_for(linear: float) -> float:
    return 255.0 * linear ** (1 / 2.2)


def _face_on_background(face_level: int, background_level: int, size: int = 160) -> np.ndarray:
    img = np.full((size, size, 3), background_level, np.uint8)
    img[40:121, 40:121] = face_level
    return img


def _only(**probabilities: float) -> WorldConfig:
    return dataclasses.replace(WorldConfig.legacy(), **probabilities)


def test_a_grey_image_is_exposed_to_the_target():
    level = 60
    gain = auto_exposure_gain(np.full((50, 70, 3), level, np.uint8), None, 0.0)
    assert gain == pytest.approx(AE_TARGET / (level / 255.0) ** 2.2, rel=1e-4)


def test_the_meter_reads_luma_green_most_blue_least():
    lin = (200 / 255.0) ** 2.2
    for channel, weight in ((0, 0.2126), (1, 0.7152), (2, 0.0722)):
        img = np.zeros((40, 40, 3), np.uint8)
        img[..., channel] = 200
        assert auto_exposure_gain(img, None, 0.0, gain_range=(0.0, 1e9)) == pytest.approx(
            AE_TARGET / (weight * lin), rel=1e-4)


def test_the_face_is_metered_not_the_background():
    img = _face_on_background(40, 230)
    on_face, on_frame = auto_exposure_gain(img, FACE, 1.0), auto_exposure_gain(img, FACE, 0.0)
    assert on_face > 1.0 > on_frame  # a dark face before a bright wall: face metering brightens it
    blended = auto_exposure_gain(img, FACE, 0.5)
    assert on_frame < blended < on_face
    # a hull outside the image falls back to the whole image
    assert auto_exposure_gain(img, FACE + 1000.0, 1.0) == pytest.approx(on_frame)


def test_the_gain_stays_within_what_a_camera_can_do():
    assert auto_exposure_gain(np.zeros((32, 32, 3), np.uint8), None, 0.0) == AE_GAIN_RANGE[1]
    assert auto_exposure_gain(np.full((32, 32, 3), 255, np.uint8), None, 0.0) == pytest.approx(AE_TARGET)
    assert AE_GAIN_RANGE[0] <= AE_TARGET


@pytest.mark.parametrize("face_level", [60, 90, 200])
def test_faces_come_out_near_mid_grey_whatever_their_light(face_level):
    img = _face_on_background(face_level, face_level)
    out = apply_phone_effects(img, element_rngs(np.random.default_rng(3), 1)[0], _only(auto_exposure=1.0),
                              face_points=FACE)
    assert abs(float(np.median(out[40:121, 40:121])) - _level_for(AE_TARGET)) < 3


def test_face_metering_brightens_a_dark_face_before_a_bright_background():
    img = _face_on_background(40, 230)
    out = apply_phone_effects(img, element_rngs(np.random.default_rng(0), 1)[0], _only(auto_exposure=1.0),
                              face_points=FACE)
    assert np.median(out[40:121, 40:121]) > 50  # face weight >= 0.6 of the meter
    frame_metered = apply_phone_effects(img, element_rngs(np.random.default_rng(0), 1)[0],
                                        _only(auto_exposure=1.0))
    assert np.median(frame_metered[40:121, 40:121]) < 40


def test_off_changes_nothing_and_is_a_camera_effect():
    img = _face_on_background(40, 230)
    rngs = element_rngs(np.random.default_rng(0), 1)[0]
    assert np.array_equal(apply_phone_effects(img, rngs, WorldConfig.legacy(), face_points=FACE), img)
    assert WorldConfig.legacy().auto_exposure == 0.0 and WorldConfig().auto_exposure == 1.0
    assert WorldConfig().without_camera_effects().auto_exposure == 0.0
    assert "auto_exposure" in CAMERA_EFFECTS


def test_the_new_element_leaves_the_older_streams_alone():
    # Streams are assigned by position: a new element goes last, so every element drawn
    # before it keeps its generator (renders of the old elements do not change).
    assert WORLD_ELEMENTS[-1] == "auto_exposure"
    assert WORLD_ELEMENTS.index("layout") == len(WORLD_ELEMENTS) - 2


def test_element_generators_are_made_when_asked_for_and_draw_their_own_streams():
    rng = np.random.default_rng(9)
    state = rng.bit_generator.state
    first, second = element_rngs(rng, 2)
    assert rng.bit_generator.state == state  # drawn without advancing rng
    assert list(first) == list(WORLD_ELEMENTS) and len(second) == len(WORLD_ELEMENTS)
    # Each name's stream is the one its seed gives, whenever it is first asked for, and
    # asking again continues that stream (one generator per name, not one per lookup).
    again = element_rngs(rng, 2)[0]
    a = first["jpeg"].random(3)
    np.testing.assert_array_equal(first["jpeg"].random(2), again["jpeg"].random(5)[3:])
    np.testing.assert_array_equal(a, element_rngs(rng, 1)[0]["jpeg"].random(3))
    assert not np.allclose(a, first["noise"].random(3)) and not np.allclose(a, second["jpeg"].random(3))
    with pytest.raises(KeyError):
        first["wings"]

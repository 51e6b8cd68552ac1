"""The stored mesh's texture (`service.texture`): a crop of the photo and UVs that find
each projected point in it, from a full or a reduced decode alike."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from service.texture import TEXTURE_SIZE, face_textures, texture_uv

skimage_data = pytest.importorskip("skimage.data")
LM5 = np.array([[203.3, 101.3], [247.2, 104.5], [223.1, 125.0], [203.4, 142.4], [241.0, 144.9]])


def _decode(tex) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(tex.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_uv_finds_the_photo_pixel_in_the_texture():
    photo = skimage_data.astronaut()
    (tex,) = face_textures(photo, [LM5])
    rgb = _decode(tex)
    assert rgb.shape == (TEXTURE_SIZE, TEXTURE_SIZE, 3)
    rng = np.random.default_rng(0)
    points = rng.uniform([185, 80], [265, 170], size=(300, 2))  # around the face
    uv = texture_uv(points, tex)
    assert ((uv > 0) & (uv < 1)).all()
    # Smooth the photo a little: a texel and a photo pixel differ by sub-pixel placement and JPEG.
    blurred = cv2.GaussianBlur(photo, (5, 5), 1.5).astype(float)
    at_xy = blurred[points[:, 1].astype(int), points[:, 0].astype(int)]
    at_uv = cv2.GaussianBlur(rgb, (9, 9), 3).astype(float)[(uv[:, 1] * TEXTURE_SIZE).astype(int),
                                                           (uv[:, 0] * TEXTURE_SIZE).astype(int)]
    assert np.abs(at_uv - at_xy).mean() < 8
    # A point off the crop is clamped to its border, not wrapped around.
    assert texture_uv(np.array([[-5000.0, 9000.0]]), tex).tolist() == [[0.0, 1.0]]


def test_a_reduced_decode_gives_the_same_texture_region():
    photo = skimage_data.astronaut()
    (full,) = face_textures(photo, [LM5])
    (half,) = face_textures(cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA), [LM5], reduction=2)
    np.testing.assert_allclose(half.M, full.M)  # frame px -> texture px either way
    assert np.abs(_decode(half).astype(float) - _decode(full)).mean() < 12

"""bench/crop_resolution.py: crops made as the packs make them, same transforms."""

from __future__ import annotations

import cv2
import numpy as np

from bench.crop_resolution import soft_crop_faces
from jmlr.inference.crops import crop_faces

LM5 = np.array([[[380.0, 380.0], [440.0, 380.0], [410.0, 420.0], [385.0, 450.0], [435.0, 450.0]]])


def _frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (800, 800, 3), dtype=np.uint8)  # fine detail everywhere


def test_ratio_one_is_the_evaluations_own_crop():
    image = _frame()
    ours, theirs = soft_crop_faces(1.0)(image, LM5, 128), crop_faces(image, LM5, 128)
    np.testing.assert_allclose(ours.Ms, theirs.Ms)
    assert np.abs(ours.crops.astype(int) - theirs.crops).max() <= 1  # one more bilinear pass, at identity


def test_a_smaller_ratio_keeps_the_transform_and_softens_the_crop():
    image = _frame()
    soft, sharp = soft_crop_faces(0.5)(image, LM5, 128), crop_faces(image, LM5, 128)
    np.testing.assert_allclose(soft.Ms, sharp.Ms)
    assert soft.crops.shape == sharp.crops.shape
    # The same picture, with less fine detail: close in the mean, far less high-frequency energy.
    blur = lambda c: cv2.GaussianBlur(c, (0, 0), 1.5).astype(float)  # noqa: E731
    assert np.abs(blur(soft.crops[0]) - blur(sharp.crops[0])).mean() < 12
    laplacian = lambda c: np.abs(cv2.Laplacian(c.astype(np.float32), cv2.CV_32F)).mean()  # noqa: E731
    assert laplacian(soft.crops[0]) < 0.6 * laplacian(sharp.crops[0])

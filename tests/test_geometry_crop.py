"""The JMLR crop: template, Umeyama similarity, warp, inverse."""

import cv2
import numpy as np
import pytest
import torch

from jmlr.geometry import crop
from jmlr.geometry.torch_ops import apply_affine_torch, invert_affine_torch


def similarity(scale, angle_deg, tx, ty):
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def test_template_values():
    t = crop.jmlr_template(144)
    np.testing.assert_allclose(t, crop.ARCFACE_TEMPLATE_112 + [16, 8])
    np.testing.assert_allclose(crop.jmlr_template(256), (crop.ARCFACE_TEMPLATE_112 + [16, 8]) * 256 / 144)
    # eye on the image's left comes first, mouth below the nose
    assert t[0, 0] < t[1, 0] and t[3, 1] > t[2, 1]


def test_crop_of_template_is_identity_and_lands_on_template():
    for size in (144, 256, 224):
        M = crop.crop_transform(crop.jmlr_template(size), size)
        np.testing.assert_allclose(M, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    # the template scaled/rotated/shifted in an image maps back onto the template
    M_true = similarity(2.7, 25.0, 310.0, 120.0)
    lm = crop.apply_affine(M_true, crop.jmlr_template(256))
    M = crop.crop_transform(lm, 256)
    np.testing.assert_allclose(crop.apply_affine(M, lm), crop.jmlr_template(256), atol=1e-9)
    np.testing.assert_allclose(M, crop.invert_affine(M_true), atol=1e-9)


def test_estimate_similarity_matches_skimage_least_squares():
    skt = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 800, size=(5, 2))
    dst = crop.apply_affine(similarity(0.4, -70, 20, 30), src) + rng.normal(scale=3.0, size=(5, 2))
    if hasattr(skt.SimilarityTransform, "from_estimate"):  # skimage >= 0.26
        ref = skt.SimilarityTransform.from_estimate(src, dst)
    else:
        ref = skt.SimilarityTransform()
        ref.estimate(src, dst)
    np.testing.assert_allclose(crop.estimate_similarity(src, dst), ref.params[:2], atol=1e-9)
    # batched over leading dims
    Ms = crop.estimate_similarity(np.stack([src, dst]), np.stack([dst, src]))
    np.testing.assert_allclose(Ms[0], ref.params[:2], atol=1e-9)


def test_estimate_similarity_never_reflects():
    src = crop.jmlr_template(256)
    mirrored = src * [-1, 1]
    M = crop.estimate_similarity(src, mirrored)
    assert np.linalg.det(M[:, :2]) > 0


def test_crop_uncrop_roundtrip_and_warp():
    rng = np.random.default_rng(1)
    M_true = similarity(0.5, 10.0, -40.0, 20.0)  # crop px = M @ image px
    M = crop.crop_transform(crop.apply_affine(crop.invert_affine(M_true), crop.jmlr_template(256)))
    np.testing.assert_allclose(M, M_true, atol=1e-9)
    pts = rng.uniform(0, 800, size=(3, 100, 2))
    back = crop.apply_affine(crop.invert_affine(M), crop.apply_affine(M, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    np.testing.assert_allclose(crop.compose_affine(crop.invert_affine(M), M), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(crop.invert_affine(M), cv2.invertAffineTransform(M), atol=1e-12)
    assert crop.similarity_scale(M) == pytest.approx(0.5)
    # a bright pixel at an image point shows up at M(point) in the warped crop
    img = np.zeros((600, 800, 3), np.uint8)
    p = np.array([500.0, 300.0])
    ys, xs = np.mgrid[:600, :800]
    img[..., 1] = (255 * np.exp(-((xs - p[0]) ** 2 + (ys - p[1]) ** 2) / (2 * 12.0**2))).astype(np.uint8)
    out = crop.warp_crop(img, M, 256)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    g = out[..., 1].astype(np.float64)
    cy, cx = np.mgrid[:256, :256]
    centroid = np.array([(g * cx).sum(), (g * cy).sum()]) / g.sum()
    np.testing.assert_allclose(centroid, crop.apply_affine(M, p[None])[0], atol=0.1)


def test_landmarks5_from_68():
    lm = np.arange(68 * 2, dtype=np.float64).reshape(68, 2)
    five = crop.landmarks5_from_68(np.stack([lm, lm + 1]))
    assert five.shape == (2, 5, 2)
    np.testing.assert_allclose(five[0, 0], (lm[36] + lm[39]) / 2)
    np.testing.assert_allclose(five[0, 1], (lm[42] + lm[45]) / 2)
    np.testing.assert_allclose(five[0, 2:], lm[[30, 48, 54]])
    np.testing.assert_allclose(five[1], five[0] + 1)


def test_torch_affine_matches_numpy():
    rng = np.random.default_rng(2)
    M = np.stack([similarity(1.3, 40, 5, 6), similarity(0.2, -5, 1, 2)])
    pts = rng.normal(size=(2, 9, 2))
    out = apply_affine_torch(torch.tensor(M), torch.tensor(pts)).numpy()
    np.testing.assert_allclose(out, crop.apply_affine(M, pts), atol=1e-12)
    np.testing.assert_allclose(invert_affine_torch(torch.tensor(M)).numpy(), crop.invert_affine(M), atol=1e-12)


def test_jitter_similarity_is_a_bounded_similarity_about_the_centre():
    rng = np.random.default_rng(7)
    J = crop.jitter_similarity(rng, 200, 256, 0.1, 10.0, 0.05)
    assert J.shape == (200, 2, 3)
    scale = crop.similarity_scale(J)
    assert np.all(np.abs(scale - 1) <= 0.1 + 1e-12) and np.ptp(scale) > 0.1
    angle = np.degrees(np.arctan2(J[:, 1, 0], J[:, 0, 0]))
    assert np.all(np.abs(angle) <= 10 + 1e-9) and np.ptp(angle) > 10
    np.testing.assert_allclose(J[:, 0, 0], J[:, 1, 1])  # rotation + uniform scale, no shear
    np.testing.assert_allclose(J[:, 0, 1], -J[:, 1, 0])
    c = np.array([127.5, 127.5])
    moved = crop.apply_affine(J, np.broadcast_to(c, (200, 1, 2)))[:, 0] - c
    assert np.all(np.abs(moved) <= 0.05 * 256 + 1e-9)  # the centre moves by the shift only
    none = crop.jitter_similarity(np.random.default_rng(0), 3, 64, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(none, np.broadcast_to(np.eye(2, 3), (3, 2, 3)), atol=1e-12)
    # the same draws batched or one at a time
    a = crop.jitter_similarity(np.random.default_rng(1), 1, 64, 0.05, 5.0, 0.03)
    b = crop.jitter_similarity(np.random.default_rng(1), 4, 64, 0.05, 5.0, 0.03)
    assert a.shape == (1, 2, 3) and not np.allclose(b[0], b[1])

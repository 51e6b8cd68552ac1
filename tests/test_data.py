"""Data pipeline: alignment, flip, colour jitter, the challenge-layout dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jmlr.data.align import AlignJitter, align_sample, alignment_from_landmarks68, crop_points, masked_full_image
from jmlr.data.augment import color_jitter, flip_batch, flip_sample
from jmlr.geometry.crop import apply_affine, compose_affine, jmlr_template


def _landmarks68_from_5(p5: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """68 random points whose 5-point reduction is exactly ``p5``."""
    lm = rng.uniform(0, 200, size=(68, 2))
    d = rng.normal(size=2) * 3
    lm[36], lm[39] = p5[0] - d, p5[0] + d
    lm[42], lm[45] = p5[1] + d, p5[1] - d
    lm[30], lm[48], lm[54] = p5[2], p5[3], p5[4]
    return lm


def _involution(n: int, rng: np.random.Generator) -> np.ndarray:
    perm = rng.permutation(n)
    idx = np.arange(n)
    for a, b in zip(perm[0::2], perm[1::2]):
        idx[a], idx[b] = b, a
    return idx


def _camera():
    K = np.array([[600.0, 0, 400], [0, 600.0, 380], [0, 0, 1]])
    R_t = np.eye(4)
    a = np.deg2rad(20)
    R_t[:3, :3] = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    R_t[3, :3] = [0.02, -0.01, -0.5]
    return K, R_t


@pytest.mark.parametrize("size", [64, 256])
def test_alignment_maps_template_onto_template(size):
    rng = np.random.default_rng(0)
    t = jmlr_template(size)
    M = alignment_from_landmarks68(_landmarks68_from_5(t, rng), size)
    np.testing.assert_allclose(M, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    # a scaled, rotated, shifted template maps back onto the template
    a = np.deg2rad(25)
    A = 1.7 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = t @ A.T + np.array([300.0, 120.0])
    M = alignment_from_landmarks68(_landmarks68_from_5(moved, rng), size)
    np.testing.assert_allclose(apply_affine(M, moved), t, atol=1e-6)


def test_jitter_is_a_bounded_similarity_about_the_centre():
    rng = np.random.default_rng(1)
    J = AlignJitter(scale=0.1, rotate_deg=10, shift=0.05).sample(rng, 100)
    A = J[:, :2]
    s = np.sqrt(abs(np.linalg.det(A)))
    assert 0.9 <= s <= 1.1 and not np.allclose(J, [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(A @ A.T, s**2 * np.eye(2), atol=1e-12)
    centre_moved = apply_affine(J, np.array([[49.5, 49.5]]))[0] - 49.5
    assert np.all(np.abs(centre_moved) <= 5.0 + 1e-9)


def test_align_sample_points_are_projections_through_M():
    rng = np.random.default_rng(2)
    K, R_t = _camera()
    verts = rng.normal(scale=0.05, size=(30, 3))
    image = rng.integers(0, 255, size=(760, 800, 3), dtype=np.uint8)
    lm = rng.uniform(300, 500, size=(68, 2))
    out = align_sample(image, lm, verts, R_t, K, 64, rng=rng, jitter=AlignJitter())
    assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.uint8
    X = verts @ R_t[:3, :3] + R_t[3, :3]
    uv = np.stack([K[0, 0] * X[:, 0] / -X[:, 2] + K[0, 2], K[1, 1] * -X[:, 1] / -X[:, 2] + K[1, 2]], 1)
    np.testing.assert_allclose(out["points2d"], apply_affine(out["M"].astype(np.float64), uv), atol=1e-3)
    M0 = alignment_from_landmarks68(lm, 64)
    assert not np.allclose(out["M"], M0, atol=1e-3)  # the jitter moved it


def test_flip_twice_is_identity_and_keeps_targets_consistent():
    rng = np.random.default_rng(3)
    K, R_t = _camera()
    N, S, W = 40, 64, 800
    verts = rng.normal(scale=0.05, size=(N, 3)).astype(np.float32)
    M = alignment_from_landmarks68(rng.uniform(300, 500, size=(68, 2)), S)
    sample = {
        "image": rng.integers(0, 255, size=(S, S, 3), dtype=np.uint8),
        "verts": verts, "R_t": R_t.astype(np.float32), "K": K.astype(np.float32), "M": M.astype(np.float32),
        "points2d": crop_points(verts, R_t, K, M), "landmarks68": rng.uniform(0, 800, (68, 2)).astype(np.float32),
    }
    fi = _involution(N, rng)
    once = flip_sample(sample, fi, image_width=W)
    assert not np.allclose(once["points2d"], sample["points2d"])
    np.testing.assert_array_equal(once["image"], sample["image"][:, ::-1])
    # the flipped targets still agree: flipped points = projection of flipped verts with flipped pose/K/M
    np.testing.assert_allclose(
        once["points2d"],
        crop_points(once["verts"], once["R_t"].astype(np.float64), once["K"].astype(np.float64),
                    once["M"].astype(np.float64)), atol=2e-3)
    twice = flip_sample(once, fi, image_width=W)
    for k, v in sample.items():
        np.testing.assert_allclose(twice[k], v, atol=1e-4, err_msg=k)


def test_flip_batch_twice_is_identity_and_matches_numpy():
    rng = np.random.default_rng(4)
    B, N, S = 3, 20, 32
    fi = _involution(N, rng)
    img = torch.rand(B, 3, S, S)
    pts = torch.rand(B, N, 2) * S
    v = torch.randn(B, N, 3)
    mask = torch.tensor([True, False, True])
    fi_t = torch.from_numpy(fi)
    i1, p1, v1 = flip_batch(img, pts, v, fi_t, mask)
    assert torch.equal(i1[1], img[1]) and not torch.equal(i1[0], img[0])
    ref = flip_sample({"image": img[0].permute(1, 2, 0).numpy(), "points2d": pts[0].numpy(),
                       "verts": v[0].numpy()}, fi)
    np.testing.assert_allclose(p1[0].numpy(), ref["points2d"], atol=1e-5)
    np.testing.assert_allclose(v1[0].numpy(), ref["verts"], atol=1e-6)
    i2, p2, v2 = flip_batch(i1, p1, v1, fi_t, mask)
    assert torch.equal(i2, img) and torch.allclose(p2, pts) and torch.equal(v2, v)


def test_color_jitter_changes_colour_keeps_shape():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    out = color_jitter(img, rng, 0.3, 0.3, 0.3)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() > 0.5
    np.testing.assert_array_equal(color_jitter(img, rng, 0.0, 0.0, 0.0), img)


def test_masked_full_image_blackens_outside_the_face():
    img = np.full((100, 80, 3), 200, np.uint8)
    lm = np.random.default_rng(6).uniform(30, 50, size=(68, 2))
    out = masked_full_image(img, lm, 50, dilate_frac=0.0)
    assert out.shape == (50, 50, 3)
    assert out[20, 20].max() == 200  # face centre (40, 40) px -> (20, 20)
    assert out[2, 2].max() == 0 and out[45, 45].max() == 0


def test_compose_affine_applies_right_first():
    A = np.array([[2.0, 0, 1], [0, 2, 0]])
    B = np.array([[1.0, 0, 5], [0, 1, -1]])
    p = np.array([[1.0, 2.0]])
    np.testing.assert_allclose(apply_affine(compose_affine(A, B), p), apply_affine(A, apply_affine(B, p)))

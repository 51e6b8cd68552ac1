"""Camera conventions: WCPA projection ↔ K, OpenGL ↔ OpenCV, R_t ↔ (R_cv, t_cv), projection."""

import math

import numpy as np
import pytest
import torch

from jmlr.geometry import camera as cam
from jmlr.geometry.rotation import euler_to_matrix
from jmlr.geometry.torch_ops import project_points_torch


def random_rt(rng, batch=()):
    """Challenge R_t of a head facing the camera ±40° at 0.3–0.9 m (z < 0 in OpenGL)."""
    ang = rng.uniform(-40, 40, size=batch + (3,))
    R_col = euler_to_matrix(ang[..., 0], ang[..., 1], ang[..., 2])
    T = np.stack(
        [rng.uniform(-0.1, 0.1, batch), rng.uniform(-0.1, 0.1, batch), -rng.uniform(0.3, 0.9, batch)], axis=-1
    )
    return cam.rt_from_rotation_translation(np.swapaxes(R_col, -1, -2), T)


def test_wcpa_intrinsics_values():
    K = cam.wcpa_intrinsics()
    assert K[0, 0] == pytest.approx(1.57443701 * 400)
    assert K[1, 1] == pytest.approx(629.774804)
    assert K[0, 2] == 400 and K[1, 2] == 400
    assert K[2, 2] == 1 and K[0, 1] == 0


def test_projection_intrinsics_roundtrip_offcentre():
    K = cam.make_intrinsics(700.0, 710.0, 300.5, 260.25)
    P = cam.projection_from_intrinsics(K, 640, 480, near=0.05, far=20.0)
    np.testing.assert_allclose(cam.intrinsics_from_projection(P, 640, 480), K, atol=1e-12)
    # the focal terms match the challenge's layout
    P_wcpa = cam.projection_from_intrinsics(cam.wcpa_intrinsics(), 800, 800)
    np.testing.assert_allclose(P_wcpa[:2, :2], cam.WCPA_PROJECTION_MATRIX[:2, :2])
    np.testing.assert_allclose(P_wcpa[:, 3], cam.WCPA_PROJECTION_MATRIX[:, 3])
    # standard OpenGL depth: near plane → ndc z = -1, far plane → +1
    for d, ndc in ((0.05, -1.0), (20.0, 1.0)):
        clip = np.array([0.0, 0.0, -d, 1.0]) @ P
        assert clip[2] / clip[3] == pytest.approx(ndc)


def test_opengl_clip_projection_equals_K_projection_and_y_is_up():
    rng = np.random.default_rng(0)
    R_t = random_rt(rng, (4,))
    V = rng.normal(scale=0.05, size=(4, 50, 3))
    K = cam.wcpa_intrinsics()
    uv_k = cam.project_points(V, R_t, K)
    uv_gl = cam.project_points_opengl(V, R_t, cam.WCPA_PROJECTION_MATRIX, 800, 800)
    np.testing.assert_allclose(uv_k, uv_gl, atol=1e-9)
    # a point above the optical axis (OpenGL y > 0) is in the upper image half (v < cy)
    R_t0 = cam.rt_from_rotation_translation(np.eye(3), [0.0, 0.0, -0.5])
    uv = cam.project_points(np.array([[0.0, 0.05, 0.0], [0.05, 0.0, 0.0]]), R_t0, K)
    assert uv[0, 1] < 400 and uv[0, 0] == pytest.approx(400)
    assert uv[1, 0] > 400 and uv[1, 1] == pytest.approx(400)
    assert uv[0, 1] == pytest.approx(400 - 629.774804 * 0.1)


def test_rt_opencv_roundtrip_and_same_points():
    rng = np.random.default_rng(1)
    R_t = random_rt(rng, (3, 2))
    R_cv, t_cv = cam.rt_to_opencv(R_t)
    assert R_cv.shape == (3, 2, 3, 3) and t_cv.shape == (3, 2, 3)
    np.testing.assert_allclose(np.linalg.det(R_cv), 1.0, atol=1e-12)
    np.testing.assert_allclose(cam.opencv_to_rt(R_cv, t_cv), R_t, atol=1e-12)
    np.testing.assert_allclose(cam.opencv_to_rt(R_cv, t_cv[..., None]), R_t, atol=1e-12)
    V = rng.normal(scale=0.05, size=(3, 2, 7, 3))
    X_gl = cam.transform_points(V, R_t)
    X_cv = V @ np.swapaxes(R_cv, -1, -2) + t_cv[..., None, :]
    np.testing.assert_allclose(cam.opengl_to_opencv_points(X_gl), X_cv, atol=1e-12)
    assert np.all(X_cv[..., 2] > 0) and np.all(X_gl[..., 2] < 0)
    # homogeneous form matches V @ R + T
    Vh = np.concatenate([V, np.ones_like(V[..., :1])], axis=-1)
    np.testing.assert_allclose((Vh @ R_t)[..., :3], X_gl, atol=1e-12)


def test_rescale_and_crop_intrinsics():
    K = cam.wcpa_intrinsics()
    K2 = cam.rescale_intrinsics(K, (800, 800), (400, 200))
    assert K2[0, 0] == pytest.approx(K[0, 0] / 2) and K2[1, 1] == pytest.approx(K[1, 1] / 4)
    assert K2[0, 2] == pytest.approx(0.5 * 400.5 - 0.5)
    assert K2[1, 2] == pytest.approx(0.25 * 400.5 - 0.5)
    K3 = cam.rescale_intrinsics(K, (800, 800), (400, 400), half_pixel=False)
    assert K3[0, 2] == 200
    np.testing.assert_allclose(cam.rescale_intrinsics(K2, (400, 200), (800, 800)), K, atol=1e-12)
    Kc = cam.crop_intrinsics(K, 100, 50)
    assert (Kc[0, 2], Kc[1, 2]) == (300, 350)
    # projecting with the cropped K equals projecting then shifting
    rng = np.random.default_rng(2)
    R_t = random_rt(rng)
    V = rng.normal(scale=0.05, size=(20, 3))
    np.testing.assert_allclose(
        cam.project_points(V, R_t, Kc), cam.project_points(V, R_t, K) - [100, 50], atol=1e-9
    )


def test_rescale_matches_cv2_resize():
    cv2 = pytest.importorskip("cv2")
    ys, xs = np.mgrid[:80, :120]
    img = np.exp(-((xs - 70.0) ** 2 + (ys - 30.0) ** 2) / (2 * 4.0**2)).astype(np.float32)  # blob at (70, 30)
    small = cv2.resize(img, (60, 40), interpolation=cv2.INTER_LINEAR)
    K = cam.make_intrinsics(100.0, 100.0, 70.0, 30.0)  # principal point on the bright pixel
    K2 = cam.rescale_intrinsics(K, (120, 80), (60, 40))
    ys, xs = np.mgrid[:40, :60]
    cx = (small * xs).sum() / small.sum()
    cy = (small * ys).sum() / small.sum()
    # the blob centre lands at the rescaled principal point (34.75, 14.75), not (35, 15)
    assert cx == pytest.approx(K2[0, 2], abs=0.01) and cy == pytest.approx(K2[1, 2], abs=0.01)


def test_focal_35mm_and_fov():
    # a 35 mm-equivalent lens on a 3:2 image: f_px / W = f35 / 36
    K = cam.intrinsics_from_focal_35mm(26.0, 3000, 2000)
    assert K[0, 0] == pytest.approx(26.0 / 36.0 * 3000)
    assert (K[0, 2], K[1, 2]) == (1500, 1000)
    K = cam.intrinsics_from_fov(90.0, 800, 600, "horizontal")
    assert K[0, 0] == pytest.approx(400.0)
    assert cam.intrinsics_from_fov(90.0, 800, 600, "vertical")[1, 1] == pytest.approx(300.0)
    assert cam.intrinsics_from_fov(90.0, 800, 600, "diagonal")[0, 0] == pytest.approx(500.0)
    hfov, _vfov = cam.fov_from_intrinsics(cam.wcpa_intrinsics(), 800, 800)
    assert hfov == pytest.approx(math.degrees(2 * math.atan(1 / 1.57443701)))
    with pytest.raises(ValueError):
        cam.intrinsics_from_fov(60, 10, 10, "sideways")


def test_project_points_torch_matches_numpy_and_grads():
    rng = np.random.default_rng(3)
    R_t = random_rt(rng, (2,))
    V = rng.normal(scale=0.05, size=(2, 30, 3))
    K = np.broadcast_to(cam.wcpa_intrinsics(), (2, 3, 3))
    ref = cam.project_points(V, R_t, K)
    Vt = torch.tensor(V, requires_grad=True)
    out = project_points_torch(Vt, torch.tensor(R_t), torch.tensor(K))
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-9)
    out.sum().backward()
    assert torch.isfinite(Vt.grad).all() and Vt.grad.abs().sum() > 0
    # float32 and a shared K broadcast
    out32 = project_points_torch(
        torch.tensor(V, dtype=torch.float32), torch.tensor(R_t, dtype=torch.float32),
        torch.tensor(cam.wcpa_intrinsics(), dtype=torch.float32),
    )
    np.testing.assert_allclose(out32.numpy(), ref, atol=1e-2)


def test_transform_points_numpy_and_torch_agree():
    rng = np.random.default_rng(5)
    R_t = random_rt(rng, (2,))
    V = rng.normal(scale=0.05, size=(2, 7, 3))
    ref = np.einsum("bnk,bkj->bnj", V, R_t[:, :3, :3]) + R_t[:, None, 3, :3]
    np.testing.assert_allclose(cam.transform_points(V, R_t), ref, atol=1e-12)
    out = cam.transform_points(torch.tensor(V), torch.tensor(R_t))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_world_to_opencv_matches_rt_convention():
    rng = np.random.default_rng(6)
    R_t = random_rt(rng)
    V = rng.normal(scale=0.05, size=(9, 3))
    R_cv, t_cv = cam.rt_to_opencv(R_t)
    X = cam.world_to_opencv(V, R_cv, t_cv)
    np.testing.assert_allclose(X, cam.opengl_to_opencv_points(cam.transform_points(V, R_t)), atol=1e-12)
    assert np.all(X[:, 2] > 0)  # in front of the camera

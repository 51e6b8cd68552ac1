"""Rasterizer conventions: coverage, culling, depth order, perspective-correct barycentrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jmlr.synth.render import Lighting, interpolate, project_to_screen, rasterize, render_mesh

K = torch.tensor([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])


def _tri(points, depth, faces=((0, 1, 2),), size=(48, 64)):
    p = torch.tensor(points, dtype=torch.float32)[None]
    z = torch.tensor(depth, dtype=torch.float32)[None]
    return rasterize(p, z, torch.tensor(faces), size)


def test_project_to_screen_opengl_to_pixels():
    # OpenGL: x right, y up, looking down -z. A point up (+y) lands higher (smaller v).
    cam = torch.tensor([[[0.0, 0.0, -1.0], [0.1, 0.0, -1.0], [0.0, 0.1, -2.0]]])
    p, z = project_to_screen(cam, K)
    np.testing.assert_allclose(p[0].numpy(), [[32, 24], [42, 24], [32, 19]], atol=1e-5)
    np.testing.assert_allclose(z[0].numpy(), [1, 1, 2])


def test_coverage_matches_pixel_centres():
    # Counter-clockwise on screen as the camera sees it = clockwise in y-down pixels.
    pts = [(10.3, 5.2), (30.7, 40.1), (50.2, 8.9)]
    frags = _tri(pts, [1.0, 1.0, 1.0])
    mask = frags.mask[0].numpy()
    yy, xx = np.mgrid[0:48, 0:64]
    a, b, c = (np.array(q) for q in pts)

    def edge(p, q):
        return (q[0] - p[0]) * (yy - p[1]) - (q[1] - p[1]) * (xx - p[0])

    inside = (edge(a, b) <= 0) & (edge(b, c) <= 0) & (edge(c, a) <= 0)
    assert mask.sum() > 300
    assert (mask == inside).mean() > 0.999
    assert (mask != inside).sum() <= 2  # only exact-on-edge ties may differ


def test_backface_culled():
    front = _tri([(10, 5), (30, 40), (50, 9)], [1, 1, 1])
    back = _tri([(10, 5), (50, 9), (30, 40)], [1, 1, 1])
    assert front.mask.sum() > 0
    assert back.mask.sum() == 0


def test_nearest_triangle_wins():
    pts = [(5, 5), (20, 45), (60, 5), (5, 5), (20, 45), (60, 5)]
    frags = _tri(pts, [2.0, 2.0, 2.0, 1.0, 1.0, 1.0], faces=((0, 1, 2), (3, 4, 5)))
    inside = frags.face_index[0][frags.mask[0]]
    assert (inside == 1).all()
    frags = _tri(pts, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0], faces=((0, 1, 2), (3, 4, 5)))
    assert (frags.face_index[0][frags.mask[0]] == 0).all()


def test_barycentrics_are_perspective_correct():
    # Interpolating camera-space positions and projecting them must give back the pixel.
    cam = torch.tensor([[[-0.2, 0.15, -1.0], [0.0, -0.2, -3.0], [0.25, 0.1, -1.5]]])
    p, z = project_to_screen(cam, K)
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(p, z, faces, (48, 64))
    assert frags.mask.sum() > 50
    pos = interpolate(frags, faces, cam)
    back, _ = project_to_screen(pos[None], K)
    pix = frags.pixels
    expect = torch.stack([pix % 64, pix // 64], -1).float()
    torch.testing.assert_close(back[0], expect, atol=1e-3, rtol=0)
    # Depth output is that of the interpolated point.
    torch.testing.assert_close(frags.zbuf, -pos[:, 2], atol=1e-5, rtol=1e-5)


def test_batch_elements_independent():
    pts1 = [(10, 5), (30, 40), (50, 9)]
    pts2 = [(2, 2), (10, 30), (40, 3)]
    p = torch.tensor([pts1, pts2], dtype=torch.float32)
    z = torch.ones(2, 3)
    both = rasterize(p, z, torch.tensor([[0, 1, 2]]), (48, 64))
    one = _tri(pts2, [1, 1, 1])
    assert torch.equal(both.mask[1], one.mask[0])


def test_render_mesh_shading_sane():
    # A quad facing the camera, lit from the camera: bright where covered, black elsewhere.
    v = torch.tensor([[[-0.1, -0.1, 0.0], [0.1, -0.1, 0.0], [0.1, 0.1, 0.0], [-0.1, 0.1, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])  # CCW seen from +z
    R_t = torch.eye(4)[None]
    R_t[0, 3, 2] = -1.0
    light = Lighting(torch.full((1, 3), 0.2), torch.tensor([[[0.0, 0.0, 1.0]]]), torch.full((1, 1, 3), 0.8),
                     torch.zeros(1), torch.full((1,), 10.0))
    out = render_mesh(v, faces, R_t, K, (48, 64), torch.full((1, 4, 3), 0.5), light)
    m = out.mask[0]
    assert 350 < m.sum() < 500  # 20 x 20 px
    lit = out.image[0][m]
    # albedo 0.5 under light 1.0 in linear space -> 0.5 in sRGB-like output.
    torch.testing.assert_close(lit, torch.full_like(lit, 0.5), atol=1e-3, rtol=0)
    assert out.image[0][~m].abs().max() == 0
    torch.testing.assert_close(out.depth[0][m], torch.ones(int(m.sum())), atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cam = torch.tensor([[[-0.2, 0.15, -1.0], [0.0, -0.2, -3.0], [0.25, 0.1, -1.5]]])
    p, z = project_to_screen(cam, K)
    faces = torch.tensor([[0, 1, 2]])
    a = rasterize(p, z, faces, (48, 64))
    b = rasterize(p.cuda(), z.cuda(), faces.cuda(), (48, 64))
    assert torch.equal(a.mask, b.mask.cpu())


def test_float32_depth_precise_on_small_triangles_at_800px():
    # A finely tessellated sphere (20k triangles of ~4 px) around pixel (400, 400) with
    # a second shell 0.5 mm inside it, like teeth behind lips. The edge-function
    # constant in absolute pixel coordinates lost the low bits in float32: 40 % of the
    # pixels were > 0.1 mm off and the inner shell showed through.
    import trimesh

    ico = trimesh.creation.icosphere(subdivisions=5, radius=0.1)
    inner = 1 - 0.0005 / 0.1
    v = np.concatenate([ico.vertices, ico.vertices * inner]) + [0.0, 0.0, -0.45]
    f = np.concatenate([ico.faces, ico.faces + len(ico.vertices)])
    K64 = torch.tensor([[700.0, 0, 399.5], [0, 700, 399.5], [0, 0, 1]], dtype=torch.float64)
    p, z = project_to_screen(torch.tensor(v)[None], K64)
    frags = rasterize(p.float(), z.float(), torch.as_tensor(f), (800, 800))
    assert frags.mask.sum() > 70000
    assert (frags.faces >= len(ico.faces)).sum() == 0, "the inner shell shows through"
    # Exact depth of the visible triangle's plane along each pixel's ray (float64).
    pix = frags.pixels.numpy()
    ray = np.linalg.solve(K64.numpy(), np.stack([pix % 800, pix // 800, np.ones_like(pix)]).astype(float)).T
    tri = (v * [1, -1, -1])[f[frags.faces.numpy()]]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    exact = (n * tri[:, 0]).sum(1) / (n * ray).sum(1)
    err = np.abs(frags.zbuf.double().numpy() - exact)
    assert err.max() < 2e-5, f"depth off by up to {err.max() * 1e3:.3f} mm"


def test_float64_points_rasterize_in_float64():
    cam = torch.tensor([[[-0.2, 0.15, -1.0], [0.0, -0.2, -3.0], [0.25, 0.1, -1.5]]], dtype=torch.float64)
    p, z = project_to_screen(cam, K.double())
    frags = rasterize(p, z, torch.tensor([[0, 1, 2]]), (48, 64))
    assert frags.bary.dtype == torch.float64 and frags.zbuf.dtype == torch.float64

"""The OpenGL renderer against the PyTorch reference: same masks, depth and shading, at
crop and full-frame sizes, on the procedural head (always) and the real head (with
../shared); the generator's backend choice and fallback."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from jmlr.facemodel import FaceModel, Topology, build_topology, make_procedural_head
from jmlr.geometry.crop import crop_transform, landmarks5_from_68
from jmlr.synth import render_gl
from jmlr.synth.appearance import sample_lighting
from jmlr.synth.render import Lighting, project_to_screen, rasterize, render_mesh
from jmlr.synth.scene import SyntheticFaceGenerator, _project
from jmlr.synth.stream import CropJitter, SyntheticCropStream, crop_projection

SIZES = (128, 256, 800)


@pytest.fixture(scope="module")
def gl():
    ok, why = render_gl.gl_available()
    if not ok:
        pytest.skip(f"no headless OpenGL: {why} (install libegl1 libgl1-mesa-dri libegl-mesa0, see .ci/run)")
    return render_gl.gl_renderer()


@pytest.fixture(scope="module")
def procedural(tmp_path_factory):
    fm = FaceModel.load(make_procedural_head(tmp_path_factory.mktemp("head") / "head.npz"))
    return fm, build_topology(fm)


def _tri(points, depth, faces=((0, 1, 2),), size=(48, 64)):
    return (torch.tensor(points, dtype=torch.float32), torch.tensor(depth, dtype=torch.float32),
            torch.tensor(faces), size)


def _edge_distance(pixels: torch.Tensor, width: int, height: int, screen: torch.Tensor) -> torch.Tensor:
    """Distance (P,) from flat pixel centres to the nearest edge of their image's
    triangles ``screen (B, T, 3, 2)``."""
    b = pixels // (width * height)
    xy = torch.stack([pixels % width, pixels // width % height], -1).double()
    a, c = screen.double(), screen.double().roll(-1, dims=2)  # edges (a -> c)
    a, c = a[b], c[b]  # (P, T, 3, 2)
    ab = c - a
    t = (((xy[:, None, None] - a) * ab).sum(-1) / (ab * ab).sum(-1)).clamp(0, 1)
    return (xy[:, None, None] - (a + t[..., None] * ab)).norm(dim=-1).amin(dim=(1, 2))


def _assert_same_coverage(ref, got, screen):
    """Pixel centres exactly on an edge are the only ones allowed to differ: the
    reference keeps closed triangles, GL applies its top-left fill rule."""
    _, H, W = ref.shape
    differ = (ref.mask != got.mask).view(-1).nonzero().squeeze(1)
    assert len(differ) < 0.01 * ref.mask.sum()
    if len(differ):
        assert _edge_distance(differ, W, H, screen).max() < 1e-4


def test_triangles_match_the_reference_in_every_tile(gl):
    base = torch.tensor([(10.3, 5.2), (30.7, 40.1), (50.2, 8.9), (5.0, 5.0), (20.0, 45.0), (60.0, 5.0)])
    # 7 images, each shifted: tiles must not bleed into each other.
    p = torch.stack([base + torch.tensor([k * 1.7 - 4, k * 0.9 - 3]) for k in range(7)])
    z = torch.tensor([[1.0, 1.5, 1.2, 2.0, 2.0, 2.0]]).repeat(7, 1)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    a = rasterize(p, z, faces, (48, 64))
    b = gl.rasterize(p, z, faces, (48, 64))
    assert a.mask.sum() > 7 * 300
    _assert_same_coverage(a, b, p[:, faces])
    both = a.mask & b.mask
    assert torch.equal(a.face_index[both], b.face_index[both])
    torch.testing.assert_close(b.depth[both], a.depth[both])
    torch.testing.assert_close(b.bary_map[both], a.bary_map[both])


def test_backface_culled_and_nearest_wins(gl):
    front = gl.rasterize(*_tri([[(10, 5), (30, 40), (50, 9)]], [[1, 1, 1]]))
    back = gl.rasterize(*_tri([[(10, 5), (50, 9), (30, 40)]], [[1, 1, 1]]))
    assert front.mask.sum() > 0 and back.mask.sum() == 0
    both_sides = gl.rasterize(*_tri([[(10, 5), (50, 9), (30, 40)]], [[1, 1, 1]]), cull_backfaces=False)
    assert torch.equal(both_sides.mask, front.mask)
    pts = [[(5, 5), (20, 45), (60, 5), (5, 5), (20, 45), (60, 5)]]
    near_second = gl.rasterize(*_tri(pts, [[2.0] * 3 + [1.0] * 3], faces=((0, 1, 2), (3, 4, 5))))
    assert (near_second.face_index[near_second.mask] == 1).all()
    near_first = gl.rasterize(*_tri(pts, [[1.0] * 3 + [2.0] * 3], faces=((0, 1, 2), (3, 4, 5))))
    assert (near_first.face_index[near_first.mask] == 0).all()


def test_images_do_not_depend_on_their_batch(gl, monkeypatch):
    cam = torch.tensor([[-0.2, 0.15, -1.0], [0.0, -0.2, -3.0], [0.25, 0.1, -1.5]])
    K = torch.tensor([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])
    shifts = torch.linspace(-0.1, 0.1, 9)
    cams = torch.stack([cam + torch.tensor([s, -s / 2, 0.0]) for s in shifts])
    p, z = project_to_screen(cams, K)
    faces = torch.tensor([[0, 1, 2]])
    ref = rasterize(p, z, faces, (48, 64))
    assert ref.mask.sum(dim=(1, 2)).min() > 100
    # Framebuffer memory for 4 images per pass: 9 images take 3 passes.
    monkeypatch.setattr(render_gl, "_FRAMEBUFFER_BYTES", 4 * 48 * 64 * 12)
    batch = gl.rasterize(p, z, faces, (48, 64))
    _assert_same_coverage(ref, batch, p[:, faces])
    for b in (0, 5, 8):
        alone = gl.rasterize(p[b:b + 1], z[b:b + 1], faces, (48, 64))
        assert torch.equal(alone.mask[0], batch.mask[b])


def _floor_and_card(z_near: float):
    """A floor triangle 0.2 m below the camera, from ``z_near`` (OpenGL camera z: positive
    is behind the camera) to 3 m ahead, and a small card 1 m ahead on the optical axis;
    world = OpenGL camera space (identity R_t)."""
    # Corners off the pixel grid, so that no pixel centre lies on an edge (fill rules differ).
    verts = torch.tensor([[[-2.0, -0.2, z_near], [0.013, -0.2, -3.1], [2.0, -0.2, z_near],
                           [-0.051, -0.047, -1.0], [0.053, -0.047, -1.0], [0.001, 0.052, -1.0]]])
    faces = torch.tensor([[0, 2, 1], [3, 4, 5]])
    K = torch.tensor([[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]])
    light = Lighting(torch.ones(1, 3), torch.tensor([[[0.0, 0.0, 1.0]]]), torch.ones(1, 1, 3),
                     torch.zeros(1), torch.ones(1))
    return verts, faces, torch.eye(4)[None], K, torch.full((1, 6, 3), 0.5), light


def test_faces_reaching_behind_the_camera_are_clipped_not_smeared(gl):
    # A torso seen from a low camera reaches past it. The vertex shader's projection used to
    # divide by a depth clamped at 1e-9, so a corner behind the camera went to "infinity" on
    # the wrong side and the clipped triangle covered the whole frame, the face included.
    size = (48, 64)
    for z_near in (-0.5, 0.5):  # the floor in front of the camera, then reaching behind it
        verts, faces, R_t, K, albedo, light = _floor_and_card(z_near)
        img = gl.render_mesh(verts, faces, R_t, K, size, albedo, light)
        mask = img.mask[0]
        # The floor's horizon lies on the principal point's row (24): nothing of it above.
        assert not mask[:20].any(), f"floor from z={z_near} drawn above the horizon"
        # The card at 1 m is visible at the principal point, in front of nothing.
        assert mask[22, 32] and abs(float(img.depth[0, 22, 32]) - 1.0) < 1e-3
        assert mask[40].all(), f"floor from z={z_near} missing below the horizon"


def test_rasterize_drops_faces_behind_the_camera_as_the_reference_does(gl):
    verts, faces, _, K, _, _ = _floor_and_card(0.5)
    both = torch.cat([verts, _floor_and_card(-0.5)[0]])  # the floor reaches behind in image 0 only
    p, z = project_to_screen(both, K)
    ref = rasterize(p, z, faces, (48, 64))
    got = gl.rasterize(p, z, faces, (48, 64))
    _assert_same_coverage(ref, got, p[:, faces])
    assert ref.mask[0, 40].sum() == 0 and ref.mask[1, 40].all()  # image 0: only the card
    # Face ids come back in the mesh's numbering, not in the order of what was drawn.
    common = ref.mask & got.mask
    assert torch.equal(ref.face_index[common], got.face_index[common])
    assert set(got.face_index[0][got.mask[0]].tolist()) == {1}


def _scene(gen, size, batch=6, seed=0):
    """Sampled heads with crop projections (full frame at 800): what the stream renders."""
    rng = np.random.default_rng(seed)
    params = gen.sample_params(rng, batch)
    verts = gen._recess_eyeballs(gen.head_vertices(params.identity, params.expression))
    if size == 800:
        K = torch.as_tensor(gen.K, dtype=torch.float32)
    else:
        tv = gen.topology_vertices_np(params.identity, params.expression)
        full = _project(tv.astype(np.float64), params.R_t.astype(np.float64), gen.K)
        M = crop_transform(landmarks5_from_68(full[:, gen.landmarks68]), size)
        K = torch.as_tensor(crop_projection(M, np.broadcast_to(gen.K, (batch, 3, 3))), dtype=torch.float32)
    albedo = torch.as_tensor(np.stack([gen.albedo(a) for a in params.appearance]))
    shading = dict(specular_mask=gen.specular.expand(batch, -1), occlusion=gen.occlusion.expand(batch, -1))
    return verts, torch.as_tensor(params.R_t), K, albedo, sample_lighting(rng, batch), shading


def _agreement(gen, gl, size):
    verts, R_t, K, albedo, light, shading = _scene(gen, size)
    cam = verts @ R_t[:, :3, :3] + R_t[:, 3:4, :3]
    p, z = project_to_screen(cam, K)
    ref = rasterize(p, z, gen.faces, (size, size))
    frags = gl.rasterize(p, z, gen.faces, (size, size))
    ref_img = render_mesh(verts, gen.faces, R_t, K, (size, size), albedo, light, **shading)
    img = gl.render_mesh(verts, gen.faces, R_t, K, (size, size), albedo, light, **shading)
    for m in (frags.mask, img.mask):
        iou = (m & ref.mask).sum() / (m | ref.mask).sum()
        assert iou >= 0.999, f"{size}px: mask IoU {iou:.5f}"
    assert ref.mask.sum() > 6 * 0.05 * size * size
    both = img.mask & ref.mask
    for depth in (frags.depth, img.depth):
        err = (depth - ref.depth)[both].abs()
        # Pixel centres exactly on a shared or silhouette edge may pick another face
        # (GL's fill rule vs the reference's closed triangles); everything else agrees.
        assert (err < 1e-4).float().mean() > 0.999, f"{size}px: {(err >= 1e-4).float().mean():.2e} > 0.1 mm"
        assert err.median() < 1e-6
    diff = (img.image - ref_img.image)[both].abs()
    assert (diff > 2 / 255).float().mean() < 1e-3, f"{size}px: {(diff > 2 / 255).float().mean():.2e} of pixels differ"
    assert img.image[~img.mask].abs().max() == 0


@pytest.mark.parametrize("size", SIZES)
def test_procedural_head_matches_the_reference(gl, procedural, size):
    gen = SyntheticFaceGenerator(*procedural, renderer="torch")
    _agreement(gen, gl, size)


@pytest.fixture(scope="module")
def real_generator(facemodel_path):
    return SyntheticFaceGenerator(FaceModel.load(facemodel_path), Topology.load(), renderer="torch")


@pytest.mark.facemodel
@pytest.mark.parametrize("size", SIZES)
def test_real_head_matches_the_reference(gl, real_generator, size):
    _agreement(real_generator, gl, size)


def test_generator_backend_choice(gl, procedural):
    assert SyntheticFaceGenerator(*procedural, renderer="gl").renderer_name == "gl"
    assert SyntheticFaceGenerator(*procedural, renderer="torch").renderer_name == "torch"
    assert SyntheticFaceGenerator(*procedural).renderer_name == "gl"  # auto, with a context here
    with pytest.raises(ValueError):
        SyntheticFaceGenerator(*procedural, renderer="vulkan")


def test_generator_falls_back_to_torch_with_a_reason(procedural, monkeypatch, caplog):
    def broken(device_index=None):
        raise render_gl.GLUnavailable("no headless EGL OpenGL 3.3 context: test")

    monkeypatch.setattr(render_gl, "gl_renderer", broken)
    monkeypatch.delenv("JMLR_SYNTH_RENDERER", raising=False)
    gen = SyntheticFaceGenerator(*procedural)
    with caplog.at_level(logging.WARNING, logger="jmlr.synth.scene"):
        assert gen.renderer_name == "torch"
        out = gen.render(gen.sample_params(np.random.default_rng(0), 1), rng=np.random.default_rng(1))
    assert out.mask.sum() > 100
    assert "OpenGL unavailable" in caplog.text and "test" in caplog.text
    with pytest.raises(render_gl.GLUnavailable):
        _ = SyntheticFaceGenerator(*procedural, renderer="gl").renderer_name
    monkeypatch.setenv("JMLR_SYNTH_RENDERER", "torch")
    assert SyntheticFaceGenerator(*procedural).renderer == "torch"


def test_crop_stream_on_gl_keeps_its_contract(gl, procedural):
    kw = dict(size=96, batch_size=3, seed=4, jitter=CropJitter.none())
    a = SyntheticCropStream(*procedural, renderer="gl", **kw).next_batch()
    b = SyntheticCropStream(*procedural, renderer="gl", **kw).next_batch()
    ref = SyntheticCropStream(*procedural, renderer="torch", **kw).next_batch()
    assert set(a) == set(ref)
    for k in ref:
        assert a[k].shape == ref[k].shape and a[k].dtype == ref[k].dtype, k
    assert torch.equal(a["image"], b["image"])  # a seed fixes every byte
    for k in ("verts", "points2d", "R_t", "K", "M"):
        assert torch.equal(a[k], ref[k]), k  # ground truth does not depend on the renderer
    iou = (a["mask"] & ref["mask"]).sum() / (a["mask"] | ref["mask"]).sum()
    assert iou > 0.999


def _probe_in_child(queue):
    queue.put(render_gl.gl_available())


def test_forked_child_refuses_instead_of_hanging(gl):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_probe_in_child, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    ok, why = queue.get(timeout=5)
    assert not ok and "spawn" in why


def test_worker_threads_and_blas_follow_torch(monkeypatch):
    import cv2
    from threadpoolctl import threadpool_info

    from jmlr.synth.scene import numpy_threads_like_torch, set_worker_threads

    before = torch.get_num_threads(), cv2.getNumThreads()
    monkeypatch.setenv("LP_NUM_THREADS", "2")  # restored (unset) afterwards
    try:
        set_worker_threads(1)
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert os.environ["LP_NUM_THREADS"] == "0"
        with numpy_threads_like_torch():
            assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])

"""The generator with the real ICT-FaceKit head: mask/vertex agreement, the written
layout, determinism, and the crop fast path against the full render."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from jmlr.cli import main as cli_main
from jmlr.facemodel import FaceModel, Topology
from jmlr.geometry.camera import project_points
from jmlr.geometry.crop import apply_affine, crop_transform, landmarks5_from_68, warp_crop
from jmlr.synth.dataset import capture_action, synthesize_dataset
from jmlr.synth.layout import iter_samples, read_intrinsics, read_list
from jmlr.synth.render import vertex_normals
from jmlr.synth.sampler import FACIAL_ACTIONS
from jmlr.synth.scene import SyntheticFaceGenerator
from jmlr.synth.stream import CropJitter, SyntheticCropStream, crop_projection


@pytest.fixture(scope="module")
def generator(facemodel_path):
    torch.set_num_threads(2)
    return SyntheticFaceGenerator(FaceModel.load(facemodel_path), Topology.load())


def _front_facing(gen, verts, R_t, min_cos=0.3):
    """Topology vertices whose normal faces the camera (N,) bool."""
    V = torch.as_tensor(verts[None], dtype=torch.float32)
    cam = V @ torch.as_tensor(R_t[:3, :3]) + torch.as_tensor(R_t[3, :3])
    n = vertex_normals(cam, torch.as_tensor(gen.topology.triangles, dtype=torch.long))[0]
    view = torch.nn.functional.normalize(-cam[0], dim=-1)
    return ((n * view).sum(-1) > min_cos).numpy()


def test_mask_covers_front_facing_topology_vertices(generator):
    rng = np.random.default_rng(11)
    params = generator.sample_params(rng, 3)
    out = generator.render(params, rng=rng)
    verts = generator.topology_vertices_np(params.identity, params.expression)
    for b in range(3):
        front = _front_facing(generator, verts[b], params.R_t[b])
        uv = project_points(verts[b].astype(np.float64), params.R_t[b].astype(np.float64), generator.K)
        uv = np.round(uv[front]).astype(int)
        inside = (uv >= 0).all(1) & (uv < 800).all(1)
        mask = out.mask[b].numpy()
        hit = np.zeros(len(uv), bool)
        hit[inside] = mask[uv[inside, 1], uv[inside, 0]]
        assert front.sum() > 200
        assert hit.mean() >= 0.99, f"sample {b}: {hit.mean():.3f} of front-facing vertices inside the mask"
    # A wrong convention (e.g. y not flipped) would put the vertices outside the mask.
    uv_flip = uv.copy()
    uv_flip[:, 1] = 799 - uv_flip[:, 1]
    ok = (uv_flip >= 0).all(1) & (uv_flip < 800).all(1)
    assert mask[uv_flip[ok, 1], uv_flip[ok, 0]].mean() < 0.9


def test_depth_is_camera_z_of_the_surface(generator):
    rng = np.random.default_rng(12)
    params = generator.sample_params(rng, 1)
    out = generator.render(params, rng=rng)
    verts = generator.topology_vertices_np(params.identity, params.expression)[0]
    z = -(verts @ params.R_t[0, :3, :3] + params.R_t[0, 3, :3])[:, 2]
    d = out.depth[0][out.mask[0]].numpy()
    assert d.min() > 0.25 and d.max() < 1.3
    assert abs(np.median(d) - np.median(z)) < 0.08


def test_capture_actions_cover_all_actions_whatever_the_count_per_subject():
    n = len(FACIAL_ACTIONS)
    # the challenge's layout: every subject goes through all actions in order
    for s in (0, 1, 7):
        assert [capture_action(s, k, n) for k in range(n)] == list(FACIAL_ACTIONS)
    # few per subject: the actions run on across subjects instead of repeating the first few
    few = [capture_action(s, k, 3) for s in range(11) for k in range(3)]
    assert sorted(few) == sorted(FACIAL_ACTIONS)
    assert capture_action(1, 0, 3) == FACIAL_ACTIONS[3]


def test_cli_layout_landmarks_determinism(tmp_path, facemodel_path, generator):
    a = tmp_path / "a"
    rc = cli_main(["synth", "--out", str(a), "--subjects", "2", "--per-subject", "2", "--seed", "5",
                   "--batch", "3", "--no-progress", "--facemodel", str(facemodel_path),
                   "--preview", str(tmp_path / "sheet.png")])
    assert rc == 0
    # Same seed through the library, with another batch size and a generator that has
    # already rendered other things: same bytes.
    b = tmp_path / "b"
    synthesize_dataset(b, generator, 2, 2, seed=5, batch=2, progress=False)
    rows = read_list(a)
    assert len(rows) == 4 and len({r[0] for r in rows}) == 2
    assert read_list(a, "val") and read_list(a, "train")
    K = read_intrinsics(a)
    assert np.isclose(K[0, 0], 629.7748, atol=1e-3) and np.isclose(K[0, 2], 400)
    topo = Topology.load()
    assert (a / "resources/example.obj").is_file()
    for s in iter_samples(a):
        img = s.load_image()
        assert img.shape == (800, 800, 3)
        assert s.verts.shape == (topo.num_vertices, 3)
        proj = project_points(s.verts.astype(np.float64), s.R_t.astype(np.float64), K)[topo.landmarks68]
        np.testing.assert_allclose(s.landmarks68, proj, atol=1e-3)
        assert (s.landmarks68 >= 0).all() and (s.landmarks68 < 800).all()
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    jpgs = [(a / r).read_bytes() for r in files_a if r.suffix == ".jpg"]
    assert len(set(jpgs)) == len(jpgs)  # every capture differs
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[0] > 256


def test_crop_fast_path_matches_warped_full_render(generator):
    rng = np.random.default_rng(13)
    params = generator.sample_params(rng, 2)
    S = 256
    verts = generator.topology_vertices_np(params.identity, params.expression).astype(np.float64)
    full_pts = project_points(verts, params.R_t.astype(np.float64), generator.K)
    M = crop_transform(landmarks5_from_68(full_pts[:, generator.landmarks68]), S)
    full = generator.render(params, rng=[np.random.default_rng(1), np.random.default_rng(2)])
    crop = generator.render(params, K=crop_projection(M, generator.K), size=(S, S),
                            rng=[np.random.default_rng(1), np.random.default_rng(2)])
    for b in range(2):
        warped = warp_crop(full.image[b].numpy(), M[b], S)
        wmask = warp_crop(full.mask[b].numpy().astype(np.float32), M[b], S) > 0.5
        cmask = crop.mask[b].numpy()
        iou = (wmask & cmask).sum() / (wmask | cmask).sum()
        assert iou > 0.97, iou
        core = cv2.erode((wmask & cmask).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        diff = np.abs(warped[core] - crop.image[b].numpy()[core])
        assert diff.mean() < 0.03, diff.mean()
    # A crop shifted by 3 px must agree clearly worse with the warped full render.
    M_bad = M.copy()
    M_bad[:, 0, 2] += 3
    bad = generator.render(params, K=crop_projection(M_bad, generator.K), size=(S, S),
                           rng=[np.random.default_rng(1), np.random.default_rng(2)])
    bmask = bad.mask[b].numpy()
    assert (wmask ^ bmask).sum() > 3 * (wmask ^ cmask).sum()


def test_stream_batch_contract(generator):
    stream = SyntheticCropStream(None, None, size=128, batch_size=2, seed=3, jitter=CropJitter.none(),
                                 effects=False, generator=generator)
    batch = next(iter(stream))
    assert batch["image"].shape == (2, 3, 128, 128) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    N = generator.topology.num_vertices
    assert batch["verts"].shape == (2, N, 3) and batch["points2d"].shape == (2, N, 2)
    assert batch["R_t"].shape == (2, 4, 4) and batch["K"].shape == (2, 3, 3) and batch["M"].shape == (2, 2, 3)
    # Each capture has its own camera (phone cameras: other focal lengths, same frame);
    # the 2D targets are the projection with that capture's K, then M.
    K = batch["K"].double().numpy()
    assert np.allclose(K[:, [0, 1], [2, 2]], generator.K[[0, 1], [2, 2]]) and np.allclose(K[:, 0, 0], K[:, 1, 1])
    assert (K[:, 0, 0] > 0).all()
    full = np.stack([project_points(batch["verts"][b].double().numpy()[None], batch["R_t"][b].double().numpy()[None],
                                    K[b])[0] for b in range(2)])
    np.testing.assert_allclose(batch["points2d"].numpy(), apply_affine(batch["M"].double().numpy(), full), atol=1e-2)
    # Without jitter, the 5 points land on the template: the face is centred in the crop.
    lm = batch["points2d"][:, torch.as_tensor(generator.landmarks68)].numpy()
    assert (lm > 0).all() and (lm < 128).all()
    # The head mask covers the projected front-facing vertices of the crop too.
    for b in range(2):
        front = _front_facing(generator, batch["verts"][b].numpy(), batch["R_t"][b].numpy())
        uv = np.round(batch["points2d"][b].numpy()[front]).astype(int)
        ok = (uv >= 0).all(1) & (uv < 128).all(1)
        assert batch["mask"][b].numpy()[uv[ok, 1], uv[ok, 0]].mean() >= 0.99
    # Same seed -> same batch.
    again = next(iter(SyntheticCropStream(None, None, size=128, batch_size=2, seed=3, jitter=CropJitter.none(),
                                          effects=False, generator=generator)))
    assert torch.equal(batch["image"], again["image"])

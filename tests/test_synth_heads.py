"""Head elements of the synthetic renders (hair, brows, lashes, facial hair, eyes, skin
detail, make-up, specular variation, clothing): each switch changes the image where
expected and never the targets; seeds stay deterministic; GL and torch agree on the
dressed mesh (hair and torso are plain triangles that both renderers draw)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from jmlr.facemodel import FaceModel, Topology, build_topology, make_procedural_head
from jmlr.synth import render_gl
from jmlr.synth.appearance import sample_lighting
from jmlr.synth.hair import HAIR_KINDS, sample_hair_style
from jmlr.synth.heads import HEADS_ENV, HeadConfig, style_rng
from jmlr.synth.render import render_mesh
from jmlr.synth.scene import SyntheticFaceGenerator
from jmlr.synth.stream import CropJitter, SyntheticCropStream, crop_projection

ELEMENTS = [f.name for f in dataclasses.fields(HeadConfig)]
S = 128
TARGETS = ("verts", "points2d", "R_t", "K", "M")


def only(name: str) -> HeadConfig:
    return dataclasses.replace(HeadConfig.legacy(), **{name: 1.0})


@pytest.fixture(scope="module")
def real(facemodel_path):
    torch.set_num_threads(1)
    return FaceModel.load(facemodel_path), Topology.load()


@pytest.fixture(scope="module")
def procedural(tmp_path_factory):
    fm = FaceModel.load(make_procedural_head(tmp_path_factory.mktemp("head") / "head.npz"))
    return fm, build_topology(fm)


def _batch(model, heads: HeadConfig, seed: int = 4, batch: int = 4, renderer: str = "torch", zoom: float = 1.0):
    gen = SyntheticFaceGenerator(*model, heads=heads, renderer=renderer)
    stream = SyntheticCropStream(None, None, size=S, batch_size=batch, seed=seed, jitter=CropJitter.none(),
                                 effects=False, generator=gen, zoom=zoom)
    return stream.next_batch(return_params=True)


def test_config_parsing_and_env(monkeypatch):
    assert HeadConfig.parse("legacy") == HeadConfig.legacy() and not HeadConfig.legacy().any
    assert HeadConfig.parse("") == HeadConfig() and HeadConfig().any
    assert HeadConfig.parse("hair=0,makeup=0.5") == dataclasses.replace(HeadConfig(), hair=0.0, makeup=0.5)
    assert HeadConfig.parse("legacy,clothing=1") == only("clothing")
    assert HeadConfig.parse('{"hair": 0.25}').hair == 0.25
    with pytest.raises(ValueError):
        HeadConfig.parse("wings=1")
    with pytest.raises(ValueError):
        HeadConfig(hair=1.5)
    monkeypatch.setenv(HEADS_ENV, "legacy")
    assert HeadConfig.from_env() == HeadConfig.legacy()


def test_style_rng_leaves_the_subject_generator_alone():
    rng = np.random.default_rng(3)
    a = style_rng(rng).random(4)
    b = style_rng(rng).random(4)
    np.testing.assert_array_equal(a, b)  # rng was not advanced
    assert rng.random() == np.random.default_rng(3).random()
    assert not np.allclose(a, np.random.default_rng(3).random(4))


def test_hair_styles_draw_each_kind_within_its_ranges():
    """Every kind is drawn, each within its own ranges; afros and ponytails force their parting."""
    seen = {}
    for seed in range(300):
        style = sample_hair_style(np.random.default_rng(seed), seed % 2 == 0, np.array([0.2, 0.1, 0.05]))
        seen.setdefault(style.kind, []).append(style)
    assert set(seen) == set(HAIR_KINDS)
    short, long_ = seen["short"], seen["long"]
    assert max(s.length for s in short) < 0.07 <= 0.22 < min(s.length for s in long_)
    assert all(0.003 <= s.thickness <= 0.007 and 0.006 <= s.width <= 0.012 for s in short)
    assert all(s.curl >= 0.8 and s.parting == "none" for s in seen["afro"])
    assert all(s.parting == "back" and s.thickness <= 0.004 for s in seen["ponytail"])
    assert {s.parting for s in short + long_ + seen["medium"]} == {"crown", "side", "centre", "back"}
    a, b = (sample_hair_style(np.random.default_rng(7), False, np.array([0.2, 0.1, 0.05])) for _ in range(2))
    assert dataclasses.replace(a, color=None) == dataclasses.replace(b, color=None)
    np.testing.assert_array_equal(a.color, b.color)


def test_hair_built_in_a_batch_is_the_hair_built_alone(procedural):
    """`HairAssets.build_many` grows every subject's ribbons together; each subject's hair
    must be what `build` gives it alone, whatever its neighbours (kinds, partings, curl)."""
    gen = SyntheticFaceGenerator(*procedural, heads=HeadConfig(), renderer="torch")
    hair = gen.head_assets.hair
    rng = np.random.default_rng(11)
    styles = [sample_hair_style(rng, k % 2 == 0, rng.uniform(0, 1, 3)) for k in range(12)]
    styles[0] = dataclasses.replace(styles[0], kind="ponytail", parting="back")
    styles[1] = dataclasses.replace(styles[1], parting="none", curl=0.0)
    styles[2] = dataclasses.replace(styles[2], parting="none", curl=1.0)
    styles[3] = dataclasses.replace(styles[3], parting="centre")
    alone = [hair.build(s) for s in styles]
    for order in (range(12), range(11, -1, -1)):
        for k, built in zip(order, hair.build_many([styles[k] for k in order])):
            for a, b in zip(built, alone[k]):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
    assert len({alone[k][0].tobytes() for k in range(12)}) == 12  # every subject its own hair
    # The generator builds a batch's hair together and caches each subject as before.
    params = gen.sample_params(np.random.default_rng(5), 6)
    together = gen.subject_meshes(params.appearance)
    fresh = SyntheticFaceGenerator(*procedural, heads=HeadConfig(), renderer="torch")
    for a, mesh in zip(params.appearance, together):
        assert gen.subject_mesh(a) is mesh
        for name in ("albedo", "specular", "occlusion", "rest", "anchor"):
            np.testing.assert_array_equal(getattr(fresh.subject_mesh(a), name), getattr(mesh, name))
    # A full cache is emptied before new subjects go in; the cached ones of the same call
    # still come back.
    gen._albedo_cache.update({-k: (None, None) for k in range(1, 256)})
    more = gen.sample_params(np.random.default_rng(6), 2).appearance
    again = gen.subject_meshes([params.appearance[0], *more])
    assert again[0] is together[0] and len(gen._albedo_cache) == 2


def test_procedural_head_renders_with_every_element(procedural):
    """A face model without the real model's regions still gets its elements (fresh clone)."""
    legacy = _batch(procedural, HeadConfig.legacy(), batch=2)
    full = _batch(procedural, HeadConfig(**dict.fromkeys(ELEMENTS, 1.0)), batch=2)
    for k in TARGETS:
        assert torch.equal(legacy[k], full[k]), k
    assert not torch.equal(legacy["image"], full["image"])


@pytest.fixture(scope="module")
def element_batches(real):
    """One crop batch per element switched on alone, and the legacy batch (same seed)."""
    out = {"legacy": _batch(real, HeadConfig.legacy())}
    for name in ELEMENTS:
        out[name] = _batch(real, only(name))
    # The torso is mostly outside a face crop: zoom out for it.
    out["legacy_zoomed"] = _batch(real, HeadConfig.legacy(), zoom=0.5)
    out["clothing"] = _batch(real, only("clothing"), zoom=0.5)
    return out


def _region(points: np.ndarray, idx, grow: int) -> np.ndarray:
    """(S, S) bool: convex hull of the landmarks ``idx`` of points (68, 2), grown by ``grow`` px."""
    m = np.zeros((S, S), np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(np.round(points[list(idx)]).astype(np.int32)), 1)
    if grow:
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return m.astype(bool)


def _allowed_vertices(name: str, facemodel) -> np.ndarray | None:
    """(V,) bool: the head vertices whose albedo element ``name`` may change (None: any)."""
    v = np.asarray(facemodel.neutral)
    lm = v[np.asarray(facemodel.landmarks68)]
    near = lambda idx, r: (np.linalg.norm(v[:, None, :2] - lm[None, list(idx), :2], axis=-1) < r).any(1)  # noqa: E731
    region = lambda *names: np.isin(np.arange(len(v)), np.concatenate(  # noqa: E731
        [np.arange(len(v))[facemodel.region(n)] for n in names]))
    return {
        "eyebrows": near(range(17, 27), 0.015) & region("face"),
        "eyelashes": near(range(36, 48), 0.012) & region("face"),
        "eyes": region("eyeball_left", "eyeball_right"),
        "facial_hair": (v[:, 1] < lm[33, 1] + 0.002) & region("face", "head_neck"),
        "makeup": region("face"),
        "skin_detail": region("face", "head_neck", "eye_socket_left", "eye_socket_right"),
        "specular_variation": np.zeros(len(v), bool),
    }.get(name)


@pytest.mark.facemodel
@pytest.mark.parametrize("name", ELEMENTS)
def test_each_element_changes_the_image_not_the_targets(element_batches, real, name):
    """Targets equal with and without the element; the image changes for the subjects
    that got it and only there; albedo elements change only their vertices (and nothing
    outside the head), geometry elements add coverage away from the inner face."""
    legacy, batch = element_batches["legacy_zoomed" if name == "clothing" else "legacy"], element_batches[name]
    for k in TARGETS:
        assert torch.equal(legacy[k], batch[k]), f"{name} changed the target {k}"
    np.testing.assert_array_equal(legacy["params"].identity, batch["params"].identity)
    np.testing.assert_array_equal(legacy["params"].expression, batch["params"].expression)
    facemodel = real[0]
    lm68 = np.asarray(real[1].landmarks68)
    diff = (legacy["image"] - batch["image"]).abs().amax(1).numpy() > 3 / 255  # (B, S, S)
    subjects = batch["params"].appearance
    drawn = [b for b, a in enumerate(subjects) if getattr(a.style, name) is not None]
    if name == "facial_hair":  # drawn only for masculine-looking subjects
        assert all(subjects[b].style.masculine for b in drawn)
    assert drawn, f"no subject got {name} (seed choice)"
    assert sum(diff[b].sum() for b in drawn) > 10, f"{name}: the images did not change"
    for b in set(range(len(diff))) - set(drawn):
        if name == "hair":  # with the hair element on, bald and buzz-cut scalps take the natural colour too
            continue
        if name == "facial_hair" and legacy["params"].appearance[b].stubble_amount > 0:
            continue  # the element replaces the legacy stubble, also where it draws no facial hair
        assert diff[b].sum() == 0, f"{name}: image {b} changed though the subject did not get it"
    gen = SyntheticFaceGenerator(facemodel, real[1], heads=only(name), renderer="torch")
    old = SyntheticFaceGenerator(facemodel, real[1], heads=HeadConfig.legacy(), renderer="torch")
    allowed = _allowed_vertices(name, facemodel)
    added, inner_share = 0, []
    for b in drawn:
        old_mask, new_mask = legacy["mask"][b].numpy(), batch["mask"][b].numpy()
        if allowed is not None:  # albedo/specular elements: same geometry, own vertices only
            assert np.array_equal(old_mask, new_mask)
            near = cv2.dilate(old_mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            assert (diff[b] & ~near).sum() == 0, f"{name} changed the background"
            a_new = gen.albedo(subjects[b])
            a_old = old.albedo(legacy["params"].appearance[b])
            changed = np.abs(a_new - a_old).max(1) > 1e-5
            assert changed.any() or name == "specular_variation"
            assert not (changed & ~allowed).any(), f"{name} changed {(changed & ~allowed).sum()} vertices elsewhere"
        else:  # hair, clothing: extra geometry
            added += (new_mask & ~old_mask).sum()
            if diff[b].any():
                inner = _region(batch["points2d"][b].numpy()[lm68], range(36, 68), 0)  # eyes, nose, mouth
                inner_share.append((diff[b] & inner).sum() / diff[b].sum())
    if allowed is None:
        assert added > 50, f"{name} adds no coverage"
        assert np.mean(inner_share) < 0.25, f"{name} covers the inner face ({np.mean(inner_share):.2f} of its changes)"
    if name == "specular_variation":
        s_new = gen.subject_mesh(subjects[drawn[0]]).specular
        s_old = old.subject_mesh(legacy["params"].appearance[drawn[0]]).specular
        assert not np.array_equal(s_new, s_old)


@pytest.mark.facemodel
def test_every_element_on_is_deterministic_and_keeps_the_targets(real, element_batches):
    a = _batch(real, HeadConfig(), batch=3, seed=9)
    b = _batch(real, HeadConfig(), batch=3, seed=9)
    assert torch.equal(a["image"], b["image"])
    legacy = _batch(real, HeadConfig.legacy(), batch=3, seed=9)
    for k in TARGETS:
        assert torch.equal(a[k], legacy[k]), k
    assert not torch.equal(a["image"], legacy["image"])


@pytest.fixture(scope="module")
def gl():
    ok, why = render_gl.gl_available()
    if not ok:
        pytest.skip(f"no headless OpenGL: {why} (install libegl1 libgl1-mesa-dri libegl-mesa0, see .ci/run)")
    return render_gl.gl_renderer()


@pytest.mark.facemodel
@pytest.mark.parametrize("size", (128, 256))
def test_gl_and_torch_agree_on_hair_and_torso(gl, real, size):
    gen = SyntheticFaceGenerator(*real, heads=HeadConfig(hair=1.0, clothing=1.0), renderer="torch")
    rng = np.random.default_rng(21)
    params = gen.sample_params(rng, 4)
    meshes = [gen.subject_mesh(a) for a in params.appearance]
    verts = gen.dressed_vertices(gen._recess_eyeballs(gen.head_vertices(params.identity, params.expression)), meshes)
    assert verts.shape[1] > gen.faces.max() + 1  # the hair and torso are there
    # Zoomed out so that hair and shoulders are in the picture.
    K = crop_projection(np.array([[size / 800 * 0.8, 0, size * 0.1], [0, size / 800 * 0.8, size * 0.1]]), gen.K)
    K = torch.as_tensor(np.broadcast_to(K, (4, 3, 3)), dtype=torch.float32)
    R_t = torch.as_tensor(params.R_t)
    albedo = torch.as_tensor(np.stack([m.albedo for m in meshes]))
    shading = dict(specular_mask=torch.as_tensor(np.stack([m.specular for m in meshes])),
                   occlusion=torch.as_tensor(np.stack([m.occlusion for m in meshes])))
    light = sample_lighting(rng, 4)
    ref = render_mesh(verts, gen.render_faces, R_t, K, (size, size), albedo, light, **shading)
    img = gl.render_mesh(verts, gen.render_faces, R_t, K, (size, size), albedo, light, **shading)
    used = gen.faces.max() + 1
    head_only = render_mesh(verts[:, :used], gen.faces, R_t, K, (size, size), albedo[:, :used], light)
    assert (ref.mask & ~head_only.mask).sum() > 0.01 * ref.mask.sum()  # hair/torso cover pixels
    iou = (img.mask & ref.mask).sum() / (img.mask | ref.mask).sum()
    assert iou >= 0.995, f"{size}px: mask IoU {iou:.4f}"
    both = img.mask & ref.mask
    diff = (img.image - ref.image)[both].abs()
    assert (diff > 2 / 255).float().mean() < 5e-3, f"{size}px: {(diff > 2 / 255).float().mean():.2e} differ"

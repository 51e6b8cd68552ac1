"""FaceModel: loading, evaluation in numpy and torch, regions, the procedural head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jmlr.facemodel import FaceModel, FaceModelNotFound, make_procedural_head
from jmlr.facemodel.build import EXPRESSION_NAMES, REGIONS
from jmlr.facemodel.model import NPZ_KEYS
from jmlr.facemodel.topology import IBUG68_FLIP, mirror_pairs


@pytest.fixture(scope="module")
def head_path(tmp_path_factory):
    return make_procedural_head(tmp_path_factory.mktemp("head") / "head.npz")


@pytest.fixture(scope="module")
def head(head_path) -> FaceModel:
    return FaceModel.load(head_path)


def test_missing_model_message(tmp_path, monkeypatch):
    monkeypatch.setenv("JMLR_FACEMODEL", str(tmp_path / "nope.npz"))
    with pytest.raises(FaceModelNotFound) as info:
        FaceModel.load()
    msg = str(info.value)
    assert "nope.npz" in msg and "$JMLR_FACEMODEL" in msg and "jmlr facemodel build" in msg


def test_default_path_from_env(head_path, monkeypatch):
    monkeypatch.setenv("JMLR_FACEMODEL", str(head_path))
    assert FaceModel.load().num_vertices == FaceModel.load(head_path).num_vertices


def test_procedural_head_format(head_path, head):
    with np.load(head_path) as d:
        assert set(d.files) == set(NPZ_KEYS)
        assert d["neutral"].dtype == np.float32
        assert d["identity_basis"].dtype == np.float16 and d["expression_basis"].dtype == np.float16
        assert d["quads"].dtype == np.int32 and d["face_material"].dtype == np.int16
    assert 300 <= head.num_vertices <= 2000
    assert head.expression_names == EXPRESSION_NAMES
    assert head.region_names == tuple(r[0] for r in REGIONS)
    # regions tile the vertices like the real model's: face, then the rest in order
    assert head.region("narrow_face").start == 0 and head.region("narrow_face").stop < head.region("face").stop
    assert head.region("iris_right").stop == head.num_vertices
    assert head.region("eyeball_left") == slice(head.region("sclera_left").start, head.region("iris_left").stop)
    assert head.quads.max() < head.num_vertices and (head.quads_uv < len(head.uv)).all()
    assert ((head.quads[:, 3] == -1) == (head.quads_uv[:, 3] == -1)).all()
    assert head.face_material.max() < len(head.material_names)
    # exact mirror symmetry of the narrow face, and of its landmarks
    narrow = head.neutral[head.region("narrow_face")]
    flip, dist = mirror_pairs(narrow)
    assert dist.max() < 1e-6
    np.testing.assert_array_equal(flip[head.landmarks68], head.landmarks68[IBUG68_FLIP])
    assert len(np.unique(head.landmarks68)) == 68


def test_procedural_expressions_move_where_named(head):
    narrow = head.region("narrow_face")
    x = head.neutral[narrow, 0]
    for name in ("eyeBlink_L", "mouthSmile_L"):
        d = np.linalg.norm(head.expression_basis[head.expression_index(name), narrow].astype(np.float32), axis=1)
        assert d.max() > 0.003
        assert d[x > 0.001].sum() > 10 * d[x < -0.001].sum(), f"{name} moves the subject's left"
    jaw = head.expression_basis[head.expression_index("jawOpen")].astype(np.float32)
    chin = head.landmarks68[8]
    assert jaw[chin, 1] < -0.01  # jaw drops
    assert not head.expression_basis[head.expression_index("browDown_L")].any()


def test_vertices_numpy(head):
    v0 = head.vertices()
    assert v0.shape == (head.num_vertices, 3) and v0.dtype == np.float32
    np.testing.assert_array_equal(v0, head.neutral)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, head.num_identity)).astype(np.float32)
    w = rng.uniform(0, 1, (2, 3, head.num_expressions)).astype(np.float32)
    v = head.vertices(a, w)
    assert v.shape == (2, 3, head.num_vertices, 3)
    ref = (head.neutral + np.einsum("k,kvc->vc", a[1, 2], head.identity_basis.astype(np.float32))
           + np.einsum("e,evc->vc", w[1, 2], head.expression_basis.astype(np.float32)))
    np.testing.assert_allclose(v[1, 2], ref, atol=1e-6)
    # a vertex subset and a prefix of the identity modes
    idx = np.array([5, 0, 17])
    np.testing.assert_allclose(head.vertices(a[0, 0, :2], index=idx),
                               head.vertices(np.r_[a[0, 0, :2], np.zeros(head.num_identity - 2)])[idx], atol=1e-6)
    jaw = head.expression_vector({"jawOpen": 1.0})
    assert not np.allclose(head.vertices(expression=jaw), head.neutral)
    with pytest.raises(ValueError):
        head.vertices(np.zeros(head.num_identity + 1))


def test_vertices_torch_matches_numpy(head):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, head.num_identity)).astype(np.float32)
    w = rng.uniform(0, 1, (4, head.num_expressions)).astype(np.float32)
    idx = np.arange(0, head.num_vertices, 7)
    at = torch.from_numpy(a).requires_grad_(True)
    vt = head.vertices_torch(at, torch.from_numpy(w), index=idx)
    assert vt.shape == (4, len(idx), 3) and vt.dtype == torch.float32
    np.testing.assert_allclose(vt.detach().numpy(), head.vertices(a, w, index=idx), atol=1e-5)
    vt.sum().backward()
    assert at.grad is not None and at.grad.abs().sum() > 0
    # cached per device / index
    assert head.torch_bases("cpu", index=idx) is head.torch_bases("cpu", index=idx)
    assert head.vertices_torch(expression=torch.from_numpy(w)).shape == (4, head.num_vertices, 3)


def test_lookups(head):
    assert head.expression_names[head.expression_index("jawOpen")] == "jawOpen"
    with pytest.raises(KeyError, match="jawOpne"):
        head.expression_index("jawOpne")
    with pytest.raises(KeyError):
        head.region("ears")
    tri = head.triangles()
    assert tri.shape == (2 * (head.quads[:, 3] >= 0).sum() + (head.quads[:, 3] < 0).sum(), 3)


@pytest.mark.facemodel
def test_real_model(facemodel_path):
    m = FaceModel.load(facemodel_path)
    assert m.num_vertices == 24591 and m.num_identity == 100 and m.num_expressions == 53
    assert m.expression_names == EXPRESSION_NAMES
    assert m.region("narrow_face") == slice(0, 6706)
    assert m.identity_basis.dtype == np.float16  # kept compact, cast per use
    narrow = m.neutral[m.region("narrow_face")]
    flip, dist = mirror_pairs(narrow)
    assert dist.max() < 6e-5
    np.testing.assert_array_equal(flip[m.landmarks68], m.landmarks68[IBUG68_FLIP])
    # jawOpen drops the chin by centimetres
    jaw = m.vertices(expression=m.expression_vector({"jawOpen": 1.0}), index=m.landmarks68)
    assert jaw[8, 1] - m.neutral[m.landmarks68[8], 1] < -0.01
    if torch.cuda.is_available():
        v = m.vertices_torch(torch.zeros(2, 100, device="cuda"), torch.zeros(2, 53, device="cuda"))
        np.testing.assert_allclose(v[0].cpu().numpy(), m.neutral, atol=1e-7)

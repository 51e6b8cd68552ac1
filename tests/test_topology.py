"""The face topology: symmetry, manifoldness, orientation, landmarks, files."""

from __future__ import annotations

import numpy as np
import pytest

from jmlr.facemodel import (
    IBUG68_FLIP,
    FaceModel,
    Topology,
    boundary_loops,
    build_topology,
    default_topology_path,
    make_procedural_head,
)


def check_topology(topo: Topology, model: FaceModel) -> None:
    """Every invariant the module docstring promises."""
    n, tri = topo.num_vertices, topo.triangles
    assert topo.ict_index.shape == (n,) and topo.flip_index.shape == (n,)
    assert topo.mean_shape.shape == (n, 3) and topo.landmarks68.shape == (68,)
    assert np.array_equal(np.unique(tri), np.arange(n)), "every vertex is used"
    narrow = model.region("narrow_face")
    assert topo.ict_index.min() >= narrow.start and topo.ict_index.max() < narrow.stop
    np.testing.assert_array_equal(topo.mean_shape, model.neutral[topo.ict_index])

    # symmetry: flip is an involution, the mirrored shape matches, the triangle set too
    flip = topo.flip_index
    assert np.array_equal(flip[flip], np.arange(n))
    mirrored = topo.mirror_vertices(topo.mean_shape)
    assert np.abs(mirrored - topo.mean_shape).max() < 1e-4
    midline = flip == np.arange(n)
    assert np.abs(topo.mean_shape[midline, 0]).max() < 1e-6
    same = {tuple(sorted(t)) for t in tri.tolist()}
    assert {tuple(sorted(t)) for t in flip[tri].tolist()} == same

    # manifold, oriented: every directed edge once; undirected edges used once or twice
    directed = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)
    _, count = np.unique(np.sort(directed, 1), axis=0, return_counts=True)
    assert count.max() <= 2
    # mirrored triangles with winding reversed are the triangles themselves (as cycles)
    def cycles(t):
        r = np.argmin(t, 1)
        return {tuple(t[i, (r[i] + np.arange(3)) % 3]) for i in range(len(t))}
    assert cycles(flip[tri][:, [0, 2, 1]]) == cycles(tri)

    # outer rim + two eyes + mouth, each a simple loop
    loops = boundary_loops(tri)
    assert len(loops) == 4
    assert sum(len(loop) for loop in loops) == int((count == 1).sum())

    # normals point out of the face: +z on average and at the nose tip
    v = topo.mean_shape.astype(np.float64)
    normals = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    assert normals.sum(0)[2] > 0.25 * np.linalg.norm(normals, axis=1).sum()
    nose = topo.landmarks68[30]
    at_nose = normals[(tri == nose).any(1)].sum(0)
    assert at_nose[2] > 0

    # landmarks: exact model vertices, mirror-consistent
    np.testing.assert_array_equal(topo.ict_index[topo.landmarks68], model.landmarks68)
    np.testing.assert_array_equal(flip[topo.landmarks68], topo.landmarks68[IBUG68_FLIP])


# ---------------------------------------------------------------------------- procedural
@pytest.fixture(scope="module")
def procedural_model(tmp_path_factory) -> FaceModel:
    return FaceModel.load(make_procedural_head(tmp_path_factory.mktemp("head") / "head.npz"))


@pytest.mark.parametrize("num_vertices", [200, 401])
def test_procedural_topology(procedural_model, num_vertices):
    topo = build_topology(procedural_model, num_vertices=num_vertices)
    check_topology(topo, procedural_model)
    assert abs(topo.num_vertices - num_vertices) <= 1
    # Euler: a sphere with 4 holes has V - E + F = -2
    e = len(np.unique(np.sort(np.concatenate([topo.triangles[:, [0, 1]], topo.triangles[:, [1, 2]],
                                              topo.triangles[:, [2, 0]]]), 1), axis=0))
    assert topo.num_vertices - e + topo.num_triangles == -2


def test_build_is_deterministic(procedural_model):
    a = build_topology(procedural_model, num_vertices=200)
    b = build_topology(procedural_model, num_vertices=200)
    for key in ("ict_index", "triangles", "flip_index", "landmarks68", "mean_shape"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))


def test_check_catches_a_broken_topology(procedural_model):
    topo = build_topology(procedural_model, num_vertices=200)
    bad = Topology(topo.ict_index, topo.triangles.copy(), topo.flip_index, topo.landmarks68, topo.mean_shape)
    bad.triangles[0] = bad.triangles[0, [0, 2, 1]]  # one flipped triangle
    with pytest.raises(AssertionError):
        check_topology(bad, procedural_model)


def test_npz_and_obj_round_trip(procedural_model, tmp_path):
    topo = build_topology(procedural_model, num_vertices=200)
    back = Topology.load(topo.save(tmp_path / "t.npz"))
    for key in ("ict_index", "triangles", "flip_index", "landmarks68", "mean_shape"):
        np.testing.assert_array_equal(getattr(back, key), getattr(topo, key))
    obj = Topology.from_obj(topo.to_obj(tmp_path / "t.obj"))
    for key in ("ict_index", "triangles", "flip_index", "landmarks68"):
        np.testing.assert_array_equal(getattr(obj, key), getattr(topo, key))
    np.testing.assert_allclose(obj.mean_shape, topo.mean_shape, atol=1e-7)
    shifted = topo.mean_shape + 0.01
    back = Topology.from_obj(topo.to_obj(tmp_path / "s.obj", shifted))
    np.testing.assert_allclose(back.mean_shape, shifted, atol=1e-7)


def test_from_foreign_obj(procedural_model, tmp_path):
    """An OBJ without the jmlr comment lines: flip by mirror matching, ict/landmarks from the model."""
    topo = build_topology(procedural_model, num_vertices=200)
    path = tmp_path / "plain.obj"
    text = topo.to_obj(path).read_text().splitlines()
    path.write_text("\n".join(line for line in text if not line.startswith("# jmlr-topology")) + "\n")
    bare = Topology.from_obj(path)
    np.testing.assert_array_equal(bare.flip_index, topo.flip_index)
    assert (bare.ict_index == -1).all() and (bare.landmarks68 == -1).all()
    full = Topology.from_obj(path, model=procedural_model)
    np.testing.assert_array_equal(full.ict_index, topo.ict_index)
    np.testing.assert_array_equal(full.landmarks68, topo.landmarks68)
    # an asymmetric mesh is refused
    v = topo.mean_shape.copy()
    v[:, 0] += 0.01
    path2 = tmp_path / "asym.obj"
    path2.write_text("\n".join(line for line in topo.to_obj(path2, v).read_text().splitlines()
                               if not line.startswith("# jmlr-topology")))
    with pytest.raises(ValueError, match="symmetric"):
        Topology.from_obj(path2)


# ---------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def real_model(facemodel_path) -> FaceModel:
    return FaceModel.load(facemodel_path)


@pytest.fixture(scope="module")
def real_topology(real_model) -> Topology:
    return build_topology(real_model)


@pytest.mark.facemodel
def test_real_topology(real_model, real_topology):
    topo = real_topology
    check_topology(topo, real_model)
    assert abs(topo.num_vertices - 1220) <= 0.02 * 1220
    assert 2200 <= topo.num_triangles <= 2400
    loops = sorted(len(loop) for loop in boundary_loops(topo.triangles))
    assert loops[0] == loops[1], "the two eyes are mirror images"
    # the model's own rim: outer rim loop spans the narrow face's width
    outer = boundary_loops(topo.triangles)[0]
    assert np.ptp(topo.mean_shape[outer, 0]) > 0.14


@pytest.mark.facemodel
def test_committed_topology_is_a_rebuild(real_topology):
    committed = Topology.load(default_topology_path())
    assert Topology.load().num_vertices == committed.num_vertices
    for key in ("ict_index", "triangles", "flip_index", "landmarks68", "mean_shape"):
        np.testing.assert_array_equal(getattr(committed, key), getattr(real_topology, key), err_msg=key)


def test_committed_topology_file_is_sane():
    """Needs no face model: the shipped file alone is consistent."""
    topo = Topology.load()
    n = topo.num_vertices
    assert abs(n - 1220) <= 0.02 * 1220
    assert np.array_equal(topo.flip_index[topo.flip_index], np.arange(n))
    assert len(boundary_loops(topo.triangles)) == 4
    assert np.abs(topo.mirror_vertices(topo.mean_shape) - topo.mean_shape).max() < 1e-4

"""ARKit blendshapes: name mapping, the box QP, the shipped basis and the fit.

Everything but the last test runs without the face model: the shipped basis is the
model restricted to the default topology, so it can generate test meshes itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import lsq_linear

from jmlr.facemodel import Topology
from jmlr.facemodel.blendshapes import (
    ARKIT_BLENDSHAPE_NAMES,
    BlendshapeBasis,
    BlendshapeSolver,
    arkit_mapping,
    default_blendshape_basis_path,
    fit_blendshapes,
)
from jmlr.facemodel.boxqp import box_qp
from jmlr.geometry.rotation import rotvec_to_matrix


@pytest.fixture(scope="module")
def basis() -> BlendshapeBasis:
    return BlendshapeBasis.load()


@pytest.fixture(scope="module")
def solver(basis) -> BlendshapeSolver:
    return BlendshapeSolver(basis, noise_m=1e-4, l2=1e-8, l1=1e-8)


def _faces(basis: BlendshapeBasis, n: int, seed: int = 0):
    """n meshes with N(0, 1) identities and sparse expressions (2-6 weights in [0.2, 1])."""
    rng = np.random.default_rng(seed)
    ident = rng.standard_normal((n, len(basis.identity)))
    expr = np.zeros((n, len(basis.expression)))
    for i in range(n):
        k = rng.integers(2, 7)
        expr[i, rng.choice(expr.shape[1], k, replace=False)] = rng.uniform(0.2, 1.0, k)
    V = (basis.neutral[None] + np.einsum("bk,knc->bnc", ident, basis.identity)
         + np.einsum("be,enc->bnc", expr, basis.expression))
    return V, expr


# ----------------------------------------------------------------------------- names


def test_arkit_mapping_of_the_ict_names(basis):
    names, M = arkit_mapping(basis.expression_names)
    assert len(basis.expression_names) == 53
    assert set(names) == set(ARKIT_BLENDSHAPE_NAMES) - {"tongueOut"}  # ICT-FaceKit has no tongue
    assert M.shape == (51, 53)
    col = {n: i for i, n in enumerate(basis.expression_names)}
    row = {n: i for i, n in enumerate(names)}
    assert M[row["eyeBlinkLeft"], col["eyeBlink_L"]] == 1.0
    assert M[row["jawOpen"], col["jawOpen"]] == 1.0
    for split in ("browInnerUp", "cheekPuff"):  # one ARKit shape = the mean of ICT's halves
        assert M[row[split], col[f"{split}_L"]] == M[row[split], col[f"{split}_R"]] == 0.5
    assert np.allclose(M.sum(1), 1.0) and np.all((M > 0).sum(0) == 1)  # every ICT shape used once


def test_arkit_mapping_drops_unknown_names():
    names, M = arkit_mapping(["jawOpen", "somethingElse", "eyeBlink_R"])
    assert names == ("eyeBlinkRight", "jawOpen")
    assert M.tolist() == [[0, 0, 1], [1, 0, 0]]


# ----------------------------------------------------------------------------- box QP


def test_box_qp_matches_bvls():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((80, 20)) @ np.diag(np.logspace(0, -2, 20))  # ill-conditioned
    y = rng.standard_normal((16, 80))
    lo, hi = np.full(20, -0.5), np.full(20, 0.7)
    lo[:3] = -np.inf  # free variables too
    x = box_qp(A.T @ A, y @ A, lo, hi)
    for b in range(16):
        ref = lsq_linear(A, y[b], bounds=(lo, hi), method="bvls", tol=1e-12).x
        assert np.allclose(x[b], ref, atol=1e-6), b
    assert np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12)
    assert np.isclose(x[:, 3:], hi[3:]).any() and np.isclose(x[:, 3:], lo[3:]).any()  # bounds were active


def test_box_qp_single_and_interior():
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    g = np.array([0.3, 0.2])
    assert np.allclose(box_qp(H, g, -10, 10), np.linalg.solve(H, g))
    assert box_qp(H, g).shape == (2,)
    with pytest.raises(ValueError):
        box_qp(H, g, 1.0, 0.0)


# ----------------------------------------------------------------------------- the shipped basis


def test_shipped_basis_matches_the_default_topology(basis):
    topo = Topology.load()
    assert default_blendshape_basis_path().is_file()
    assert np.array_equal(basis.ict_index, topo.ict_index)
    assert np.allclose(basis.neutral, topo.mean_shape, atol=1e-6)
    assert basis.identity.shape == (100, topo.num_vertices, 3)
    assert basis.expression.shape == (53, topo.num_vertices, 3)


def test_for_topology_reorders_and_refuses_other_models(basis):
    topo = Topology.load()
    perm = np.random.default_rng(2).permutation(topo.num_vertices)[:300]
    sub = Topology(topo.ict_index[perm], topo.triangles[:0], np.arange(300), np.zeros(68, np.int64),
                   topo.mean_shape[perm])
    b = basis.for_topology(sub)
    assert np.array_equal(b.ict_index, topo.ict_index[perm])
    assert np.array_equal(b.expression, basis.expression[:, perm])
    other = Topology(sub.ict_index, sub.triangles, sub.flip_index, sub.landmarks68, sub.mean_shape + 0.01)
    with pytest.raises(ValueError, match="mean shape"):
        basis.for_topology(other)
    missing = Topology(np.array([10**7]), sub.triangles, np.zeros(1, np.int64), sub.landmarks68, sub.mean_shape[:1])
    with pytest.raises(ValueError, match="not in the blendshape basis"):
        basis.for_topology(missing)


def test_save_load_roundtrip(basis, tmp_path):
    small = BlendshapeBasis(basis.ict_index[:50], basis.neutral[:50], basis.identity[:4, :50],
                            basis.expression[:, :50], basis.expression_names)
    back = BlendshapeBasis.load(small.save(tmp_path / "b.npz"))
    assert back.expression_names == small.expression_names
    assert np.array_equal(back.ict_index, small.ict_index)
    assert np.allclose(back.expression, small.expression, atol=1e-4)  # float16 on disk


# ----------------------------------------------------------------------------- the fit


def test_fit_recovers_known_weights(basis, solver):
    V, expr = _faces(basis, 24)
    fit = solver(V.astype(np.float32))
    assert fit.expression.shape == (24, 53) and fit.arkit.shape == (24, 51)
    assert np.abs(fit.expression - expr).max() < 0.02
    assert np.all((fit.arkit >= 0) & (fit.arkit <= 1))
    _, M = arkit_mapping(basis.expression_names)
    assert np.allclose(fit.arkit, np.clip(fit.expression @ M.T, 0, 1))
    assert fit.rms_m.max() < 1e-5
    one = solver(V[0])
    assert one.expression.shape == (53,) and np.allclose(one.expression, fit.expression[0], atol=1e-6)


def test_fit_absorbs_a_small_similarity(basis, solver):
    V, expr = _faces(basis, 8, seed=3)
    R = rotvec_to_matrix(np.deg2rad([1.0, -1.0, 0.5]))
    moved = 1.01 * V @ R.T + np.array([0.003, -0.002, 0.003])
    fit = solver(moved)
    assert np.abs(fit.expression - expr).mean() < 0.01
    assert np.allclose(fit.rigid[:, 6], np.log(1.01), atol=0.005)
    no_rigid = BlendshapeSolver(basis, noise_m=1e-4, l2=1e-8, l1=1e-8, rigid=False)(moved)
    assert np.abs(no_rigid.expression - expr).mean() > 3 * np.abs(fit.expression - expr).mean()


def test_sparsity_keeps_noise_out_of_the_weights(basis):
    # 2 mm of vertex noise on a neutral face: as large as the smallest shapes (eyeLook*),
    # so without the l1 penalty the fit explains noise with expressions.
    rng = np.random.default_rng(4)
    V = basis.neutral[None] + rng.normal(0, 2e-3, (16,) + basis.neutral.shape)
    loose = fit_blendshapes(V, basis, noise_m=2e-3, l1=1e-7)
    sparse = fit_blendshapes(V, basis, noise_m=2e-3, l1=1e-4)
    assert sparse.arkit.mean() < 0.01 < 0.05 < loose.arkit.mean()


def test_fit_rejects_wrong_shapes(solver):
    with pytest.raises(ValueError, match="vertices must be"):
        solver(np.zeros((2, 100, 3)))


@pytest.mark.facemodel
def test_shipped_basis_is_what_the_face_model_gives(facemodel_path, basis):
    from jmlr.facemodel import FaceModel

    rebuilt = BlendshapeBasis.from_facemodel(FaceModel.load(facemodel_path), Topology.load())
    assert rebuilt.expression_names == basis.expression_names
    assert np.array_equal(rebuilt.ict_index, basis.ict_index)
    assert np.abs(rebuilt.expression - basis.expression).max() < 1e-6  # the model stores float16 too
    assert np.abs(rebuilt.identity - basis.identity).max() < 1e-6


@pytest.mark.facemodel
def test_cli_rebuilds_the_shipped_file_byte_for_byte(facemodel_path, tmp_path):
    from jmlr.cli import main

    out = tmp_path / "basis.npz"
    assert main(["facemodel", "blendshapes", "--facemodel", str(facemodel_path), "--out", str(out)]) == 0
    assert out.read_bytes() == default_blendshape_basis_path().read_bytes()


def test_cli_without_a_face_model_says_how_to_get_one(tmp_path, capsys):
    from jmlr.cli import main

    assert main(["facemodel", "blendshapes", "--facemodel", str(tmp_path / "missing.npz"),
                 "--out", str(tmp_path / "b.npz")]) == 1
    assert "jmlr facemodel build" in capsys.readouterr().err
    assert not (tmp_path / "b.npz").exists()


def test_points_carry_the_expression_a_flat_mesh_lacks(basis):
    """A network that gets the 2D points right but the mesh's expression wrong (here: none
    at all): the 3D fit reads nothing, the 2D + 3D fit reads the weights from the points."""
    from jmlr.geometry.rotation import euler_to_matrix

    V, expr = _faces(basis, 6, seed=7)
    flat = V - np.einsum("be,enc->bnc", expr, basis.expression)  # the same faces, expression removed
    solver = BlendshapeSolver(basis, noise_m=8e-3, l1=1e-5)
    K = np.array([[900.0, 0.0, 320.0], [0.0, 900.0, 240.0], [0.0, 0.0, 1.0]])
    errs_3d, errs_2d = [], []
    for b in range(len(V)):
        R_cv = np.diag([1.0, -1.0, -1.0]) @ euler_to_matrix(15.0 * (b - 2), 5.0 * (b % 3 - 1), 3.0)
        t_cv = np.array([0.03 * (b - 2), 0.01, 0.45 + 0.05 * b]) - R_cv @ V[b].mean(0)
        cam = V[b] @ R_cv.T + t_cv
        points = cam[:, :2] / cam[:, 2:] @ K[:2, :2].T + K[:2, 2]
        both = solver.fit_with_points(flat[b], points, R_cv, t_cv, K, points_weight=64.0)
        assert both.expression.shape == (53,) and np.all((both.arkit >= 0) & (both.arkit <= 1))
        errs_2d.append(np.abs(both.expression - expr[b])[expr[b] > 0].mean())
        errs_3d.append(np.abs(solver(flat[b], details=False).expression - expr[b])[expr[b] > 0].mean())
    assert np.mean(errs_3d) > 0.4  # the flat mesh says nothing
    assert np.mean(errs_2d) < 0.5 * np.mean(errs_3d), (errs_2d, errs_3d)
    # weight 0 is the 3D fit; a batch gives the rows of single calls
    zero = solver.fit_with_points(flat[:2], np.zeros((2, basis.num_vertices, 2)), np.stack([np.eye(3)] * 2),
                                  np.array([[0, 0, 1.0]] * 2), K, points_weight=0.0)
    assert np.allclose(zero.expression, solver(flat[:2], details=False).expression)

"""`jmlr facemodel build`: ICT-FaceKit OBJs -> npz, on a tiny fake ICT-FaceKit clone."""

from __future__ import annotations

import numpy as np
import pytest

from jmlr.cli import main
from jmlr.facemodel import FaceModel
from jmlr.facemodel.build import build_facemodel, read_obj

NEUTRAL_CM = np.array([[0, 0, 10], [1, 0, 10], [1, 1, 10], [0, 1, 10], [2, 0, 9], [5, 5, 5]], float)
# the last vertex stands for ICT's extra shells past the kept vertices (dropped)
KEPT = 5
REGIONS = (("face", 0, 4), ("narrow_face", 0, 3))


def write_obj(path, verts, with_faces=False):
    lines = [f"v {x} {y} {z}" for x, y, z in verts]
    if with_faces:
        lines += ["vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1", "vt 0.5 0.5",
                  "usemtl M_Face", "f 1/1/1 2/2/1 3/3/1 4/4/1",
                  "usemtl M_BackHead", "f 2/2 5/5 3/3",
                  "usemtl M_EyeLashes", "f 5/5 6/1 3/3",
                  "usemtl M_Face", "f -3/2 -1/5 -4/3"]  # negative (relative) indices
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def fake_ict(tmp_path):
    root = tmp_path / "ICT-FaceKit"
    fx = root / "FaceXModel"
    fx.mkdir(parents=True)
    write_obj(fx / "generic_neutral_mesh.obj", NEUTRAL_CM, with_faces=True)
    for k in range(2):
        v = NEUTRAL_CM.copy()
        v[:, 0] *= 1 + 0.1 * (k + 1)  # widen: x grows by 10 % / 20 %
        write_obj(fx / f"identity{k:03d}.obj", v)
    write_obj(fx / "jawOpen.obj", NEUTRAL_CM + [0, -2, 0])
    write_obj(fx / "eyeBlink_L.obj", NEUTRAL_CM + [0, 0, 0.5])
    return root


def test_read_obj(fake_ict):
    mesh = read_obj(fake_ict / "FaceXModel" / "generic_neutral_mesh.obj")
    assert mesh["vertices"].shape == (6, 3)
    assert mesh["material_names"] == ["M_Face", "M_BackHead", "M_EyeLashes"]
    np.testing.assert_array_equal(mesh["quads"][:2], [[0, 1, 2, 3], [1, 4, 2, -1]])
    np.testing.assert_array_equal(mesh["quads"][3], [3, 5, 2, -1])
    np.testing.assert_array_equal(mesh["quads_uv"][1], [1, 4, 2, -1])
    np.testing.assert_array_equal(mesh["face_material"], [0, 1, 2, 0])


def test_build_converts_units_deltas_and_layout(fake_ict, tmp_path):
    out = build_facemodel(fake_ict, tmp_path / "m.npz", num_identity=2, num_vertices=KEPT,
                          expression_names=("jawOpen", "eyeBlink_L"), regions=REGIONS,
                          landmarks68=tuple(range(68)))
    with np.load(out) as d:
        assert d["neutral"].dtype == np.float32 and d["neutral"].shape == (KEPT, 3)
        np.testing.assert_allclose(d["neutral"], NEUTRAL_CM[:KEPT] / 100)  # cm -> m
        assert d["identity_basis"].dtype == np.float16 and d["identity_basis"].shape == (2, KEPT, 3)
        assert d["expression_basis"].dtype == np.float16 and d["expression_basis"].shape == (2, KEPT, 3)
        # deltas from the neutral, in metres
        np.testing.assert_allclose(d["identity_basis"][1, :, 0], 0.2 * NEUTRAL_CM[:KEPT, 0] / 100, atol=1e-5)
        assert not d["identity_basis"][:, :, 1:].any()
        np.testing.assert_allclose(d["expression_basis"][0], np.tile([0, -0.02, 0], (KEPT, 1)), atol=1e-5)
        np.testing.assert_allclose(d["expression_basis"][1], np.tile([0, 0, 0.005], (KEPT, 1)), atol=1e-5)
        assert list(d["expression_names"]) == ["jawOpen", "eyeBlink_L"]
        # polygons using dropped vertices go, the others keep their material and UVs
        assert d["quads"].dtype == np.int32 and d["quads"].shape == (2, 4)
        np.testing.assert_array_equal(d["quads"], [[0, 1, 2, 3], [1, 4, 2, -1]])
        np.testing.assert_array_equal(d["quads_uv"], [[0, 1, 2, 3], [1, 4, 2, -1]])
        assert d["face_material"].dtype == np.int16
        np.testing.assert_array_equal(d["face_material"], [0, 1])
        assert list(d["material_names"]) == ["M_Face", "M_BackHead", "M_EyeLashes"]
        assert d["uv"].dtype == np.float32 and d["uv"].shape == (5, 2)
        np.testing.assert_array_equal(d["region_ranges"], [[0, 4], [0, 3]])
        assert d["landmarks68"].dtype == np.int32
    m = FaceModel.load(out)
    assert m.region("narrow_face") == slice(0, 4)
    v = m.vertices(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    np.testing.assert_allclose(v[1], [0.012, -0.02, 0.1], atol=1e-5)


def test_build_cli_and_errors(fake_ict, tmp_path, capsys):
    # the default layout wants 100 identities and 53 expressions: a clear error
    assert main(["facemodel", "build", str(fake_ict), "--out", str(tmp_path / "x.npz"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "missing" in err and "identity002.obj" in err
    assert main(["facemodel", "build", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 1
    assert "generic_neutral_mesh.obj" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()

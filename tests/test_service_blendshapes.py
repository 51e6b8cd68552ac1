"""``include=blendshapes``: ARKit weights per face, through the HTTP service.

A tiny random model (default topology) carries the plumbing; the fit itself is checked
on meshes with known weights through the same estimator the engine uses.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from jmlr.facemodel import FaceModel, Topology, build_topology, make_procedural_head  # noqa: E402
from jmlr.facemodel.blendshapes import ARKIT_BLENDSHAPE_NAMES, BlendshapeBasis, soft_threshold  # noqa: E402
from jmlr.store import make_random_model  # noqa: E402
from service.app import create_app  # noqa: E402
from service.blendshapes import DEFAULT_HEAD_THRESHOLDS, BlendshapeEstimator  # noqa: E402
from service.settings import Settings  # noqa: E402


def _settings(store: Path, data_dir: Path) -> Settings:
    return Settings(model_store=store, data_dir=data_dir, device="cpu", max_upload_bytes=3_000_000,
                    max_image_pixels=4_000_000)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    make_random_model(arch="jmlr_resnet18d", input_size=64, name="tiny", store_dir=store, set_default=True)
    with TestClient(create_app(_settings(store, tmp_path_factory.mktemp("var")))) as c:
        yield c


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _post(c, data: bytes, **form):
    return c.post("/reconstruct", files={"image": ("img.jpg", data, "image/jpeg")}, data=form)


def test_blendshapes_on_request(client, astronaut_jpeg):
    r = _post(client, astronaut_jpeg, include="blendshapes,landmarks_2d")
    assert r.status_code == 200, r.text
    body = r.json()
    (face,) = body["faces"]
    shapes = face["blendshapes"]
    assert list(shapes) == [n for n in ARKIT_BLENDSHAPE_NAMES if n != "tongueOut"]
    assert all(0.0 <= v <= 1.0 for v in shapes.values())
    assert "blendshapes" in body["timings_ms"]
    plain = _post(client, astronaut_jpeg).json()
    assert "blendshapes" not in plain["faces"][0]  # only when asked for


def test_no_face_no_blendshapes(client):
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, "JPEG")
    r = _post(client, buf.getvalue(), include="blendshapes")
    assert r.status_code == 200 and r.json()["faces"] == []


def test_openapi_documents_blendshapes(client):
    spec = client.get("/openapi.json").json()
    face = spec["components"]["schemas"]["FaceOut"]["properties"]
    assert "blendshapes" in face and "tongueOut" in face["blendshapes"]["description"]
    form = spec["paths"]["/reconstruct"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    include = spec["components"]["schemas"][form.rsplit("/", 1)[1]]["properties"]["include"]
    assert "blendshapes" in json.dumps(include)


def test_estimator_reads_known_weights():
    topo = Topology.load()
    basis = BlendshapeBasis.load()
    names = basis.expression_names
    est = BlendshapeEstimator(topo)
    w = np.zeros((2, len(names)))
    w[0, names.index("jawOpen")] = 0.8
    w[1, names.index("eyeBlink_L")] = 1.0
    w[1, names.index("browInnerUp_L")] = w[1, names.index("browInnerUp_R")] = 0.6
    V = basis.neutral[None] + np.einsum("be,enc->bnc", w, basis.expression)
    faces = [SimpleNamespace(blendshapes=None), SimpleNamespace(blendshapes=None)]
    assert est.source == "fit"
    assert est.annotate(faces, [SimpleNamespace(vertices=v, expression=None) for v in V]) == []
    assert faces[0].blendshapes["jawOpen"] == pytest.approx(0.8, abs=0.05)
    assert faces[1].blendshapes["eyeBlinkLeft"] == pytest.approx(1.0, abs=0.05)
    assert faces[1].blendshapes["browInnerUp"] == pytest.approx(0.6, abs=0.05)
    assert faces[1].blendshapes["eyeBlinkRight"] < 0.05


def test_estimator_serves_an_expression_head_as_arkit_names():
    """A model with an expression head: its weights are renamed, the split halves
    averaged, and no fit runs (the mesh here says nothing of the expression)."""
    names = BlendshapeBasis.load().expression_names
    est = BlendshapeEstimator(Topology.load(), names)
    assert est.source == "head" and len(est.names) == 51 and "tongueOut" not in est.names
    w = np.zeros(len(names))
    w[names.index("jawOpen")] = 0.8
    w[names.index("browInnerUp_L")], w[names.index("browInnerUp_R")] = 0.6, 0.2
    rec = SimpleNamespace(vertices=Topology.load().mean_shape, expression=w)
    face = SimpleNamespace(blendshapes=None)
    assert est.annotate([face], [rec]) == []
    # each through its group's threshold: a brow weight as large as a jaw one may count for less
    expect = soft_threshold(np.array([0.8, 0.4]),
                            np.array([DEFAULT_HEAD_THRESHOLDS["jaw"], DEFAULT_HEAD_THRESHOLDS["brows"]]))
    assert [face.blendshapes["jawOpen"], face.blendshapes["browInnerUp"]] == pytest.approx(expect, abs=1e-4)
    assert face.blendshapes["eyeBlinkLeft"] == 0.0 and len(face.blendshapes) == 51
    # A head that gave nothing is said, not filled in by a guess.
    face = SimpleNamespace(blendshapes=None)
    assert "expression head" in est.annotate([face], [SimpleNamespace(vertices=rec.vertices, expression=None)])[0]
    assert face.blendshapes is None


def test_estimator_takes_the_thresholds_stored_with_the_model():
    names = BlendshapeBasis.load().expression_names
    est = BlendshapeEstimator(Topology.load(), names, {"jaw": 0.5, "brows": 0.2})
    assert est.head_thresholds == {"jaw": 0.5, "brows": 0.2}
    w = np.zeros(len(names))
    w[names.index("jawOpen")], w[names.index("mouthClose")] = 0.7, 0.3
    face = SimpleNamespace(blendshapes=None)
    est.annotate([face], [SimpleNamespace(vertices=None, expression=w)])
    assert face.blendshapes["jawOpen"] == pytest.approx(0.4, abs=1e-4)  # (0.7 - 0.5) / (1 - 0.5)
    # a group the model's thresholds leave out gets the largest of them, not a guess of 0
    assert face.blendshapes["mouthClose"] == 0.0


def test_other_topology_warns_instead_of_failing(tmp_path, astronaut_jpeg):
    # A model on another face model's topology: no basis covers it, the rest still works.
    head = make_procedural_head(tmp_path / "head.npz")
    topo_path = build_topology(FaceModel.load(head), num_vertices=300).save(tmp_path / "topology.npz")
    est = BlendshapeEstimator(Topology.load(topo_path))
    assert est.solver is None and "no blendshape basis" in est.error
    store = tmp_path / "store"
    make_random_model(arch="jmlr_resnet18d", input_size=64, name="other", store_dir=store,
                      topology_path=topo_path, set_default=True)
    with TestClient(create_app(_settings(store, tmp_path / "var"))) as c:
        r = _post(c, astronaut_jpeg, include="blendshapes")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["faces"] and "blendshapes" not in body["faces"][0]
    assert any("blendshapes were not computed" in w for w in body["warnings"])


def test_a_model_with_an_expression_head_answers_with_its_weights(tmp_path, astronaut_jpeg):
    """The service serves the head's weights (model.blendshapes 'head'): a head whose
    output is a fixed expression (weights 0, bias = the expression) must come back as it."""
    import torch

    from jmlr.models import create_model
    from jmlr.store import export_model, load_model, write_head_thresholds

    store = tmp_path / "store"
    make_random_model(arch="jmlr_resnet18d", input_size=64, name="plain", store_dir=store)
    plain = load_model(store / "plain")
    names = list(BlendshapeBasis.load().expression_names)
    net = create_model(dict(plain.net.config, expression_names=names), plain.num_vertices, 64)
    net.load_state_dict(plain.net.state_dict(), strict=False)
    with torch.no_grad():
        net.expression_fc.weight.zero_()
        net.expression_fc.bias.zero_()
        net.expression_fc.bias[names.index("jawOpen")] = 0.7
        net.expression_fc.bias[names.index("mouthSmile_R")] = 1.6  # served clamped
    out = export_model(net, net.config, plain.path / plain.manifest["files"]["topology"], store, "expr",
                       dtype=torch.float32)
    # thresholds chosen for these weights travel in the manifest (the defaults would give 0.67)
    write_head_thresholds(out, {**DEFAULT_HEAD_THRESHOLDS, "jaw": 0.3}, "a test")
    settings = _settings(store, tmp_path / "var").model_copy(update={"model_name": "expr"})
    with TestClient(create_app(settings)) as c:
        r = _post(c, astronaut_jpeg, include="blendshapes")
        # In a session the mesh is smoothed; the head's weights are the frame's own.
        tracked = [_post(c, astronaut_jpeg, include="blendshapes", session_id="video") for _ in range(2)][-1]
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "expr" and body["model"]["blendshapes"] == "head"
    shapes = body["faces"][0]["blendshapes"]
    jaw = float(soft_threshold(np.array(0.7), 0.3))
    assert shapes["jawOpen"] == pytest.approx(jaw, abs=1e-4) and shapes["mouthSmileRight"] == 1.0
    assert shapes["eyeBlinkLeft"] == 0.0 and len(shapes) == 51
    assert tracked.status_code == 200, tracked.text
    assert tracked.json()["session"]["status"] != "started"
    assert tracked.json()["faces"][0]["blendshapes"]["jawOpen"] == pytest.approx(jaw, abs=1e-4)

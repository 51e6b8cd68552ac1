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
from jmlr.facemodel.blendshapes import ARKIT_BLENDSHAPE_NAMES, BlendshapeBasis  # noqa: E402
from jmlr.store import make_random_model  # noqa: E402
from service.app import create_app  # noqa: E402
from service.blendshapes import BlendshapeEstimator  # noqa: E402
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
    assert est.annotate(faces, V) == []
    assert faces[0].blendshapes["jawOpen"] == pytest.approx(0.8, abs=0.05)
    assert faces[1].blendshapes["eyeBlinkLeft"] == pytest.approx(1.0, abs=0.05)
    assert faces[1].blendshapes["browInnerUp"] == pytest.approx(0.6, abs=0.05)
    assert faces[1].blendshapes["eyeBlinkRight"] < 0.05


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

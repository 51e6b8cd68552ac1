"""The HTTP service end to end on a tiny random model (input 64, resnet18d).

The model is exported into a temporary store so these tests do not depend on which
model ships; its weights are random, so only shapes, conventions and plumbing are
checked here, not accuracy.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from jmlr.inference.landmarks import contour_landmarks_68  # noqa: E402
from jmlr.store import load_model, make_random_model  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

API_KEY = "test-key"
# Where CenterFace puts the astronaut's eyes, nose and mouth corners (see test_detect.py).
ASTRONAUT_LM5 = [[203.3, 101.3], [247.2, 104.5], [223.1, 125.0], [203.4, 142.4], [241.0, 144.9]]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("store")
    make_random_model(arch="jmlr_resnet18d", input_size=64, name="tiny", store_dir=d, set_default=True)
    return d


@pytest.fixture(scope="module")
def topology(store):
    return load_model(store / "tiny", "cpu").topology


def _settings(store: Path, data_dir: Path, **kw) -> Settings:
    base = dict(model_store=store, data_dir=data_dir, device="cpu", api_keys=[API_KEY],
                max_upload_bytes=3_000_000, max_image_pixels=4_000_000)
    base.update(kw)
    return Settings(**base)


@pytest.fixture(scope="module")
def client(store, tmp_path_factory):
    app = create_app(_settings(store, tmp_path_factory.mktemp("var")))
    with TestClient(app) as c:
        yield c


def _jpeg(rgb: np.ndarray, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90, exif=exif.tobytes() if exif is not None else b"")
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    return _jpeg(skimage_data.astronaut())


def _post(c, data: bytes, ctype: str = "image/jpeg", headers=None, **form):
    # POST /reconstruct stores meshes, so it needs the key like every write route.
    headers = {"X-API-Key": API_KEY} if headers is None else headers
    return c.post("/reconstruct", files={"image": ("img", data, ctype)}, data=form, headers=headers)


def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


# ----------------------------------------------------------------------------- basics


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["model"]["name"] == "tiny"


def test_astronaut_detected_and_reconstructed(client, astronaut_jpeg, topology):
    r = _post(client, astronaut_jpeg)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 512, "height": 512, "format": "JPEG"}
    assert body["camera"]["source"] == "default_fov" and body["warnings"]
    assert body["model"]["num_vertices"] == topology.num_vertices
    assert set(body["timings_ms"]) >= {"decode", "detect", "crop", "infer", "pnp", "store", "total"}
    (face,) = body["faces"]
    x0, y0, x1, y1 = face["bbox"]
    assert 170 <= (x0 + x1) / 2 <= 260 and 60 <= (y0 + y1) / 2 <= 160
    assert face["source"] == "detector" and face["score"] > 0.5
    assert len(face["landmarks_68"]) == 68
    assert "vertices" not in face  # only on request
    # The mesh is stored and downloadable in every format.
    for fmt in ("glb", "obj", "ply"):
        url = face["mesh_urls"][fmt]
        assert url.endswith(f"/mesh/{face['mesh_id']}.{fmt}")
        d = client.get(url)
        assert d.status_code == 200 and len(d.content) > 1000, fmt
    info = client.get(f"/mesh/{face['mesh_id']}").json()
    assert info["num_vertices"] == topology.num_vertices


def test_client_landmarks_shapes_and_conventions(client, topology):
    # A plain image: the crop is whatever the landmarks say; the model runs regardless.
    rgb = np.full((480, 640, 3), 90, np.uint8)
    lm5 = np.array([[280, 200], [360, 200], [320, 250], [290, 300], [350, 300]], float)
    cam = {"fx": 1000.0, "fy": 1000.0, "cx": 639.5, "cy": 479.5, "width": 1280, "height": 960}
    r = _post(client, _jpeg(rgb), camera=json.dumps(cam), faces=json.dumps([{"landmarks5": lm5.tolist()}]),
              include="vertices,vertices_camera,landmarks_2d,landmarks_68", flip_tta="true")
    assert r.status_code == 200, r.text
    body = r.json()
    cam_out = body["camera"]
    assert cam_out["source"] == "request"
    K = np.array(cam_out["K"])
    np.testing.assert_allclose(K, [[500, 0, 319.5], [0, 500, 239.5], [0, 0, 1]], atol=1e-6)
    (face,) = body["faces"]
    assert face["source"] == "client_landmarks" and face["score"] is None
    np.testing.assert_allclose(face["landmarks5"], lm5)
    N = topology.num_vertices
    V = np.array(face["vertices"])
    Vc = np.array(face["vertices_camera"])
    p2 = np.array(face["landmarks_2d"])
    assert V.shape == (N, 3) and Vc.shape == (N, 3) and p2.shape == (N, 2)
    pose = face["pose"]
    R, t = np.array(pose["rotation"]), np.array(pose["translation"])
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.array(pose["matrix"]), np.block([[R, t[:, None]], [np.zeros((1, 3)), 1]]), atol=1e-6)
    np.testing.assert_allclose(cv2.Rodrigues(np.array(pose["rotation_vector"]))[0], R, atol=1e-5)
    w, x, y, z = pose["quaternion_wxyz"]
    Rq = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                   [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                   [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    np.testing.assert_allclose(Rq, R, atol=1e-5)
    # OpenCV camera: the face is in front (z > 0) and projects where the pixels say.
    np.testing.assert_allclose(Vc, V @ R.T + t, atol=1e-5)
    assert np.all(Vc[:, 2] > 0) and face["pose_ok"]
    proj = Vc[:, :2] / Vc[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
    np.testing.assert_allclose(proj, p2, atol=0.01)
    # the 68 points: projected vertices, the side jaw points on the outline (jmlr.inference.landmarks)
    lm68 = np.asarray(face["landmarks_68"])
    np.testing.assert_allclose(lm68[17:], p2[np.asarray(topology.landmarks68)[17:]], atol=1e-6)
    np.testing.assert_allclose(lm68, contour_landmarks_68(p2, R, topology.landmarks68, topology.jaw_contour),
                               atol=0.05)  # (from the rounded landmarks_2d and rotation)
    assert face["distance_m"] == pytest.approx(float(np.linalg.norm(t)), rel=1e-5)
    assert np.isfinite(face["reprojection_rms_px"])


def test_landmarks_68_outline_can_be_turned_off(store, topology, tmp_path):
    rgb = np.full((480, 640, 3), 90, np.uint8)
    lm5 = np.array([[280, 200], [360, 200], [320, 250], [290, 300], [350, 300]], float)
    app = create_app(_settings(store, tmp_path / "var", landmarks_68_outline=False))
    with TestClient(app) as c:
        r = _post(c, _jpeg(rgb), faces=json.dumps([{"landmarks5": lm5.tolist()}]), include="landmarks_2d")
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    p2 = np.asarray(face["landmarks_2d"])
    np.testing.assert_allclose(face["landmarks_68"], p2[np.asarray(topology.landmarks68)], atol=1e-6)


def test_server_default_flip_tta_applies_when_the_request_does_not_say(client, store, tmp_path, astronaut_jpeg):
    """JMLR_FLIP_TTA=1: requests without `flip_tta` get the mirrored-crop average (as asking
    for it on a default server gives); `flip_tta=false` still turns it off."""
    faces = json.dumps([{"landmarks5": ASTRONAUT_LM5}])
    def verts(c, **form):
        r = _post(c, astronaut_jpeg, faces=faces, include="vertices", **form)
        assert r.status_code == 200, r.text
        return np.array(r.json()["faces"][0]["vertices"])

    plain, flipped = verts(client), verts(client, flip_tta="true")
    assert np.abs(plain - flipped).max() > 1e-5  # the random model is not mirror-symmetric
    with TestClient(create_app(_settings(store, tmp_path / "var", flip_tta=True))) as c:
        np.testing.assert_allclose(verts(c), flipped, atol=1e-6)
        np.testing.assert_allclose(verts(c, flip_tta="false"), plain, atol=1e-6)


def test_client_bbox_only_uses_detector_inside(client, astronaut_jpeg):
    r = _post(client, astronaut_jpeg, faces=json.dumps([{"bbox": [180, 60, 270, 178]}, {"bbox": [400, 400, 500, 500]}]))
    assert r.status_code == 200, r.text
    f1, f2 = r.json()["faces"]
    assert f1["source"] == f2["source"] == "client_bbox"
    assert f1["score"] > 0.5 and abs(f1["landmarks5"][0][0] - ASTRONAUT_LM5[0][0]) < 10
    assert f2["score"] is None  # mean-face placement, no detector score


def test_no_face_is_200_with_empty_list(client):
    r = _post(client, _jpeg(np.full((120, 160, 3), 200, np.uint8)))
    assert r.status_code == 200 and r.json()["faces"] == []


def test_max_faces(client, astronaut_jpeg):
    faces = [{"landmarks5": ASTRONAUT_LM5}] * 3
    r = _post(client, astronaut_jpeg, faces=json.dumps(faces), max_faces="2")
    assert r.status_code == 200 and len(r.json()["faces"]) == 2


def test_exif_focal_and_orientation(client):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    exif.get_ifd(0x8769)[0xA405] = 26
    r = _post(client, _jpeg(np.full((300, 400, 3), 50, np.uint8), exif))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["image"]["width"], body["image"]["height"]) == (300, 400)
    assert body["camera"]["source"] == "exif"
    assert body["camera"]["fx"] == pytest.approx(26 * 500 / np.hypot(36, 24), rel=1e-6)


def test_iphone_heic_held_sideways_is_read_upright(client):
    """An HEIC stored turned by 90 degrees (tests/data/README.md) finds the face where the
    upright JPEG of the same photo does, with the focal length from its EXIF."""
    heic = (Path(__file__).parent / "data" / "astronaut_rot6.heic").read_bytes()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 26
    answers = {}
    for ctype, data in (("image/heic", heic), ("image/jpeg", _jpeg(skimage_data.astronaut()[:400], exif))):
        r = _post(client, data, ctype=ctype, include="landmarks_68")
        assert r.status_code == 200, r.text
        answers[ctype] = r.json()
    h, j = answers["image/heic"], answers["image/jpeg"]
    assert h["image"] == {"width": 512, "height": 400, "format": "HEIF"}
    assert h["camera"]["source"] == "exif" and h["camera"]["fx"] == pytest.approx(j["camera"]["fx"])
    (fh,), (fj,) = h["faces"], j["faces"]
    assert np.abs(np.subtract(fh["bbox"], fj["bbox"])).max() < 6
    metrics = client.get("/metrics").text
    assert re.search(r'jmlr_decode_duration_seconds_count\{format="HEIF"\} [1-9]', metrics)
    assert np.abs(np.subtract(fh["landmarks_68"], fj["landmarks_68"])).mean() < 3


def test_an_heic_that_crashes_its_decoder_is_a_422_and_the_service_goes_on(client):
    data = Path(__file__).parent / "data"
    _error(_post(client, (data / "crashes_pi_heif_1.4.heic").read_bytes(), ctype="image/heic"), 422, "invalid_image")
    assert client.get("/healthz").status_code == 200
    r = _post(client, (data / "astronaut_rot6.heic").read_bytes(), ctype="image/heic")
    assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_texture_is_the_photo_under_each_vertex(client, astronaut_jpeg):
    """texture=true stores the photo with the mesh: the GLB's texture at a vertex's UV shows
    the photo's colour where that vertex projects; without it the mesh is plain."""
    r = _post(client, astronaut_jpeg, include="landmarks_2d", texture="true")
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert "texture" in r.json()["timings_ms"]
    assert client.get(f"/mesh/{face['mesh_id']}").json()["textured"] is True
    glb = client.get(face["mesh_urls"]["glb"]).content
    import trimesh

    mesh = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh", process=False)
    tex = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"), np.float64)
    T = tex.shape[0]
    uv = np.asarray(mesh.visual.uv)
    col, row = uv[:, 0] * T, (1 - uv[:, 1]) * T
    xy = np.asarray(face["landmarks_2d"])
    photo = skimage_data.astronaut().astype(np.float64)
    inside = ((uv > 0.02) & (uv < 0.98)).all(1) & (xy > 1).all(1) & (xy[:, 0] < 510) & (xy[:, 1] < 510)
    assert inside.sum() > 100
    at_uv = tex[row[inside].astype(int), col[inside].astype(int)]
    at_xy = photo[xy[inside, 1].astype(int), xy[inside, 0].astype(int)]
    err = np.abs(at_uv - at_xy).mean()
    shuffled = np.abs(at_uv - np.random.default_rng(0).permutation(at_xy)).mean()
    assert err < 15 and shuffled > 2 * err, (err, shuffled)
    plain = _post(client, astronaut_jpeg).json()["faces"][0]
    assert client.get(f"/mesh/{plain['mesh_id']}").json()["textured"] is False


def test_registered_device_and_api_key(client, astronaut_jpeg):
    dev = {"device_id": "cam-1", "fx": 2000.0, "fy": 2000.0, "cx": 1023.5, "cy": 1023.5, "width": 2048, "height": 2048}
    _error(client.post("/devices", json=dev), 401, "missing_api_key")
    _error(client.post("/devices", json=dev, headers={"X-API-Key": "wrong"}), 403, "invalid_api_key")
    assert client.post("/devices", json=dev, headers={"X-API-Key": API_KEY}).status_code in (200, 201)
    r = _post(client, astronaut_jpeg, device_id="cam-1")
    assert r.status_code == 200, r.text
    cam = r.json()["camera"]
    assert cam["source"] == "device" and cam["fx"] == pytest.approx(500.0)
    # A request camera beats the device.
    r = _post(client, astronaut_jpeg, device_id="cam-1", camera='{"fx": 700, "fy": 700, "cx": 256, "cy": 256}')
    assert r.json()["camera"]["source"] == "request"


# ----------------------------------------------------------------------------- bad input


def _noise_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_inputs_get_clear_errors(client, astronaut_jpeg):
    _error(_post(client, b"GIF89a nope, just text"), 422, "invalid_image")
    _error(_post(client, astronaut_jpeg[: len(astronaut_jpeg) // 2]), 422, "invalid_image")
    _error(_post(client, b""), 422, "empty_image")
    big_canvas = io.BytesIO()
    Image.new("L", (3000, 3000)).save(big_canvas, "PNG")  # 9 Mpx > 4 Mpx cap, tiny file
    _error(_post(client, big_canvas.getvalue(), "image/png"), 413, "image_too_large")
    _error(_post(client, _noise_png(1100, 1000), "image/png"), 413, "payload_too_large")  # ~3.3 MB
    _error(_post(client, _noise_png(1500, 1500), "image/png"), 413, "payload_too_large")  # refused by length
    _error(_post(client, astronaut_jpeg, "text/plain"), 415, "unsupported_media_type")
    _error(_post(client, astronaut_jpeg, camera="{fx: 1"), 422, "invalid_camera")
    _error(_post(client, astronaut_jpeg, camera='{"fx": -5, "fy": 1, "cx": 0, "cy": 0}'), 422, "invalid_camera")
    _error(_post(client, astronaut_jpeg, camera='{"fx": 5, "fy": 1, "cx": 0, "cy": 0, "zoom": 2}'), 422,
           "invalid_camera")
    _error(_post(client, astronaut_jpeg, faces='[{"landmarks5": [[1, 2]]}]'), 422, "invalid_faces")
    _error(_post(client, astronaut_jpeg, faces='[{}]'), 422, "invalid_faces")
    _error(_post(client, astronaut_jpeg, include="vertices,normals"), 422, "invalid_include")
    _error(_post(client, astronaut_jpeg, device_id="nope"), 404, "device_not_found")
    _error(_post(client, astronaut_jpeg, max_faces="0"), 422, "validation_error")
    _error(client.post("/reconstruct", data={"camera": "{}"}, headers={"X-API-Key": API_KEY}), 422, "validation_error")
    _error(client.get("/nothing-here"), 404, "not_found")


def test_fields_the_route_does_not_read_or_sent_twice_are_refused_not_dropped(client, astronaut_jpeg):
    # Points sent under a name the route does not read would otherwise be ignored in silence
    # and the face detected instead.
    lm5 = json.dumps([[203.3, 101.3], [247.2, 104.5], [223.1, 125.0], [203.4, 142.4], [241.0, 144.9]])
    msg = _error(_post(client, astronaut_jpeg, landmarks=lm5), 422, "unknown_field")["error"]["message"]
    assert "`landmarks`" in msg and "did you mean `faces`?" in msg and "faces, max_faces" in msg
    msg = _error(_post(client, astronaut_jpeg, flip_ta="true"), 422, "unknown_field")["error"]["message"]
    assert "did you mean `flip_tta`?" in msg
    r = client.post("/reconstruct?include=vertices", files={"image": ("img", astronaut_jpeg, "image/jpeg")},
                    headers={"X-API-Key": API_KEY})
    assert "`include` was sent in the query string" in _error(r, 422, "unknown_field")["error"]["message"]
    # A field sent twice would be read as one of the two, whichever the parser kept.
    cam = '{"fx": 500, "fy": 500, "cx": 256, "cy": 256}'
    r = client.post("/reconstruct", files=[("image", ("a", astronaut_jpeg, "image/jpeg"))],
                    data={"camera": [cam, cam.replace("500", "900")]}, headers={"X-API-Key": API_KEY})
    assert "`camera` was sent 2 times" in _error(r, 422, "duplicate_field")["error"]["message"]
    r = client.post("/reconstruct", files=[("image", ("a", astronaut_jpeg, "image/jpeg")),
                                           ("image", ("b", astronaut_jpeg, "image/jpeg"))],
                    headers={"X-API-Key": API_KEY})
    assert "`image` was sent 2 times" in _error(r, 422, "duplicate_field")["error"]["message"]
    # A photo under another name fails FastAPI's validation before the route runs; the
    # error names what the form did carry.
    r = client.post("/reconstruct", files={"file": ("a", astronaut_jpeg, "image/jpeg")}, headers={"X-API-Key": API_KEY})
    assert _error(r, 422, "validation_error")["error"]["message"] == "image: Field required (the form carried: `file`)"
    # Query parameters that are none of the route's (a cache buster) are left alone.
    r = client.post("/reconstruct?nocache=1", files={"image": ("img", astronaut_jpeg, "image/jpeg")},
                    headers={"X-API-Key": API_KEY})
    assert r.status_code == 200, r.text


def test_the_refused_fields_are_exactly_those_the_openapi_schema_does_not_declare(client):
    from service.routers.reconstruct import FORM_FIELDS

    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/reconstruct"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    if "$ref" in body:
        body = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert set(FORM_FIELDS) == set(body["properties"])


# ----------------------------------------------------------------------------- metrics, openapi


def test_metrics(client, astronaut_jpeg):
    assert _post(client, astronaut_jpeg).status_code == 200
    text = client.get("/metrics").text
    assert re.search(
        r'jmlr_request_duration_seconds_count\{method="POST",route="/reconstruct",status="200"\} [1-9]', text)
    for stage in ("decode", "detect", "crop", "infer", "pnp", "store", "encode"):
        assert f'jmlr_stage_duration_seconds_count{{stage="{stage}"}}' in text, stage
    assert re.search(r"jmlr_batch_size_count [1-9]", text)
    assert "jmlr_queue_wait_seconds_count" in text and "jmlr_queue_depth 0.0" in text
    assert re.search(r'jmlr_faces_per_request_bucket\{le="1.0"\} [1-9]', text)
    assert 'jmlr_model_info{device="cpu",name="tiny"' in text
    assert re.search(r'jmlr_errors_total\{code="invalid_image"\} [1-9]', text)


def test_openapi_schema_is_valid(client):
    from openapi_spec_validator import validate

    spec = client.get("/openapi.json").json()
    validate(spec)
    assert "/reconstruct" in spec["paths"] and "/mesh/{mesh_id}" in spec["paths"]
    assert client.get("/docs").status_code == 200


# ----------------------------------------------------------------------------- batching, limits


def test_concurrent_requests_are_batched(store, tmp_path, astronaut_jpeg):
    app = create_app(_settings(store, tmp_path, max_batch_size=8, max_queue_delay_ms=300))
    faces = json.dumps([{"landmarks5": ASTRONAUT_LM5}])

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(*(
                    c.post("/reconstruct", files={"image": ("a.jpg", astronaut_jpeg, "image/jpeg")},
                           data={"faces": faces}, headers={"X-API-Key": API_KEY})
                    for _ in range(6)
                ))
                return rs, (await c.get("/metrics")).text

    responses, text = asyncio.run(go())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    count = float(re.search(r"jmlr_batch_size_count (\S+)", text).group(1))
    total = float(re.search(r"jmlr_batch_size_sum (\S+)", text).group(1))
    assert total == 6 and count < 6, (count, total)  # at least one batch held more than one crop


def test_queue_full_and_deadline(store, tmp_path, astronaut_jpeg):
    app = create_app(_settings(store, tmp_path, max_queue_size=1))
    faces = json.dumps([{"landmarks5": ASTRONAUT_LM5}] * 2)
    with TestClient(app) as c:
        r = _post(c, astronaut_jpeg, faces=faces)
        _error(r, 503, "queue_full")
        assert int(r.headers["Retry-After"]) >= 1
    app = create_app(_settings(store, tmp_path, request_timeout_s=0.001))
    with TestClient(app) as c:
        r = _post(c, astronaut_jpeg)
        _error(r, 504, "deadline_exceeded")


def test_model_that_fails_to_load_leaves_service_not_ready(store, tmp_path, astronaut_jpeg, caplog):
    app = create_app(_settings(store, tmp_path, model_name="no-such-model"))
    with caplog.at_level("ERROR"), TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        _error(c.get("/readyz"), 503, "model_not_ready")
        r = _post(c, astronaut_jpeg)
        body = _error(r, 503, "model_not_ready")
        assert "no-such-model" in body["error"]["message"] and r.headers["Retry-After"]
    assert any("NOT ready" in rec.getMessage() for rec in caplog.records)


# ----------------------------------------------------------------------------- real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uvicorn_subprocess(store, tmp_path, astronaut_jpeg):
    port = _free_port()
    env = dict(os.environ, JMLR_MODEL_STORE=str(store), JMLR_DATA_DIR=str(tmp_path), JMLR_DEVICE="cpu",
               JMLR_WARMUP="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # torch import + model load took 64 s on a loaded 2-core machine
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.poll() is not None else ""
                pytest.fail(f"server did not become ready: {out[-2000:]}")
            time.sleep(0.2)
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        r = httpx.post(f"{base}/reconstruct", files={"image": ("a.jpg", astronaut_jpeg, "image/jpeg")}, timeout=30)
        assert r.status_code == 200, r.text
        (face,) = r.json()["faces"]
        assert face["mesh_urls"]["glb"].startswith(base)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sessions, wide", [(1, True), (2, True), (2, False)])
def test_detector_session_settings_reach_the_detector(store, tmp_path, sessions, wide):
    app = create_app(_settings(store, tmp_path / "var", detector_sessions=sessions, detector_wide_when_idle=wide))
    with TestClient(app):
        pool = app.state.engine.detector.session
        assert pool.size == sessions
        assert (pool.wide_session is not None) == (sessions > 1 and wide)

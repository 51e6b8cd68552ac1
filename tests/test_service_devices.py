"""``/devices`` CRUD, validation and API keys, on a bare app with only the devices router."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.errors import install_error_handlers
from service.routers.devices import router as devices_router
from service.settings import Settings
from service.storage import SqliteStorage

VALID = {
    "device_id": "pixel-7_main.v2",
    "name": "Pixel 7",
    "fx": 3220.5, "fy": 3221.0, "cx": 2040.0, "cy": 1536.0,
    "width": 4080, "height": 3072,
    "distortion": {"k1": 0.06, "k2": -0.11},
}


def _app(storage, api_keys: list[str] | None = None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.settings = Settings(_env_file=None, api_keys=api_keys or [], data_dir="unused")
    app.state.storage = storage
    app.include_router(devices_router)
    return app


@pytest.fixture
def client(storage):
    with TestClient(_app(storage)) as c:
        yield c


def _error_code(resp) -> str:
    return resp.json()["error"]["code"]


def test_create_get_list(client):
    r = client.post("/devices", json=VALID)
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == "/devices/pixel-7_main.v2"
    for key in ("device_id", "name", "fx", "fy", "cx", "cy", "width", "height"):
        assert body[key] == VALID[key]
    assert body["distortion"] == {"k1": 0.06, "k2": -0.11, "p1": 0.0, "p2": 0.0, "k3": 0.0}
    assert body["created"] == body["updated"]

    assert client.get("/devices/pixel-7_main.v2").json() == body
    assert client.get("/devices").json() == {"devices": [body]}


def test_create_generates_id_and_allows_minimal_body(client):
    minimal = {"fx": 500, "fy": 500, "cx": 320, "cy": 240, "width": 640, "height": 480}
    r = client.post("/devices", json=minimal)
    assert r.status_code == 201, r.text
    body = r.json()
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", body["device_id"])
    assert body["name"] is None and body["distortion"] is None
    second = client.post("/devices", json=minimal).json()
    assert second["device_id"] != body["device_id"]
    assert len(client.get("/devices").json()["devices"]) == 2


def test_create_conflict(client):
    assert client.post("/devices", json=VALID).status_code == 201
    r = client.post("/devices", json={**VALID, "fx": 1.0})
    assert r.status_code == 409
    assert _error_code(r) == "device_exists"
    assert client.get(f"/devices/{VALID['device_id']}").json()["fx"] == VALID["fx"]  # unchanged


def test_put_replaces_and_keeps_created(client):
    created = client.post("/devices", json=VALID).json()
    new = {k: v for k, v in VALID.items() if k != "device_id"} | {"fx": 1000.0, "distortion": None, "name": None}
    r = client.put(f"/devices/{VALID['device_id']}", json=new)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fx"] == 1000.0 and body["distortion"] is None and body["name"] is None
    assert body["created"] == created["created"]
    assert body["updated"] >= created["updated"]
    assert client.get(f"/devices/{VALID['device_id']}").json() == body


def test_put_unknown_is_404(client):
    body = {k: v for k, v in VALID.items() if k != "device_id"}
    r = client.put("/devices/nope", json=body)
    assert r.status_code == 404
    assert _error_code(r) == "device_not_found"
    assert client.get("/devices").json() == {"devices": []}  # PUT does not create


def test_delete(client):
    client.post("/devices", json=VALID)
    r = client.delete(f"/devices/{VALID['device_id']}")
    assert r.status_code == 204 and r.content == b""
    assert client.get(f"/devices/{VALID['device_id']}").status_code == 404
    r = client.delete(f"/devices/{VALID['device_id']}")
    assert r.status_code == 404 and _error_code(r) == "device_not_found"


def test_get_unknown_is_404_json(client):
    r = client.get("/devices/ghost")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "device_not_found", "message": "no device 'ghost'"}}


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"fx": 0}, "fx"),
        ({"fy": -10}, "fy"),
        ({"fx": "wide"}, "fx"),
        ({"width": 0}, "width"),
        ({"height": -480}, "height"),
        ({"width": 640.5}, "width"),
        ({"cx": 5000.0}, "cx"),
        ({"cx": -1.0}, "cx"),
        ({"cy": 4000.0}, "cy"),
        ({"cy": -0.5}, "cy"),
        ({"device_id": "has space"}, "device_id"),
        ({"device_id": "a/b"}, "device_id"),
        ({"device_id": "x" * 65}, "device_id"),
        ({"device_id": ""}, "device_id"),
        ({"distortion": {"k1": 0.1, "k9": 1.0}}, "distortion"),
        ({"distortion": {"k1": "big"}}, "distortion"),
        ({"focal": 1000}, "focal"),  # unknown field: a typo must not be silently dropped
        ({"name": "n" * 201}, "name"),
    ],
)
def test_create_validation_errors(client, patch, field):
    r = client.post("/devices", json={**VALID, **patch})
    assert r.status_code == 422, r.text
    assert _error_code(r) == "validation_error"
    assert field in r.json()["error"]["message"]
    assert client.get("/devices").json() == {"devices": []}


@pytest.mark.parametrize("missing", ["fx", "fy", "cx", "cy", "width", "height"])
def test_create_requires_intrinsics(client, missing):
    body = {k: v for k, v in VALID.items() if k != missing}
    r = client.post("/devices", json=body)
    assert r.status_code == 422
    assert missing in r.json()["error"]["message"]


def test_principal_point_on_the_border_is_allowed(client):
    r = client.post("/devices", json={**VALID, "cx": 0.0, "cy": float(VALID["height"])})
    assert r.status_code == 201, r.text


def test_put_validates_too(client):
    client.post("/devices", json=VALID)
    body = {k: v for k, v in VALID.items() if k != "device_id"}
    r = client.put(f"/devices/{VALID['device_id']}", json={**body, "cx": 99999.0})
    assert r.status_code == 422
    # The id comes from the path: a body id is an unknown field, not a rename.
    r = client.put(f"/devices/{VALID['device_id']}", json={**body, "device_id": "other"})
    assert r.status_code == 422


def test_bad_id_in_path_is_422(client):
    assert client.get("/devices/has%20space").status_code == 422


@pytest.fixture
def keyed_client(tmp_path):
    store = SqliteStorage(tmp_path / "data")
    with TestClient(_app(store, api_keys=["k-one", "k-two"])) as c:
        yield c
    store.close()


def test_api_key_required_on_writes(keyed_client):
    c = keyed_client
    r = c.post("/devices", json=VALID)
    assert r.status_code == 401 and _error_code(r) == "missing_api_key"
    r = c.post("/devices", json=VALID, headers={"X-API-Key": "wrong"})
    assert r.status_code in (401, 403) and _error_code(r) == "invalid_api_key"
    assert c.get("/devices").json() == {"devices": []}

    assert c.post("/devices", json=VALID, headers={"X-API-Key": "k-two"}).status_code == 201
    # Reads stay open.
    assert c.get(f"/devices/{VALID['device_id']}").status_code == 200
    assert c.get("/devices").status_code == 200

    body = {k: v for k, v in VALID.items() if k != "device_id"}
    assert c.put(f"/devices/{VALID['device_id']}", json=body).status_code == 401
    assert c.delete(f"/devices/{VALID['device_id']}").status_code == 401
    assert c.put(f"/devices/{VALID['device_id']}", json=body, headers={"X-API-Key": "k-one"}).status_code == 200
    assert c.delete(f"/devices/{VALID['device_id']}", headers={"X-API-Key": "k-one"}).status_code == 204


def test_openapi_has_examples(client):
    schema = client.get("/openapi.json").json()
    create = schema["components"]["schemas"]["DeviceCreate"]
    assert create["examples"][0]["device_id"] == "pixel-7-main"
    assert "/devices/{device_id}" in schema["paths"]

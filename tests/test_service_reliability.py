"""Issue 11: the service under hostile input, overload and outages (the fast cases; the
long ones are bench/bench_reliability.py, results in docs/reliability.md).

Every test here failed before its fix: 5xx on malformed fields, schema-breaking 200s,
late overload refusals, silent mesh loss and 500s with storage down, open defaults.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.hostile_corpus import LM5, all_cases  # noqa: E402
from jmlr.store import make_random_model  # noqa: E402
from service.admission import AdmissionController  # noqa: E402
from service.app import create_app  # noqa: E402
from service.bounded_json import JsonLimitError, json_depth, loads_bounded  # noqa: E402
from service.exposure import exposure_problem, is_loopback  # noqa: E402
from service.gate import RequestGate  # noqa: E402
from service.metrics import Metrics  # noqa: E402
from service.pixel_budget import PixelBudget, PixelBudgetTimeout  # noqa: E402
from service.ratelimit import RateLimiter  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.storage import (  # noqa: E402
    RedisStorage,
    SqliteStorage,
    StorageFullError,
    StorageUnavailableError,
    new_mesh_id,
)
from service.storage_guard import GuardedStorage  # noqa: E402

KEY = "k-reliability"
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("store")
    make_random_model(arch="jmlr_resnet18d", input_size=64, name="tiny", store_dir=d, set_default=True)
    return d


def _settings(store: Path, data_dir: Path, **kw) -> Settings:
    base = dict(_env_file=None, model_store=store, data_dir=data_dir, device="cpu", api_keys=[KEY], warmup=False,
                max_upload_bytes=2_000_000, max_image_pixels=4_000_000)
    base.update(kw)
    return Settings(**base)


@pytest.fixture(scope="module")
def client(store, tmp_path_factory):
    settings = _settings(store, tmp_path_factory.mktemp("var"), rate_limit_per_minute=0)
    with TestClient(create_app(settings), headers={"X-API-Key": KEY}) as c:
        yield c


def _jpeg(w: int = 512, h: int = 512) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 100, 90)).save(buf, "JPEG")
    return buf.getvalue()


def _post(c, image: bytes | None = None, **form):
    return c.post("/reconstruct", files={"image": ("a.jpg", image or _jpeg(), "image/jpeg")}, data=form)


def _code(r) -> str:
    return r.json()["error"]["code"]


def _numbers_ok(body: dict) -> bool:
    """No null where the schema promises a number (non-finite values serialise as null)."""
    def flat(x):
        return [v for item in x for v in flat(item)] if isinstance(x, list) else [x]

    numbers = flat(body["camera"]["K"]) + [body["camera"][k] for k in ("fx", "fy", "cx", "cy")]
    for face in body["faces"]:
        numbers += flat(face["bbox"]) + flat(face["landmarks5"]) + flat(face.get("landmarks_68") or [])
        numbers += flat(face["pose"]["matrix"]) + [face["distance_m"]]
    return all(isinstance(v, (int, float)) and np.isfinite(v) for v in numbers)


# ----------------------------------------------------------------------------- 1, 2: input


def test_bounded_json_limits():
    assert loads_bounded('{"a": [1, 2.5]}', max_chars=100, max_depth=2) == {"a": [1, 2.5]}
    assert json_depth('["[[[[", {"x": "]]"}]') == 2  # brackets inside strings do not count
    for raw, limits in [
        ("[" * 3000 + "]" * 3000, dict(max_chars=10_000, max_depth=8)),  # RecursionError before
        ("1" * 4301, dict(max_chars=10_000, max_depth=8)),  # ValueError (int digits) before
        ("[NaN]", dict(max_chars=100, max_depth=8)),
        ("[1]" + " " * 200, dict(max_chars=100, max_depth=8)),
        ("{", dict(max_chars=100, max_depth=8)),
    ]:
        with pytest.raises(JsonLimitError):
            loads_bounded(raw, **limits)


def test_malformed_corpus_never_5xx(client):
    image = _jpeg()
    failures = []
    for name, files, data in all_cases(image):
        r = client.post("/reconstruct", files=files or None, data=data)
        body = r.json()
        if r.status_code >= 500:
            failures.append((name, r.status_code, body))
        elif r.status_code >= 400:
            assert set(body) == {"error"} and body["error"]["code"], (name, body)
        else:
            assert _numbers_ok(body), (name, body)
    assert failures == []


@pytest.mark.parametrize(
    "form,code",
    [
        ({"camera": '{"fx": 1e308, "fy": 1e308, "cx": 256, "cy": 256}'}, "invalid_camera"),  # was 200, fx: null
        ({"camera": '{"fx": 500, "fy": 500, "cx": 0, "cy": 0, "distortion": {"k3": false}}'}, "invalid_camera"),
        ({"camera": '{"fx": ' + "1" * 4301 + ', "fy": 1, "cx": 0, "cy": 0}'}, "invalid_camera"),  # was 500
        ({"faces": "[" * 5000 + "]" * 5000}, "invalid_faces"),  # was 500 (RecursionError)
        ({"faces": json.dumps([{"landmarks5": [[1e308, 1e308]] * 5}])}, "invalid_faces"),  # was 500 (SVD)
        ({"faces": json.dumps([{"bbox": [-1e308, -1e308, 1e308, 1e308]}])}, "invalid_faces"),
        ({"faces": json.dumps([{"bbox": [5000, 5000, 5100, 5100]}])}, "invalid_faces"),  # was 200, 28.7 m
        ({"faces": json.dumps([{"landmarks5": [[100.0, 100.0]] * 5}])}, "invalid_faces"),
    ],
)
def test_bad_numbers_are_422(client, form, code):
    r = _post(client, **form)
    assert r.status_code == 422 and _code(r) == code, r.text


def test_face_partly_outside_is_still_served(client):
    # Only a box with no overlap at all is refused; a face cut by the border is normal.
    r = _post(client, faces=json.dumps([{"bbox": [-40, 200, 60, 320]}]))
    assert r.status_code == 200 and len(r.json()["faces"]) == 1


# ----------------------------------------------------------------------------- 3: memory


def test_pixel_budget_is_fifo_bounded_and_times_out():
    seen: list[int] = []
    budget = PixelBudget(100, on_change=seen.append)

    async def go():
        order = []

        async def job(name, n, hold):
            async with budget.reserve(n, 5):
                order.append(name)
                await asyncio.sleep(hold)

        await asyncio.gather(job("a", 80, 0.05), job("b", 60, 0.0), job("c", 10, 0.0), job("huge", 10**9, 0.0))
        with pytest.raises(PixelBudgetTimeout):
            async with budget.reserve(60, 5):
                await budget.acquire(60, 0.05)
        return order

    order = asyncio.run(go())
    assert order == ["a", "b", "c", "huge"]  # c does not overtake b; huge runs alone
    assert max(seen) <= 100 and budget.in_use == 0


def test_body_without_length_is_cut_at_the_limit():
    # A chunked upload used to be spooled whole (1.5 GB to /tmp) before the 413.
    from service.body_limit import BodyLimitMiddleware

    pulled = 0

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def app(scope, receive, send):
        while True:  # reads forever, like a parser spooling to disk
            await receive()

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/reconstruct", "headers": [], "app": None}
    asyncio.run(BodyLimitMiddleware(app, lambda s: 1_000_000)(scope, receive, send))
    assert sent[0]["status"] == 413 and json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"
    assert pulled <= 1_000_000 // 65536 + 1


# ----------------------------------------------------------------------------- 4: admission


def test_admission_controller_refuses_by_capacity_and_expected_wait():
    ac = AdmissionController(max_in_flight=2, target_s=1.0)
    assert ac.try_admit().admitted and ac.try_admit().admitted
    d = ac.try_admit()
    assert not d.admitted and d.reason == "capacity" and d.retry_after_s >= 1

    now = [0.0]
    ac = AdmissionController(max_in_flight=8, target_s=1.0, smoothing=1.0, clock=lambda: now[0])
    assert all(ac.try_admit().admitted for _ in range(4))  # no measurement yet: only the cap limits
    for _ in range(4):  # one busy second, four done: 4 per second
        now[0] += 0.25
        ac.release()
    assert ac.throughput == pytest.approx(4.0)
    assert all(ac.try_admit().admitted for _ in range(4))  # the 4th is expected after exactly 1 s
    d = ac.try_admit()  # 5 in flight at 4/s: 1.25 s > 1 s target
    assert not d.admitted and d.reason == "latency" and d.expected_s == pytest.approx(1.25)


def test_admission_never_refuses_an_idle_service():
    # Regression: one slow request (2 s, over the 1 s target) made every later request
    # "expected" too late, all were refused, and the estimate was never renewed.
    now = [0.0]
    ac = AdmissionController(max_in_flight=8, target_s=1.0, smoothing=1.0, clock=lambda: now[0])
    assert ac.try_admit().admitted
    now[0] += 2.0
    ac.release()
    assert ac.throughput == pytest.approx(0.5)
    assert ac.try_admit().admitted  # idle: admitted although 1 / 0.5 s > target
    assert not ac.try_admit().admitted  # one in flight: 2 / 0.5 = 4 s, refused
    for _ in range(3):  # the machine got faster: the admitted ones renew the estimate
        now[0] += 0.4
        ac.release()
        assert ac.try_admit().admitted
    assert ac.throughput == pytest.approx(3 / 1.2)  # one window: 3 done in 1.2 busy seconds


class _Engine:
    ready = True

    def not_ready_error(self):  # pragma: no cover - ready above
        raise AssertionError


def _gate_state(**kw) -> SimpleNamespace:
    settings = Settings(_env_file=None, **kw)
    return SimpleNamespace(
        settings=settings, metrics=Metrics(), engine=_Engine(),
        admission=AdmissionController(settings.max_in_flight, settings.admission_target()),
        rate_limiter=RateLimiter(settings.rate_limit_per_minute / 60, settings.rate_limit_burst)
        if settings.rate_limit_per_minute else None,
    )


async def _call_gate(state, app, headers=(), body_chunks=(b"",), disconnect_after_body=False):
    """Drive RequestGate like a server: returns (status, body, chunks the app read)."""
    read = 0
    chunks = list(body_chunks)
    gone = asyncio.Event()

    async def receive():
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        if disconnect_after_body:
            return {"type": "http.disconnect"}
        await gone.wait()
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/reconstruct", "client": ("127.0.0.1", 5),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers], "app": SimpleNamespace(state=state)}
    await RequestGate(app)(scope, receive, send)
    gone.set()
    status = sent[0]["status"] if sent else None
    body = json.loads(sent[1]["body"]) if len(sent) > 1 and sent[1].get("body") else None
    return status, body, read


async def _ok_app(scope, receive, send):
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_gate_refuses_overload_fast_before_reading_the_body():
    state = _gate_state(max_in_flight=1)
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await _ok_app(scope, receive, send)

    async def go():
        first = asyncio.ensure_future(_call_gate(state, slow_app))
        await asyncio.sleep(0.05)
        t = time.perf_counter()
        status, body, read = await _call_gate(state, _ok_app, body_chunks=[b"a" * 1000] * 3)
        dt = time.perf_counter() - t
        release.set()
        return (status, body, read, dt), await first

    (status, body, read, _dt), first = asyncio.run(go())
    # Refused before a byte of its body was read (how fast is for the bench, not a test).
    assert status == 503 and body["error"]["code"] == "overloaded" and read == 0
    assert first[0] == 200


def test_gate_deadline_covers_the_upload_and_client_gone_cancels():
    # A slow upload: the deadline starts at arrival, so it is a 504, not a 504 after the engine.
    state = _gate_state(request_timeout_s=0.3)

    async def slow_reader(scope, receive, send):
        while (await receive()).get("more_body"):
            await asyncio.sleep(0.2)
        await _ok_app(scope, receive, send)

    status, body, read = asyncio.run(_call_gate(state, slow_reader, body_chunks=[b"x"] * 10))
    assert status == 504 and body["error"]["code"] == "deadline_exceeded"
    assert read < 10  # cut off mid-upload, not after it

    cancelled = []

    async def stuck(scope, receive, send):
        await receive()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    state = _gate_state(request_timeout_s=30)
    status, _, _ = asyncio.run(_call_gate(state, stuck, disconnect_after_body=True))
    assert status is None and cancelled == [True]
    assert 'jmlr_dropped_total{reason="client_gone"} 1.0' in state.metrics.render().decode()
    assert state.admission.in_flight == 0


def test_gate_auth_and_per_key_rate_limit_before_the_body():
    state = _gate_state(api_keys=["a", "b"], rate_limit_per_minute=60, rate_limit_burst=2)
    status, body, read = asyncio.run(_call_gate(state, _ok_app, body_chunks=[b"x"] * 3))
    assert (status, body["error"]["code"], read) == (401, "missing_api_key", 0)
    statuses = [asyncio.run(_call_gate(state, _ok_app, headers=[("X-API-Key", "a")]))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert asyncio.run(_call_gate(state, _ok_app, headers=[("X-API-Key", "b")]))[0] == 200  # per key


def test_rate_limiter_refills():
    now = [0.0]
    rl = RateLimiter(rate_per_s=2, burst=1, clock=lambda: now[0])
    assert rl.acquire("k") == 0 and rl.acquire("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert rl.acquire("k") == 0


# ----------------------------------------------------------------------------- 5: outages


def test_redis_down_is_503_not_500_and_meshes_are_not_silently_skipped(store, tmp_path):
    settings = _settings(store, tmp_path, storage="redis", redis_url=DEAD_REDIS, storage_timeout_s=0.5)
    with TestClient(create_app(settings), headers={"X-API-Key": KEY}) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and _code(r) == "storage_unavailable"  # was "ready"
        for method, path, kw in [("GET", "/devices", {}), ("GET", "/devices/cam", {}),
                                 ("POST", "/devices", {"json": {"fx": 500, "fy": 500, "cx": 1, "cy": 1,
                                                                "width": 2, "height": 2}}),
                                 ("GET", f"/mesh/{new_mesh_id()}", {}), ("GET", f"/mesh/{new_mesh_id()}.glb", {})]:
            r = c.request(method, path, **kw)
            assert r.status_code == 503 and _code(r) == "storage_unavailable", (path, r.text)  # was 500
            assert r.headers["Retry-After"]
        r = _post(c, faces=json.dumps([{"landmarks5": LM5}]))
        assert r.status_code == 200, r.text
        body = r.json()
        (face,) = body["faces"]
        assert face["mesh_status"] == "storage_unavailable" and "mesh_urls" not in face
        assert any("NOT stored" in w for w in body["warnings"])  # was a silent 200
        text = c.get("/metrics").text
        assert re.search(r'jmlr_meshes_not_stored_total\{reason="storage_unavailable"\} 1.0', text)
        assert re.search(r'jmlr_dependency_errors_total\{code="storage_unavailable",dependency="storage"\} [1-9]', text)
        assert 'jmlr_dependency_up{dependency="storage"} 0.0' in text


def test_guard_fails_fast_then_recovers():
    now = [0.0]
    calls = {"n": 0}

    class Flaky:
        def get_device(self, device_id):
            calls["n"] += 1
            if calls["n"] == 1:
                raise StorageUnavailableError("down")
            return {"device_id": device_id}

    guard = GuardedStorage(lambda: Flaky(), Metrics(), "fake", retry_s=2.0, clock=lambda: now[0])
    with pytest.raises(StorageUnavailableError):
        guard.get_device("a")
    with pytest.raises(StorageUnavailableError):
        guard.get_device("a")  # breaker open: not even tried
    assert calls["n"] == 1
    now[0] = 2.5
    assert guard.get_device("a") == {"device_id": "a"}


def _arrays(n: int = 200, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"vertices_world": rng.normal(size=(n, 3)).astype(np.float32), "faces": np.zeros((4, 3), np.int32),
            "R_cv": np.eye(3), "t_cv": np.zeros(3)}


def test_sqlite_cap_evicts_oldest_first(tmp_path):
    probe = SqliteStorage(tmp_path / "probe")
    probe.put_mesh("m0", {}, _arrays(), 60)
    size = probe.mesh_bytes()
    probe.close()
    store = SqliteStorage(tmp_path / "capped", max_mesh_bytes=3 * size)
    ids = [f"m{i}" for i in range(5)]
    evicted = [store.put_mesh(i, {}, _arrays(seed=k), 60) for k, i in enumerate(ids)]
    assert evicted == [0, 0, 0, 1, 1]
    assert [store.get_mesh(i) is not None for i in ids] == [False, False, True, True, True]
    assert store.mesh_bytes() <= 3 * size
    assert sorted(p.stem for p in (tmp_path / "capped" / "meshes").glob("*.npz")) == ids[2:]
    with pytest.raises(StorageFullError):
        store.put_mesh("big", {}, _arrays(n=5000), 60)
    total = store.mesh_bytes()
    store.close()
    again = SqliteStorage(tmp_path / "capped", max_mesh_bytes=3 * size)  # the total survives a reopen
    assert again.mesh_bytes() == total == 3 * size
    again.close()


def test_sqlite_removes_a_crashed_writers_leftovers(tmp_path):
    import os

    store = SqliteStorage(tmp_path)
    store.put_mesh("kept", {}, _arrays(), 60)
    store.close()
    mesh_dir = tmp_path / "meshes"
    old = time.time() - 3600
    for name in (".tmp-abc.npz", "orphan.npz"):
        (mesh_dir / name).write_bytes(b"x")
        os.utime(mesh_dir / name, (old, old))
    (mesh_dir / ".tmp-live.npz").write_bytes(b"x")  # a write in progress elsewhere
    SqliteStorage(tmp_path).close()
    assert sorted(p.name for p in mesh_dir.iterdir()) == [".tmp-live.npz", "kept.npz"]


def test_replace_device_never_resurrects_a_deleted_one(storage):
    rec = {"device_id": "d", "fx": 1.0, "created": "c0", "updated": "u0"}
    assert storage.replace_device("d", rec) is None and storage.get_device("d") is None
    storage.create_device("d", rec)
    new = storage.replace_device("d", {**rec, "fx": 2.0, "created": "ignored", "updated": "u1"})
    assert new["created"] == "c0" and storage.get_device("d")["fx"] == 2.0
    assert [d["device_id"] for d in storage.list_devices()] == ["d"]


def test_storage_errors_are_typed():
    dead = RedisStorage(DEAD_REDIS, timeout_s=0.5)
    with pytest.raises(StorageUnavailableError):
        dead.get_device("x")
    with pytest.raises(StorageUnavailableError):
        dead.put_mesh(new_mesh_id(), {}, _arrays(), 60)
    dead.close()


@pytest.mark.redis
def test_redis_refuses_new_meshes_at_its_budget_instead_of_evicting(storage):
    if not isinstance(storage, RedisStorage):
        pytest.skip("redis only")
    client = storage.client
    used = int(client.info("memory")["used_memory"])
    old_max = client.config_get("maxmemory")["maxmemory"]
    client.config_set("maxmemory", str(int((used + 400_000) / 0.9)))
    try:
        kept, refused = [], 0
        for k in range(200):
            mesh_id = new_mesh_id()
            try:
                storage.put_mesh(mesh_id, {}, _arrays(n=2000, seed=k), 600)
                kept.append(mesh_id)
            except StorageFullError:
                refused += 1
        assert refused > 0 and kept
        assert all(storage.get_mesh(i) is not None for i in kept)  # every acknowledged mesh is still there
    finally:
        client.config_set("maxmemory", old_max)


# ----------------------------------------------------------------------------- 6: secure by default


def test_exposure_rules():
    open_settings = Settings(_env_file=None)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert exposure_problem("127.0.0.1", open_settings) is None
    assert "JMLR_API_KEYS" in exposure_problem("0.0.0.0", open_settings)
    assert exposure_problem("0.0.0.0", Settings(_env_file=None, api_keys=["k"])) is None
    assert exposure_problem("0.0.0.0", Settings(_env_file=None, allow_unauthenticated=True)) is None


def test_serve_refuses_a_public_address_without_keys(monkeypatch, capsys):
    import argparse

    from service.cli import run

    monkeypatch.delenv("JMLR_API_KEYS", raising=False)
    args = argparse.Namespace(host="0.0.0.0", port=1, log_level="error", model_name=None, model_store=None,
                              device=None, data_dir=None, detector=None, max_batch_size=None, max_queue_delay_ms=None)
    assert run(args) == 2
    assert "refusing to serve on 0.0.0.0" in capsys.readouterr().err


def test_exposure_guard_on_a_public_socket(store, tmp_path):
    app = create_app(_settings(store, tmp_path, api_keys=[]))

    async def go():
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.7:8000") as c:
            return await c.get("/healthz")

    # httpx's ASGITransport reports the URL's host as the server address.
    r = asyncio.run(go())
    assert r.status_code == 503 and r.json()["error"]["code"] == "insecure_configuration"


def test_compose_requires_a_key_and_never_evicts():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["api"]["environment"]["JMLR_API_KEYS"].startswith("${JMLR_API_KEYS:?")
    redis_cmd = compose["services"]["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"


def test_docs_page_works_offline(client):
    html = client.get("/docs").text
    assert "cdn" not in html.lower()
    for asset in re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', html):
        assert client.get(asset).status_code == 200, asset


# ----------------------------------------------------------------------------- 7: smaller ones


def test_openapi_lists_auth_and_parse_errors(client):
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/reconstruct"]["post"]["responses"]
    assert {"400", "401", "403", "429", "503", "504"} <= set(responses)
    assert "403" in spec["paths"]["/devices"]["post"]["responses"]


def test_405_allow_lists_every_method(client):
    r = client.delete("/devices")
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "POST"}  # was "GET"


def test_mesh_id_with_a_dot_is_404(client):
    r = client.get("/mesh/abc.def")
    assert r.status_code == 404 and _code(r) == "mesh_not_found"


@pytest.mark.parametrize("device_id", [".", "..", "..."])
def test_dot_device_ids_are_refused(client, device_id):
    r = client.post("/devices", json={"device_id": device_id, "fx": 500, "fy": 500, "cx": 1, "cy": 1,
                                      "width": 2, "height": 2})
    assert r.status_code == 422


def test_readyz_does_not_show_server_paths(store, tmp_path):
    with TestClient(create_app(_settings(store, tmp_path, model_name=str(tmp_path / "nowhere" / "model")))) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and str(tmp_path) not in r.text and "model" in r.json()["error"]["message"]


def test_dropped_request_keeps_its_pixels_reserved_until_its_decode_ends():
    # A cancelled request (client gone, deadline) cannot stop its decoding thread; the
    # image is still in memory until the thread returns, so its pixels stay counted.
    from service.imaging import ImageHeader
    from service.pipeline import Engine, ReconstructRequest

    engine = Engine(Settings(_env_file=None, decode_pixel_budget=1000), Metrics())
    engine.model = SimpleNamespace(input_size=64)
    release = __import__("threading").Event()
    engine._decode_locate_crop = lambda *a: release.wait(5)

    async def go():
        task = asyncio.ensure_future(engine._image_stage(
            ReconstructRequest(data=b""), ImageHeader(30, 30, "PNG"), 1, time.monotonic() + 5))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        held = engine.pixel_budget.in_use
        release.set()
        for _ in range(500):  # the thread returns, then its done-callback runs on the loop
            if engine.pixel_budget.in_use == 0:
                break
            await asyncio.sleep(0.01)
        return held, engine.pixel_budget.in_use

    held, after = asyncio.run(go())
    assert (held, after) == (900, 0)

"""The storage contract, run against both backends.

The Redis variant needs a server: set ``JMLR_TEST_REDIS_URL`` (e.g.
``redis://127.0.0.1:6390/0`` after ``redis-server --port 6390 --save ''``).
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from service.storage import RedisStorage, SqliteStorage, create_storage, new_mesh_id


def _device(device_id: str, fx: float = 1000.0) -> dict:
    return {
        "device_id": device_id, "name": None, "fx": fx, "fy": fx, "cx": 320.0, "cy": 240.0,
        "width": 640, "height": 480, "distortion": {"k1": 0.1, "k2": 0.0, "p1": 0.0, "p2": 0.0, "k3": 0.0},
        "created": "2024-01-01T00:00:00Z", "updated": "2024-01-01T00:00:00Z",
    }


def _mesh_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "vertices_world": rng.normal(size=(37, 3)).astype(np.float32),
        "faces": rng.integers(0, 37, size=(50, 3)).astype(np.int32),
        "R_cv": np.diag([1.0, -1.0, -1.0]),
        "t_cv": np.array([0.01, -0.02, 0.5]),
    }


def test_device_round_trip(storage):
    assert storage.get_device("cam-b") is None
    storage.put_device("cam-b", _device("cam-b"))
    storage.put_device("cam-a", _device("cam-a", fx=800.0))
    assert storage.get_device("cam-b") == _device("cam-b")
    assert [d["device_id"] for d in storage.list_devices()] == ["cam-a", "cam-b"]

    storage.put_device("cam-b", _device("cam-b", fx=1234.5))  # replace, not duplicate
    assert storage.get_device("cam-b")["fx"] == 1234.5
    assert len(storage.list_devices()) == 2

    assert storage.delete_device("cam-b") is True
    assert storage.delete_device("cam-b") is False
    assert storage.get_device("cam-b") is None
    assert [d["device_id"] for d in storage.list_devices()] == ["cam-a"]


def test_create_device_never_overwrites(storage):
    assert storage.create_device("cam", _device("cam", fx=500.0)) is True
    assert storage.create_device("cam", _device("cam", fx=999.0)) is False
    assert storage.get_device("cam")["fx"] == 500.0
    assert [d["device_id"] for d in storage.list_devices()] == ["cam"]


def test_create_device_race_has_one_winner(storage):
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def attempt(n: int) -> None:
        barrier.wait()
        results.append(storage.create_device("contested", _device("contested", fx=100.0 + n)))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]


def test_mesh_round_trip_is_exact(storage):
    arrays = _mesh_arrays()
    mesh_id = new_mesh_id()
    meta = {"model": {"name": "m", "version": "1"}, "image_size": [800, 600], "camera": {"fx": 1.0}}
    before = time.time()
    storage.put_mesh(mesh_id, meta, arrays, ttl_s=60)
    found = storage.get_mesh(mesh_id)
    assert found is not None
    got_meta, got = found
    assert set(got) == set(arrays)
    for key, value in arrays.items():
        assert got[key].dtype == value.dtype
        np.testing.assert_array_equal(got[key], value)
    assert got_meta["model"] == meta["model"] and got_meta["image_size"] == [800, 600]
    assert before <= got_meta["stored_at"] <= time.time()
    assert got_meta["expires_at"] == pytest.approx(got_meta["stored_at"] + 60)
    assert "expires_at" not in meta  # the caller's dict is not mutated
    assert storage.get_mesh(new_mesh_id()) is None


def test_mesh_expires(storage):
    mesh_id = new_mesh_id()
    storage.put_mesh(mesh_id, {}, _mesh_arrays(), ttl_s=0.15)
    assert storage.get_mesh(mesh_id) is not None
    time.sleep(0.3)
    assert storage.get_mesh(mesh_id) is None


def test_purge_expired_keeps_live_meshes(storage):
    dead, live = new_mesh_id(), new_mesh_id()
    storage.put_mesh(dead, {}, _mesh_arrays(1), ttl_s=0.1)
    storage.put_mesh(live, {}, _mesh_arrays(2), ttl_s=60)
    time.sleep(0.2)
    purged = storage.purge_expired()
    assert purged == (1 if isinstance(storage, SqliteStorage) else 0)  # Redis expires keys itself
    assert storage.get_mesh(dead) is None
    assert storage.get_mesh(live) is not None
    assert storage.purge_expired() == 0


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "", "x" * 65, ".."])
def test_mesh_ids_cannot_escape(storage, bad_id):
    with pytest.raises(ValueError):
        storage.put_mesh(bad_id, {}, _mesh_arrays(), ttl_s=60)
    assert storage.get_mesh(bad_id) is None


def test_new_mesh_id_is_unguessable_and_storable():
    ids = {new_mesh_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) >= 20 for i in ids)


def test_sqlite_files_are_atomic_and_purged(tmp_path):
    store = SqliteStorage(tmp_path)
    mesh_id = new_mesh_id()
    store.put_mesh(mesh_id, {}, _mesh_arrays(), ttl_s=0.05)
    files = sorted(p.name for p in (tmp_path / "meshes").iterdir())
    assert files == [f"{mesh_id}.npz"]  # no temp file left behind
    time.sleep(0.1)
    assert store.purge_expired() == 1
    assert list((tmp_path / "meshes").iterdir()) == []
    store.close()


def test_sqlite_persists_across_reopen(tmp_path):
    store = SqliteStorage(tmp_path)
    store.put_device("d1", _device("d1"))
    mesh_id = new_mesh_id()
    store.put_mesh(mesh_id, {"k": 1}, _mesh_arrays(), ttl_s=60)
    store.close()
    again = SqliteStorage(tmp_path)
    assert again.get_device("d1") == _device("d1")
    assert again.get_mesh(mesh_id)[0]["k"] == 1
    again.close()


def test_sqlite_is_thread_safe(tmp_path):
    store = SqliteStorage(tmp_path)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                store.put_device(f"t{n}-{i}", _device(f"t{n}-{i}"))
                assert store.get_device(f"t{n}-{i}") is not None
            store.put_mesh(new_mesh_id(), {}, _mesh_arrays(n), ttl_s=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_devices()) == 120
    assert len(list((tmp_path / "meshes").glob("*.npz"))) == 6
    store.close()


def test_create_storage_picks_backend(tmp_path):
    s = create_storage(SimpleNamespace(storage=None, redis_url=None, data_dir=tmp_path))
    assert isinstance(s, SqliteStorage) and s.data_dir == tmp_path
    s.close()
    # A Redis URL alone selects Redis (no connection is made until first use).
    r = create_storage(SimpleNamespace(storage=None, redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path))
    assert isinstance(r, RedisStorage)
    r.close()
    forced = create_storage(SimpleNamespace(storage="sqlite", redis_url="redis://x:1/0", data_dir=tmp_path))
    assert isinstance(forced, SqliteStorage)
    forced.close()
    with pytest.raises(ValueError, match="JMLR_REDIS_URL"):
        create_storage(SimpleNamespace(storage="redis", redis_url=None, data_dir=tmp_path))

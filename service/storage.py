"""Where the service keeps device records and reconstructed meshes.

Two backends behind one protocol:

- ``SqliteStorage``: embedded, the default for a single process. Records live in SQLite
  (WAL, so readers never wait on the writer); mesh arrays are ``.npz`` files next to it
  because blobs that big make SQLite pages churn for nothing.
- ``RedisStorage``: for several replicas behind a load balancer, so that a mesh made by
  one replica can be downloaded from another. Redis expires meshes itself.

Mesh expiry is the storage's job: ``put_mesh`` records ``stored_at`` and ``expires_at``
(Unix seconds) in the meta it keeps, and ``get_mesh`` never returns an expired mesh, even
before ``purge_expired`` has run.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

# Ids end up in file names and Redis keys: refuse anything that could escape either.
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def new_mesh_id() -> str:
    return secrets.token_urlsafe(16)


def _valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value)) and value not in (".", "..")


def _arrays_to_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _arrays_from_bytes(data: bytes) -> dict[str, np.ndarray]:
    # allow_pickle=False: the bytes may come from a shared Redis; never unpickle them.
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _stamp(meta: dict[str, Any], ttl_s: float) -> dict[str, Any]:
    now = time.time()
    stamped = dict(meta)
    stamped["stored_at"] = now
    stamped["expires_at"] = now + float(ttl_s)
    return stamped


@runtime_checkable
class Storage(Protocol):
    def put_device(self, device_id: str, record: dict) -> None: ...
    def create_device(self, device_id: str, record: dict) -> bool: ...
    def get_device(self, device_id: str) -> dict | None: ...
    def list_devices(self) -> list[dict]: ...
    def delete_device(self, device_id: str) -> bool: ...
    def put_mesh(self, mesh_id: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float) -> None: ...
    def get_mesh(self, mesh_id: str) -> tuple[dict, dict[str, np.ndarray]] | None: ...
    def purge_expired(self) -> int: ...
    def close(self) -> None: ...


class SqliteStorage:
    """SQLite records + atomic ``.npz`` files under ``data_dir``. Thread-safe."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.mesh_dir = self.data_dir / "meshes"
        self.mesh_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "jmlr.sqlite3"
        # One connection per thread: sqlite3 connections must not be shared mid-statement,
        # and uvicorn runs sync routes on a thread pool.
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        with self._conn() as conn:
            conn.executescript(
                """
                CREATE TABLE IF NOT EXISTS devices (
                    device_id TEXT PRIMARY KEY,
                    record    TEXT NOT NULL
                );
                CREATE TABLE IF NOT EXISTS meshes (
                    mesh_id    TEXT PRIMARY KEY,
                    meta       TEXT NOT NULL,
                    expires_at REAL NOT NULL
                );
                CREATE INDEX IF NOT EXISTS meshes_expires ON meshes (expires_at);
                """
            )

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("storage is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _mesh_path(self, mesh_id: str) -> Path:
        return self.mesh_dir / f"{mesh_id}.npz"

    # -- devices ----------------------------------------------------------------------
    def put_device(self, device_id: str, record: dict) -> None:
        with self._conn() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO devices (device_id, record) VALUES (?, ?)",
                (device_id, json.dumps(record)),
            )

    def create_device(self, device_id: str, record: dict) -> bool:
        """Insert only if the id is free; False if taken. Atomic, unlike get-then-put."""
        try:
            with self._conn() as conn:
                conn.execute(
                    "INSERT INTO devices (device_id, record) VALUES (?, ?)", (device_id, json.dumps(record))
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def get_device(self, device_id: str) -> dict | None:
        row = self._conn().execute(
            "SELECT record FROM devices WHERE device_id = ?", (device_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def list_devices(self) -> list[dict]:
        rows = self._conn().execute("SELECT record FROM devices ORDER BY device_id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def delete_device(self, device_id: str) -> bool:
        with self._conn() as conn:
            cur = conn.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
        return cur.rowcount > 0

    # -- meshes -----------------------------------------------------------------------
    def put_mesh(self, mesh_id: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float) -> None:
        if not _valid_id(mesh_id):
            raise ValueError(f"invalid mesh id {mesh_id!r}")
        stamped = _stamp(meta, ttl_s)
        # Write the file before the row so a visible row always has its arrays; the
        # temp file + os.replace means a reader never sees half an npz.
        fd, tmp = tempfile.mkstemp(dir=self.mesh_dir, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_arrays_to_bytes(arrays))
            os.replace(tmp, self._mesh_path(mesh_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._conn() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO meshes (mesh_id, meta, expires_at) VALUES (?, ?, ?)",
                (mesh_id, json.dumps(stamped), stamped["expires_at"]),
            )

    def get_mesh(self, mesh_id: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        if not _valid_id(mesh_id):
            return None
        row = self._conn().execute(
            "SELECT meta FROM meshes WHERE mesh_id = ? AND expires_at > ?", (mesh_id, time.time())
        ).fetchone()
        if row is None:
            return None
        try:
            data = self._mesh_path(mesh_id).read_bytes()
        except FileNotFoundError:  # purged between the SELECT and the read
            return None
        return json.loads(row[0]), _arrays_from_bytes(data)

    def purge_expired(self) -> int:
        now = time.time()
        conn = self._conn()
        ids = [r[0] for r in conn.execute("SELECT mesh_id FROM meshes WHERE expires_at <= ?", (now,))]
        for mesh_id in ids:
            self._mesh_path(mesh_id).unlink(missing_ok=True)
        with conn:
            conn.executemany("DELETE FROM meshes WHERE mesh_id = ?", [(i,) for i in ids])
        # Temp files a crashed writer left behind; an hour is far beyond any real write.
        for tmp in self.mesh_dir.glob(".tmp-*"):
            try:
                if tmp.stat().st_mtime < now - 3600:
                    tmp.unlink()
            except FileNotFoundError:
                pass
        return len(ids)

    def close(self) -> None:
        with self._all_lock:
            self._closed = True
            for conn in self._all:
                conn.close()
            self._all.clear()


class RedisStorage:
    """Devices as JSON strings + a set index; meshes as one hash (meta, npz) with a TTL."""

    def __init__(self, url: str, prefix: str = "jmlr:", client: Any | None = None) -> None:
        import redis  # imported here so the sqlite default never needs a Redis client

        self.prefix = prefix
        # Raw bytes (no decode_responses): the npz field is binary.
        self.client = client or redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def _device_key(self, device_id: str) -> str:
        return f"{self.prefix}device:{device_id}"

    @property
    def _index_key(self) -> str:
        return f"{self.prefix}devices"

    def _mesh_key(self, mesh_id: str) -> str:
        return f"{self.prefix}mesh:{mesh_id}"

    def ping(self) -> bool:
        return bool(self.client.ping())

    def put_device(self, device_id: str, record: dict) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._device_key(device_id), json.dumps(record))
        pipe.sadd(self._index_key, device_id)
        pipe.execute()

    def create_device(self, device_id: str, record: dict) -> bool:
        """SET NX: two replicas racing on one id cannot both win."""
        if not self.client.set(self._device_key(device_id), json.dumps(record), nx=True):
            return False
        self.client.sadd(self._index_key, device_id)
        return True

    def get_device(self, device_id: str) -> dict | None:
        raw = self.client.get(self._device_key(device_id))
        return json.loads(raw) if raw is not None else None

    def list_devices(self) -> list[dict]:
        ids = sorted(i.decode() for i in self.client.smembers(self._index_key))
        if not ids:
            return []
        raws = self.client.mget([self._device_key(i) for i in ids])
        # A record deleted between SMEMBERS and MGET shows as None: skip it.
        return [json.loads(r) for r in raws if r is not None]

    def delete_device(self, device_id: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._device_key(device_id))
        pipe.srem(self._index_key, device_id)
        deleted, _ = pipe.execute()
        return bool(deleted)

    def put_mesh(self, mesh_id: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float) -> None:
        if not _valid_id(mesh_id):
            raise ValueError(f"invalid mesh id {mesh_id!r}")
        stamped = _stamp(meta, ttl_s)
        key = self._mesh_key(mesh_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping={"meta": json.dumps(stamped), "npz": _arrays_to_bytes(arrays)})
        pipe.pexpire(key, max(1, int(round(float(ttl_s) * 1000))))
        pipe.execute()

    def get_mesh(self, mesh_id: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        if not _valid_id(mesh_id):
            return None
        meta_raw, npz = self.client.hmget(self._mesh_key(mesh_id), ["meta", "npz"])
        if meta_raw is None or npz is None:
            return None
        meta = json.loads(meta_raw)
        if meta.get("expires_at", float("inf")) <= time.time():
            return None
        return meta, _arrays_from_bytes(npz)

    def purge_expired(self) -> int:
        return 0  # Redis drops expired keys itself

    def close(self) -> None:
        self.client.close()


def create_storage(settings: Any) -> Storage:
    """Pick the backend from settings: ``storage`` if set, else Redis when a URL is given."""
    kind = getattr(settings, "storage", None)
    redis_url = getattr(settings, "redis_url", None)
    if kind is None:
        kind = "redis" if redis_url else "sqlite"
    if kind == "redis":
        if not redis_url:
            raise ValueError("storage 'redis' needs JMLR_REDIS_URL")
        prefix = getattr(settings, "redis_prefix", None) or "jmlr:"
        return RedisStorage(redis_url, prefix=prefix)
    if kind == "sqlite":
        return SqliteStorage(Path(getattr(settings, "data_dir", "./var")))
    raise ValueError(f"unknown storage {kind!r} (expected 'sqlite' or 'redis')")

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

Video sessions (``service/sessions.py``) keep their state here too, one record per
session with a TTL that each frame renews: ``get_session`` / ``put_session`` (a
compare-and-set on the record's version, so two replicas answering frames of one session
at once cannot both write) / ``delete_session``. Expired sessions are never returned.

Failures of the backend itself (Redis unreachable, SQLite locked or out of disk) leave
every method as ``StorageUnavailableError`` or ``StorageFullError``, so callers handle one
family of errors whatever the backend. Size bounds: SQLite mesh files are capped at
``max_mesh_bytes`` with the **oldest meshes evicted first** (before their TTL) to make
room; Redis never evicts a stored mesh early: once its memory use would pass
``mesh_memory_fraction`` of ``maxmemory`` a new mesh is refused (``StorageFullError``).
"""

from __future__ import annotations

import errno
import functools
import io
import json
import logging
import os
import re
import secrets
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger("service.storage")

# Ids end up in file names and Redis keys: refuse anything that could escape either.
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def new_mesh_id() -> str:
    return secrets.token_urlsafe(16)


def new_version() -> str:
    """A session record's version: random, so a record that expired and was created again
    never matches a version read before."""
    return secrets.token_hex(8)


def _valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value)) and value not in (".", "..")


def _arrays_to_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    # numpy's stub types **kwds as if one could be its allow_pickle flag; none is.
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return buf.getvalue()


def _raw(value: bytes | str) -> bytes:
    # The Redis client is made without decode_responses (the npz field is binary);
    # redis-py's types also allow the str of a client made with it.
    if isinstance(value, str):
        raise TypeError("the Redis client must return bytes (decode_responses=False)")
    return value


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


class StorageError(Exception):
    """The storage backend failed; ``code`` is the API error code for it."""

    # A Literal: it is also the face's ``mesh_status`` in the response.
    code: ClassVar[Literal["storage_error", "storage_unavailable", "storage_full"]] = "storage_error"


class StorageUnavailableError(StorageError):
    """The backend cannot be reached or answered too late (Redis down, SQLite locked)."""

    code = "storage_unavailable"


class StorageFullError(StorageError):
    """The backend has no room for this write (memory budget, disk)."""

    code = "storage_full"


def _translating(translate):
    """Class decorator: exceptions from public methods go through ``translate(exc)``, which
    returns a ``StorageError`` to raise instead, or None to let the original through."""

    def wrap(fn):
        @functools.wraps(fn)
        def method(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except StorageError:
                raise
            except Exception as exc:
                err = translate(exc)
                if err is None:
                    raise
                raise err from exc

        return method

    def decorate(cls):
        for name, fn in list(vars(cls).items()):
            if callable(fn) and not name.startswith("_"):
                setattr(cls, name, wrap(fn))
        return cls

    return decorate


def _sqlite_error(exc: Exception) -> StorageError | None:
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        if "full" in str(exc):
            return StorageFullError(f"sqlite: {exc}")
        return StorageUnavailableError(f"sqlite: {exc}")
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFullError(f"mesh files: {exc.strerror}")
        return StorageUnavailableError(f"mesh files: {exc.strerror or exc}")
    return None


def _redis_error(exc: Exception) -> StorageError | None:
    import redis.exceptions as rex

    if isinstance(exc, rex.ResponseError) and str(exc).startswith("OOM"):
        return StorageFullError("redis is out of memory (maxmemory reached)")
    if isinstance(exc, rex.ConnectionError | rex.TimeoutError | rex.BusyLoadingError | rex.ReadOnlyError):
        return StorageUnavailableError(f"redis: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return StorageUnavailableError(f"redis: {exc}")
    return None


@runtime_checkable
class Storage(Protocol):
    def put_device(self, device_id: str, record: dict) -> None: ...
    def create_device(self, device_id: str, record: dict) -> bool: ...
    def replace_device(self, device_id: str, record: dict) -> dict | None: ...
    def get_device(self, device_id: str) -> dict | None: ...
    def list_devices(self) -> list[dict]: ...
    def delete_device(self, device_id: str) -> bool: ...
    def put_mesh(self, mesh_id: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float) -> int: ...
    def get_mesh(self, mesh_id: str) -> tuple[dict, dict[str, np.ndarray]] | None: ...
    def get_session(self, key: str) -> tuple[dict, dict[str, np.ndarray], str] | None: ...
    def put_session(self, key: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float,
                    expected_version: str | None) -> str | None: ...
    def delete_session(self, key: str) -> bool: ...
    def purge_expired(self) -> int: ...
    def ping(self) -> dict: ...
    def close(self) -> None: ...


def _replaced(old: dict, record: dict) -> dict:
    # A replacement keeps the creation time of what it replaces.
    return {**record, "created": old.get("created", record.get("created"))}


@_translating(_sqlite_error)
class SqliteStorage:
    """SQLite records + atomic ``.npz`` files under ``data_dir``. Thread-safe.

    ``max_mesh_bytes`` caps the mesh files: a new mesh first evicts the oldest stored
    meshes (oldest ``stored_at`` first, even before their TTL) until it fits; a mesh
    larger than the whole cap is refused with ``StorageFullError``.
    """

    # Temp files and unindexed mesh files older than this are a crashed writer's leftovers.
    ORPHAN_AGE_S = 60.0

    def __init__(self, data_dir: str | os.PathLike[str], max_mesh_bytes: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.mesh_dir = self.data_dir / "meshes"
        self.mesh_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "jmlr.sqlite3"
        self.max_mesh_bytes = max_mesh_bytes
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
                CREATE TABLE IF NOT EXISTS sessions (
                    key        TEXT PRIMARY KEY,
                    version    TEXT NOT NULL,
                    meta       TEXT NOT NULL,
                    npz        BLOB NOT NULL,
                    expires_at REAL NOT NULL
                );
                CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_at);
                """
            )
            columns = {r[1] for r in conn.execute("PRAGMA table_info(meshes)")}
            if "size_bytes" not in columns:  # databases made before the size cap
                conn.execute("ALTER TABLE meshes ADD COLUMN size_bytes INTEGER NOT NULL DEFAULT 0")
                conn.execute("ALTER TABLE meshes ADD COLUMN stored_at REAL NOT NULL DEFAULT 0")
            # The running total lives in the database, kept by triggers, so that several
            # processes sharing data_dir agree on it without summing every row per write.
            conn.executescript(
                """
                CREATE INDEX IF NOT EXISTS meshes_stored ON meshes (stored_at);
                CREATE TABLE IF NOT EXISTS mesh_usage (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);
                INSERT OR IGNORE INTO mesh_usage (id, bytes) SELECT 0, COALESCE(SUM(size_bytes), 0) FROM meshes;
                CREATE TRIGGER IF NOT EXISTS mesh_usage_ins AFTER INSERT ON meshes
                    BEGIN UPDATE mesh_usage SET bytes = bytes + NEW.size_bytes WHERE id = 0; END;
                CREATE TRIGGER IF NOT EXISTS mesh_usage_del AFTER DELETE ON meshes
                    BEGIN UPDATE mesh_usage SET bytes = bytes - OLD.size_bytes WHERE id = 0; END;
                """
            )
        self._remove_orphans()

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("storage is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE where a
            # read decides a write), everything else autocommits.
            conn = sqlite3.connect(self.db_path, timeout=5.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _transaction(self):
        conn = self._conn()
        return _Immediate(conn)

    def _mesh_path(self, mesh_id: str) -> Path:
        return self.mesh_dir / f"{mesh_id}.npz"

    # -- devices ----------------------------------------------------------------------
    def put_device(self, device_id: str, record: dict) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO devices (device_id, record) VALUES (?, ?)", (device_id, json.dumps(record))
        )

    def create_device(self, device_id: str, record: dict) -> bool:
        """Insert only if the id is free; False if taken. Atomic, unlike get-then-put."""
        try:
            self._conn().execute("INSERT INTO devices (device_id, record) VALUES (?, ?)",
                                 (device_id, json.dumps(record)))
        except sqlite3.IntegrityError:
            return False
        return True

    def replace_device(self, device_id: str, record: dict) -> dict | None:
        """Replace an existing device, keeping its ``created``; None if there is none.
        One transaction, so a concurrent delete cannot be undone by the replace."""
        with self._transaction() as conn:
            row = conn.execute("SELECT record FROM devices WHERE device_id = ?", (device_id,)).fetchone()
            if row is None:
                return None
            new = _replaced(json.loads(row[0]), record)
            conn.execute("UPDATE devices SET record = ? WHERE device_id = ?", (json.dumps(new), device_id))
        return new

    def get_device(self, device_id: str) -> dict | None:
        row = self._conn().execute(
            "SELECT record FROM devices WHERE device_id = ?", (device_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def list_devices(self) -> list[dict]:
        rows = self._conn().execute("SELECT record FROM devices ORDER BY device_id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def delete_device(self, device_id: str) -> bool:
        cur = self._conn().execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
        return cur.rowcount > 0

    # -- meshes -----------------------------------------------------------------------
    def mesh_bytes(self) -> int:
        """Bytes of mesh files the database accounts for."""
        return int(self._conn().execute("SELECT bytes FROM mesh_usage WHERE id = 0").fetchone()[0])

    def put_mesh(self, mesh_id: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float) -> int:
        """Store a mesh; returns how many older meshes were evicted to make room."""
        if not _valid_id(mesh_id):
            raise ValueError(f"invalid mesh id {mesh_id!r}")
        stamped = _stamp(meta, ttl_s)
        data = _arrays_to_bytes(arrays)
        size = len(data)
        cap = self.max_mesh_bytes
        if cap is not None and size > cap:
            raise StorageFullError(f"a mesh of {size} bytes is larger than the mesh storage cap ({cap} bytes)")
        # Write the file before the row so a visible row always has its arrays; the
        # temp file + os.replace means a reader never sees half an npz.
        fd, tmp = tempfile.mkstemp(dir=self.mesh_dir, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self._mesh_path(mesh_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        evicted: list[str] = []
        try:
            with self._transaction() as conn:
                if cap is not None:
                    excess = self._usage(conn) + size - cap
                    if excess > 0:
                        evicted = self._oldest_covering(conn, excess)
                        conn.executemany("DELETE FROM meshes WHERE mesh_id = ?", [(i,) for i in evicted])
                conn.execute(
                    "INSERT OR REPLACE INTO meshes (mesh_id, meta, expires_at, size_bytes, stored_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (mesh_id, json.dumps(stamped), stamped["expires_at"], size, stamped["stored_at"]),
                )
        except BaseException:
            self._mesh_path(mesh_id).unlink(missing_ok=True)  # no row will ever point at it
            raise
        for old in evicted:
            self._mesh_path(old).unlink(missing_ok=True)
        if evicted:
            log.info("mesh storage cap %d bytes: evicted the %d oldest meshes", cap, len(evicted))
        return len(evicted)

    @staticmethod
    def _usage(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT bytes FROM mesh_usage WHERE id = 0").fetchone()[0])

    @staticmethod
    def _oldest_covering(conn: sqlite3.Connection, excess: int) -> list[str]:
        ids, freed = [], 0
        for mesh_id, size in conn.execute("SELECT mesh_id, size_bytes FROM meshes ORDER BY stored_at, mesh_id"):
            if freed >= excess:
                break
            ids.append(mesh_id)
            freed += size
        return ids

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
        except FileNotFoundError:  # purged or evicted between the SELECT and the read
            return None
        return json.loads(row[0]), _arrays_from_bytes(data)

    # -- sessions ---------------------------------------------------------------------
    def get_session(self, key: str) -> tuple[dict, dict[str, np.ndarray], str] | None:
        """(meta, arrays, version) of a live session, or None."""
        row = self._conn().execute(
            "SELECT meta, npz, version FROM sessions WHERE key = ? AND expires_at > ?", (key, time.time())
        ).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), _arrays_from_bytes(row[1]), row[2]

    def put_session(self, key: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float,
                    expected_version: str | None) -> str | None:
        """Write a session if its live version is still ``expected_version`` (None: only if
        there is no live one); returns the new version, or None when another writer won."""
        data = _arrays_to_bytes(arrays)
        version = new_version()
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute("SELECT version FROM sessions WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
            if (row[0] if row else None) != expected_version:
                return None
            conn.execute(
                "INSERT OR REPLACE INTO sessions (key, version, meta, npz, expires_at) VALUES (?, ?, ?, ?, ?)",
                (key, version, json.dumps(meta), data, now + float(ttl_s)),
            )
        return version

    def delete_session(self, key: str) -> bool:
        cur = self._conn().execute("DELETE FROM sessions WHERE key = ? AND expires_at > ?", (key, time.time()))
        return cur.rowcount > 0

    def purge_expired(self) -> int:
        now = time.time()
        conn = self._conn()
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        ids = [r[0] for r in conn.execute("SELECT mesh_id FROM meshes WHERE expires_at <= ?", (now,))]
        with self._transaction() as tx:
            tx.executemany("DELETE FROM meshes WHERE mesh_id = ?", [(i,) for i in ids])
        for mesh_id in ids:
            self._mesh_path(mesh_id).unlink(missing_ok=True)
        self._remove_orphans()
        return len(ids)

    def _remove_orphans(self) -> None:
        """Delete what a writer killed mid-write left: temp files, and mesh files whose
        row was never committed. Only files older than ORPHAN_AGE_S, so a write in
        progress in another process is left alone."""
        cutoff = time.time() - self.ORPHAN_AGE_S
        conn = self._conn()
        for path in self.mesh_dir.iterdir():
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                if path.name.startswith(".tmp-") or (path.suffix == ".npz" and conn.execute(
                    "SELECT 1 FROM meshes WHERE mesh_id = ?", (path.stem,)
                ).fetchone() is None):
                    path.unlink()
            except FileNotFoundError:
                pass

    def ping(self) -> dict:
        """Cheap health check: the database answers; raises StorageError otherwise."""
        self._conn().execute("SELECT 1").fetchone()
        return {"backend": "sqlite", "mesh_bytes": self.mesh_bytes(), "max_mesh_bytes": self.max_mesh_bytes}

    def close(self) -> None:
        with self._all_lock:
            self._closed = True
            for conn in self._all:
                conn.close()
            self._all.clear()


class _Immediate:
    """``with`` block running as one ``BEGIN IMMEDIATE`` transaction (the write lock is
    taken up front, so a read that decides a write cannot race another writer)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


# Create-if-absent and its index entry in one atomic step: a crash between SET NX and SADD
# used to leave a device that GET found but the list never showed.
_CREATE_DEVICE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('SADD', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


# Compare-and-set of a session record: write only if its version is still the one read.
_PUT_SESSION = """
local current = redis.call('HGET', KEYS[1], 'version')
if current == false then current = '' end
if current ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'meta', ARGV[3], 'npz', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


@_translating(_redis_error)
class RedisStorage:
    """Devices as JSON strings + a set index; meshes as one hash (meta, npz) with a TTL.

    Meshes are never evicted before their TTL by this class: a mesh that would take
    Redis past ``mesh_memory_fraction`` of its ``maxmemory`` is refused
    (``StorageFullError``), which leaves room for device records and for writes already
    acknowledged. Run Redis with ``maxmemory-policy noeviction`` so Redis itself never
    drops an acknowledged key either (``ping`` reports the policy in use).
    """

    def __init__(
        self,
        url: str,
        prefix: str = "jmlr:",
        client: Any | None = None,
        *,
        timeout_s: float = 2.0,
        mesh_memory_fraction: float = 0.9,
    ) -> None:
        import redis  # imported here so the sqlite default never needs a Redis client

        self.prefix = prefix
        self.mesh_memory_fraction = mesh_memory_fraction
        # Raw bytes (no decode_responses): the npz field is binary. Short timeouts: a hung
        # Redis must cost a request a few seconds at most, not its whole deadline.
        self.client = client or redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._create_device = self.client.register_script(_CREATE_DEVICE)
        self._put_session = self.client.register_script(_PUT_SESSION)
        self._memory: tuple[float, int, int] | None = None  # (checked at, used, maxmemory)
        self._memory_lock = threading.Lock()

    def _device_key(self, device_id: str) -> str:
        return f"{self.prefix}device:{device_id}"

    @property
    def _index_key(self) -> str:
        return f"{self.prefix}devices"

    def _mesh_key(self, mesh_id: str) -> str:
        return f"{self.prefix}mesh:{mesh_id}"

    def ping(self) -> dict:
        self.client.ping()
        info = self.client.info("memory")
        policy = info.get("maxmemory_policy", "unknown")
        if isinstance(policy, bytes):
            policy = policy.decode()
        return {
            "backend": "redis",
            "used_memory": int(info.get("used_memory", 0)),
            "maxmemory": int(info.get("maxmemory", 0)),
            "maxmemory_policy": policy,
            "evicts_meshes": policy not in ("noeviction",) and int(info.get("maxmemory", 0)) > 0,
        }

    def put_device(self, device_id: str, record: dict) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._device_key(device_id), json.dumps(record))
        pipe.sadd(self._index_key, device_id)
        pipe.execute()

    def create_device(self, device_id: str, record: dict) -> bool:
        """SET NX + index in one Lua script: two replicas racing on one id cannot both win,
        and no crash leaves a record outside the index."""
        keys = [self._device_key(device_id), self._index_key]
        return bool(self._create_device(keys=keys, args=[json.dumps(record), device_id]))

    def replace_device(self, device_id: str, record: dict) -> dict | None:
        """WATCH/MULTI: the replace fails over to a retry if the device changed or was
        deleted meanwhile, so a concurrent DELETE is never undone."""
        import redis

        key = self._device_key(device_id)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.unwatch()
                        return None
                    new = _replaced(json.loads(raw), record)
                    pipe.multi()
                    pipe.set(key, json.dumps(new))
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue

    def get_device(self, device_id: str) -> dict | None:
        raw = self.client.get(self._device_key(device_id))
        return json.loads(raw) if raw is not None else None

    def list_devices(self) -> list[dict]:
        ids = sorted(_raw(i).decode() for i in self.client.smembers(self._index_key))
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

    def _check_memory(self, size: int) -> None:
        """Refuse a mesh that would take Redis past its mesh budget. INFO is read at most
        every 0.5 s; writes in between are added to the last reading."""
        with self._memory_lock:
            now = time.monotonic()
            if self._memory is None or now - self._memory[0] > 0.5:
                info = self.client.info("memory")
                self._memory = (now, int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))
            checked, used, maxmemory = self._memory
            if maxmemory <= 0:
                return  # no limit configured: nothing to protect (ping reports it)
            budget = self.mesh_memory_fraction * maxmemory
            if used + size > budget:
                raise StorageFullError(
                    f"redis mesh budget reached: {used} bytes used, {budget:.0f} allowed for meshes "
                    f"({self.mesh_memory_fraction:g} of maxmemory {maxmemory}); meshes expire and free it"
                )
            self._memory = (checked, used + size, maxmemory)

    def put_mesh(self, mesh_id: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float) -> int:
        if not _valid_id(mesh_id):
            raise ValueError(f"invalid mesh id {mesh_id!r}")
        stamped = _stamp(meta, ttl_s)
        data = _arrays_to_bytes(arrays)
        self._check_memory(len(data))
        key = self._mesh_key(mesh_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping={"meta": json.dumps(stamped), "npz": data})
        pipe.pexpire(key, max(1, int(round(float(ttl_s) * 1000))))
        pipe.execute()
        return 0

    def get_mesh(self, mesh_id: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        if not _valid_id(mesh_id):
            return None
        meta_raw, npz = self.client.hmget(self._mesh_key(mesh_id), ["meta", "npz"])
        if meta_raw is None or npz is None:
            return None
        meta = json.loads(meta_raw)
        if meta.get("expires_at", float("inf")) <= time.time():
            return None
        return meta, _arrays_from_bytes(_raw(npz))

    def _session_key(self, key: str) -> str:
        return f"{self.prefix}session:{key}"

    def get_session(self, key: str) -> tuple[dict, dict[str, np.ndarray], str] | None:
        meta, npz, version = self.client.hmget(self._session_key(key), ["meta", "npz", "version"])
        if not (isinstance(meta, bytes) and isinstance(npz, bytes) and isinstance(version, bytes)):
            return None
        return json.loads(meta), _arrays_from_bytes(npz), version.decode()

    def put_session(self, key: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float,
                    expected_version: str | None) -> str | None:
        """Compare-and-set in one Lua script (see `SqliteStorage.put_session`); Redis
        expires the record ``ttl_s`` after this write."""
        version = new_version()
        args: list[str | bytes | int] = [expected_version or "", version, json.dumps(meta),
                                         _arrays_to_bytes(arrays), max(1, int(round(float(ttl_s) * 1000)))]
        return version if self._put_session(keys=[self._session_key(key)], args=args) else None

    def delete_session(self, key: str) -> bool:
        return bool(self.client.delete(self._session_key(key)))

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
        return RedisStorage(
            redis_url,
            prefix=prefix,
            timeout_s=float(getattr(settings, "storage_timeout_s", 2.0)),
            mesh_memory_fraction=float(getattr(settings, "redis_mesh_memory_fraction", 0.9)),
        )
    if kind == "sqlite":
        return SqliteStorage(
            Path(getattr(settings, "data_dir", "./var")), max_mesh_bytes=getattr(settings, "max_mesh_bytes", None)
        )
    raise ValueError(f"unknown storage {kind!r} (expected 'sqlite' or 'redis')")

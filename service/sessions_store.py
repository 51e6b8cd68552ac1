"""Where video sessions keep their state between frames.

A record is ``(meta, arrays, version)`` under a key (``{scope}:{session_id}``): JSON-able
meta, named numpy arrays (stored as ``.npz`` bytes, never pickled) and a random version.
``put`` is a compare-and-set on the version: a frame writes only if nobody wrote since
it read, so two replicas answering frames of one session at once cannot both win. Every
write renews the record's TTL; an expired record is never returned.

Backends: the mesh storage's (``SqliteStorage`` and ``RedisStorage`` have the session
methods, reached through the service's ``GuardedStorage``), or `MemorySessionStore`: this
process only, bounded by a count (least recently used first out), for one replica or tests.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from .storage import _arrays_from_bytes, _arrays_to_bytes, new_version

Record = tuple[dict[str, Any], dict[str, np.ndarray], str]


class SessionStore(Protocol):
    def get(self, key: str) -> Record | None: ...
    def put(
        self, key: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float, expected_version: str | None
    ) -> str | None: ...
    def delete(self, key: str) -> bool: ...


class MemorySessionStore:
    """Sessions in this process's memory; at most ``max_sessions`` (the least recently
    written are dropped first). Thread-safe."""

    def __init__(self, max_sessions: int = 1000, clock=time.monotonic) -> None:
        self.max_sessions = max_sessions
        self._clock = clock
        self._records: OrderedDict[str, tuple[float, str, dict, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def _live(self, key: str) -> tuple[float, str, dict, bytes] | None:
        rec = self._records.get(key)
        if rec is not None and rec[0] <= self._clock():
            del self._records[key]
            return None
        return rec

    def get(self, key: str) -> Record | None:
        with self._lock:
            rec = self._live(key)
        if rec is None:
            return None
        _, version, meta, data = rec
        return dict(meta), _arrays_from_bytes(data), version

    def put(
        self, key: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float, expected_version: str | None
    ) -> str | None:
        data = _arrays_to_bytes(arrays)  # a copy: the caller's arrays may change after
        with self._lock:
            rec = self._live(key)
            if (rec[1] if rec else None) != expected_version:
                return None
            version = new_version()
            self._records[key] = (self._clock() + float(ttl_s), version, dict(meta), data)
            self._records.move_to_end(key)
            while len(self._records) > self.max_sessions:
                self._records.popitem(last=False)
        return version

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._live(key) is not None and self._records.pop(key, None) is not None


class StorageSessionStore:
    """Sessions in the mesh storage (SQLite or Redis, through the service's guard: its
    failures are ``StorageError``, answered 503)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def get(self, key: str) -> Record | None:
        return self.storage.get_session(key)

    def put(
        self, key: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float, expected_version: str | None
    ) -> str | None:
        return self.storage.put_session(key, meta, arrays, ttl_s, expected_version)

    def delete(self, key: str) -> bool:
        return self.storage.delete_session(key)

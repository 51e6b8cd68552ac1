"""The storage as the routes see it: health state, fast failure and metrics around a backend.

A backend that is down costs every call its connection timeout. After a failure the
guard answers ``StorageUnavailableError`` at once for ``retry_s`` (a circuit breaker),
then lets one call through to try again. A backend that could not even be created at
start (bad path, Redis URL refused) is created again on a later call, so the service
recovers without a restart. Readiness (``/readyz``) reads ``check()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .metrics import Metrics
from .storage import Storage, StorageError, StorageUnavailableError

log = logging.getLogger("service.storage")


class GuardedStorage:
    """Implements the ``Storage`` protocol by delegating to a backend made by ``factory``."""

    def __init__(
        self,
        factory: Callable[[], Storage],
        metrics: Metrics,
        kind: str,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._metrics = metrics
        self.kind = kind
        self.retry_s = retry_s
        self._clock = clock
        self._backend: Storage | None = None
        self._down_until = 0.0
        self._last_error: str | None = None
        self._lock = threading.Lock()
        self._status: tuple[float, dict] | None = None
        metrics.dependency_up.labels(dependency="storage").set(0)

    # ------------------------------------------------------------------ state
    @property
    def backend(self) -> Storage | None:
        return self._backend

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def _get_backend(self) -> Storage:
        backend = self._backend
        if backend is not None:
            return backend
        with self._lock:
            if self._backend is None:
                try:
                    self._backend = self._factory()
                except StorageError:
                    raise
                except Exception as exc:  # a bad path or URL: unavailable until it works
                    raise StorageUnavailableError(f"{self.kind} storage cannot be opened: {exc}") from exc
            return self._backend

    def _failed(self, exc: StorageError) -> None:
        self._metrics.dependency_errors.labels(dependency="storage", code=exc.code).inc()
        if isinstance(exc, StorageUnavailableError):
            first = self._down_until <= self._clock()
            self._down_until = self._clock() + self.retry_s
            self._metrics.dependency_up.labels(dependency="storage").set(0)
            self._status = None
            if first:
                log.error("%s storage unavailable: %s", self.kind, exc)
        self._last_error = str(exc)

    def _call(self, name: str, *args: Any) -> Any:
        if self._down_until > self._clock():
            raise StorageUnavailableError(
                f"{self.kind} storage is unavailable (last error: {self._last_error}); retrying shortly"
            )
        try:
            result = getattr(self._get_backend(), name)(*args)
        except StorageError as exc:
            self._failed(exc)
            raise
        if self._down_until:
            log.warning("%s storage is back", self.kind)
            self._down_until = 0.0
        self._metrics.dependency_up.labels(dependency="storage").set(1)
        return result

    def check(self, max_age_s: float = 1.0) -> dict:
        """Backend status for readiness, cached for ``max_age_s``. Raises
        ``StorageUnavailableError`` while the backend is down."""
        cached = self._status
        if cached is not None and self._clock() - cached[0] < max_age_s:
            return cached[1]
        status = self._call("ping")
        self._status = (self._clock(), status)
        return status

    # ------------------------------------------------------------------ Storage protocol
    def put_device(self, device_id: str, record: dict) -> None:
        return self._call("put_device", device_id, record)

    def create_device(self, device_id: str, record: dict) -> bool:
        return self._call("create_device", device_id, record)

    def replace_device(self, device_id: str, record: dict) -> dict | None:
        return self._call("replace_device", device_id, record)

    def get_device(self, device_id: str) -> dict | None:
        return self._call("get_device", device_id)

    def list_devices(self) -> list[dict]:
        return self._call("list_devices")

    def delete_device(self, device_id: str) -> bool:
        return self._call("delete_device", device_id)

    def put_mesh(self, mesh_id: str, meta: dict, arrays: dict, ttl_s: float) -> int:
        evicted = self._call("put_mesh", mesh_id, meta, arrays, ttl_s) or 0
        if evicted:
            self._metrics.meshes_evicted.inc(evicted)
        return evicted

    def get_mesh(self, mesh_id: str):
        return self._call("get_mesh", mesh_id)

    def get_session(self, key: str):
        return self._call("get_session", key)

    def put_session(self, key: str, meta: dict, arrays: dict, ttl_s: float, expected_version: str | None):
        return self._call("put_session", key, meta, arrays, ttl_s, expected_version)

    def delete_session(self, key: str) -> bool:
        return self._call("delete_session", key)

    def purge_expired(self) -> int:
        return self._call("purge_expired")

    def ping(self) -> dict:
        return self._call("ping")

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

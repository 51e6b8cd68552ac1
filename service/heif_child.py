"""HEIC files are opened and decoded in a child process, never in the service's own.

libheif (through pi-heif) is C code that a crafted file can crash: the fuzz test in
``tests/test_image_formats.py`` found HEIC files whose metadata parse makes pi-heif 1.4.0
(libheif 1.23.0) segfault. In the service's process that would end every request in
flight, so :func:`service.imaging.probe_image` and :func:`service.imaging.decode_image`
hand HEIC uploads to one long-lived child (started on the first HEIC, ~0.5 s) that runs
the same checks and decode with pi-heif's opener registered; the main process never
registers it. A child that dies or stalls is replaced, and its upload answered 422.

One child decodes one file at a time (libheif decodes with its own threads); the pixels
come back through a pipe, so an HEIC briefly holds its pixels twice.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .errors import ApiError

log = logging.getLogger("service.heif")

#: A decode taking longer than this is treated as a stalled decoder: the child is replaced.
HEIF_TIMEOUT_S = 30.0


class HeifChild:
    """The child process and the pipe to it; ``call`` is thread-safe (one call at a time)."""

    def __init__(self, timeout_s: float = HEIF_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Connection | None = None
        self.restarts = 0  # children replaced after a crash or a stall

    def call(self, fn: str, *args: Any) -> Any:
        """Run ``service.imaging``'s local ``fn`` (``"probe"`` or ``"decode"``) in the child.

        Raises:
            ApiError: the child's own answer (bad file, too large), or 422 when the child
                died or stalled on this file.
        """
        with self._lock:
            conn = self._connection()
            try:
                conn.send((fn, args))
                if not conn.poll(self.timeout_s):
                    raise TimeoutError(f"no answer in {self.timeout_s:g} s")
                ok, value = conn.recv()
            except (EOFError, OSError, TimeoutError) as exc:
                code = self._proc.exitcode if self._proc is not None else None
                self._stop()
                self.restarts += 1
                log.warning("the HEIC decoder child failed (%s, exit code %s); it is replaced", exc, code)
                raise ApiError(422, "invalid_image", "the HEIC file could not be decoded: it crashed or stalled "
                               "the decoder, so it is corrupt or malformed") from None
        if ok:
            return value
        status, code, message = value
        raise ApiError(status, code, message)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _connection(self) -> Connection:
        if self._conn is None or self._proc is None or not self._proc.is_alive():
            self._stop()
            ctx = mp.get_context("spawn")  # no fork of a threaded server
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child,), name="jmlr-heif-decoder", daemon=True)
            self._proc.start()
            child.close()
            self._conn = parent
        return self._conn

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(timeout=5)
            self._proc = None


def _serve(conn: Connection) -> None:
    """The child's loop: answer (ok, value) or (False, (status, code, message)) per call."""
    import pi_heif

    from . import imaging

    pi_heif.register_heif_opener()
    local: dict[str, Callable[..., Any]] = {"probe": imaging.probe_local, "decode": imaging.decode_local}
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return  # the service closed the pipe
        try:
            conn.send((True, local[fn](*args)))
        except ApiError as exc:
            conn.send((False, (exc.status_code, exc.code, exc.message)))
        except Exception as exc:  # any other failure of this file is still an answer, not a dead child
            conn.send((False, (422, "invalid_image", f"the HEIC file could not be decoded: {exc}")))


#: The service's one HEIC child.
HEIF_CHILD = HeifChild()

"""HEIC files are opened and decoded in a child process, never in the service's own.

libheif (through pi-heif) is C code that a crafted file can crash: the fuzz test in
``tests/test_image_formats.py`` found HEIC files whose metadata parse makes pi-heif 1.4.0
(libheif 1.23.0) segfault (10 of 4,800 files with random byte flips or cuts). In the
service's process that would end every request in flight, so
:func:`service.imaging.probe_image` and :func:`service.imaging.decode_image` hand HEIC
uploads to one long-lived child (started on the first HEIC, ~0.5 s) that runs the same
checks and decode with pi-heif's opener registered; the main process never registers
it. A child that dies or stalls is replaced, and its upload answered 422.

One child decodes one file at a time (libheif decodes with its own threads); the pixels
come back through a pipe, so an HEIC briefly holds its pixels twice.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .errors import ApiError

log = logging.getLogger("service.heif")

#: A decode taking longer than this is treated as a stalled decoder: the child is replaced.
HEIF_TIMEOUT_S = 30.0


class HeifChild:
    """The child process and the pipes to it; ``call`` is thread-safe (one call at a time)."""

    def __init__(self, timeout_s: float = HEIF_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self.restarts = 0  # children replaced after a crash or a stall

    def call(self, fn: str, *args: Any) -> Any:
        """Run ``service.imaging``'s local ``fn`` (``"probe"`` or ``"decode"``) in the child.

        Raises:
            ApiError: the child's own answer (bad file, too large), or 422 when the child
                died or stalled on this file.
        """
        with self._lock:
            send, recv = self._connections()
            try:
                send.send((fn, args))
                if not recv.poll(self.timeout_s):
                    raise TimeoutError(f"no answer in {self.timeout_s:g} s")
                ok, value = recv.recv()
            except (EOFError, OSError, TimeoutError) as exc:
                code = self._proc.poll() if self._proc is not None else None
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

    def _connections(self) -> tuple[Connection, Connection]:
        if self._send is None or self._recv is None or self._proc is None or self._proc.poll() is not None:
            self._stop()
            # A fresh interpreter on this module, talking over two pipes: no fork of a
            # threaded server, and unlike multiprocessing's spawn it never re-runs the
            # parent's __main__.
            to_child_r, to_child_w = os.pipe()
            from_child_r, from_child_w = os.pipe()
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "service.heif_child", str(to_child_r), str(from_child_w)],
                    pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL)
            finally:
                os.close(to_child_r)
                os.close(from_child_w)
            self._send = Connection(to_child_w, readable=False)
            self._recv = Connection(from_child_r, writable=False)
        return self._send, self._recv

    def _stop(self) -> None:
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self._send = self._recv = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=5)
            self._proc = None


def _serve(recv: Connection, send: Connection) -> None:
    """The child's loop: answer (ok, value) or (False, (status, code, message)) per call."""
    import pi_heif

    from . import imaging

    pi_heif.register_heif_opener()
    local: dict[str, Callable[..., Any]] = {"probe": imaging.probe_local, "decode": imaging.decode_local}
    while True:
        try:
            fn, args = recv.recv()
        except (EOFError, OSError):
            return  # the service closed the pipe
        try:
            send.send((True, local[fn](*args)))
        except ApiError as exc:
            send.send((False, (exc.status_code, exc.code, exc.message)))
        except Exception as exc:  # any other failure of this file is still an answer, not a dead child
            send.send((False, (422, "invalid_image", f"the HEIC file could not be decoded: {exc}")))


#: The service's one HEIC child.
HEIF_CHILD = HeifChild()

if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))

"""ONNX Runtime sessions set up to share a few CPU cores with other work.

The face detector and the network both run through ONNX Runtime, one after the other and
beside PyTorch, OpenCV and the HTTP server in one process. By default ORT's intra-op
threads spin-wait after each run (``session.intra_op.allow_spinning = 1``), so for a
while after a detection they keep the cores busy doing nothing and whatever runs next
(the network, PnP) gets a fraction of the machine: issue 12 measured one 29 ms network
call take 46 ms right after a CenterFace run. Every session here is made with spinning
off, a fixed intra-op thread count and one inter-op thread (the graphs are sequential).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["OrtOptions", "SessionPool", "create_session", "available_providers"]


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


@dataclass(frozen=True)
class OrtOptions:
    """How to run ONNX Runtime sessions.

    Attributes:
        threads: intra-op threads per session; 0 = one per CPU core (``os.cpu_count()``).
        spinning: let idle intra-op threads spin-wait (ORT's default). Off here: it only
            pays when one session has the machine to itself and runs back to back.
        providers: execution providers in order of preference; those not installed are
            skipped (None: CUDA when available, then CPU).
    """

    threads: int = 0
    spinning: bool = False
    providers: tuple[str, ...] | None = None

    def session_options(self) -> Any:
        """An ``onnxruntime.SessionOptions`` with these settings."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads if self.threads > 0 else (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spin = "1" if self.spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return opts

    def provider_list(self) -> list[str]:
        wanted = list(self.providers or ("CUDAExecutionProvider", "CPUExecutionProvider"))
        available = set(available_providers())
        return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


def create_session(model: bytes | str | Path, options: OrtOptions | None = None, log_severity: int = 3) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``model`` (bytes or a file) with ``options``.

    ``log_severity`` 3 (errors only): CenterFace has unused initialisers that warn on load.
    """
    import onnxruntime as ort

    options = options or OrtOptions()
    opts = options.session_options()
    opts.log_severity_level = log_severity
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=opts, providers=options.provider_list())


class SessionPool:
    """``size`` sessions of one model, each run by one caller at a time.

    One session runs one call at a time here (calls are serialised so that CPU use stays
    predictable), so concurrent requests queue for it. On a few cores, one small-image
    call does not use two intra-op threads well (CenterFace at 640x480 on 2 threads costs
    about 1.2x the CPU time of 1 thread), so under load two one-thread sessions finish
    more frames per second than one two-thread session; one call alone then takes longer.
    With ``options.threads == 0`` the cores are split between the sessions.

    ``wide_when_idle`` gets both: one more session with all of ``options``' threads runs a
    call that finds no other call in flight, so a lone frame keeps its latency, and calls
    that overlap run on the narrow sessions. (A call that starts while a wide one runs
    briefly has more threads than cores; with spinning off they only share them.)

    Args:
        model: ONNX bytes or a file.
        options: how each session runs (`OrtOptions`).
        size: how many sessions (>= 1).
        wide_when_idle: with ``size > 1``, add the wide session described above.
    """

    def __init__(self, model: bytes | str | Path, options: OrtOptions | None = None, size: int = 1,
                 wide_when_idle: bool = False) -> None:
        if int(size) < 1:
            raise ValueError(f"a session pool needs at least one session, not {size}")
        wide_options = options or OrtOptions()
        options = wide_options
        if options.threads == 0 and size > 1:
            options = dataclasses.replace(options, threads=max(1, (os.cpu_count() or 1) // int(size)))
        self.options = options
        self.sessions = [create_session(model, options) for _ in range(int(size))]
        self._free: queue.Queue[Any] = queue.Queue()
        for session in self.sessions:
            self._free.put(session)
        self.wide_session = create_session(model, wide_options) if wide_when_idle and size > 1 else None
        self._wide_free = threading.Lock()
        self._count_lock = threading.Lock()
        self._in_flight = 0

    @property
    def size(self) -> int:
        return len(self.sessions)

    def get_inputs(self) -> list[Any]:
        return self.sessions[0].get_inputs()

    def get_outputs(self) -> list[Any]:
        return self.sessions[0].get_outputs()

    def run(self, output_names: list[str] | None, feeds: dict[str, Any]) -> list[Any]:
        """``InferenceSession.run`` on the wide session when nothing else runs (and the
        pool has one), else on the first free session (waits for one)."""
        with self._count_lock:
            alone = self._in_flight == 0
            self._in_flight += 1
        try:
            if alone and self.wide_session is not None and self._wide_free.acquire(blocking=False):
                try:
                    return self.wide_session.run(output_names, feeds)
                finally:
                    self._wide_free.release()
            session = self._free.get()
            try:
                return session.run(output_names, feeds)
            finally:
                self._free.put(session)
        finally:
            with self._count_lock:
                self._in_flight -= 1

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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["OrtOptions", "create_session", "available_providers"]


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

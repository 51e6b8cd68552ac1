"""bench/profile_request.py without a model: the CPU meter on a small app that burns known
CPU on the event loop and in a worker thread, the wrapped parts, and the report."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import FastAPI, File, Form, UploadFile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import profile_request as pr  # noqa: E402


def _burn(seconds: float) -> None:
    t0 = time.thread_time()
    while time.thread_time() - t0 < seconds:
        pass


class _Batcher:
    def predict(self, x):
        _burn(0.004)
        return x


class _Engine:
    def __init__(self) -> None:
        self.batcher = _Batcher()


def _app(engine: _Engine):
    app = FastAPI()

    @app.post("/reconstruct")
    async def reconstruct(image: Annotated[UploadFile, File()], faces: Annotated[str | None, Form()] = None):
        await image.read()
        _burn(0.010)  # on the loop
        await asyncio.to_thread(_burn, 0.020)  # in the pool
        engine.batcher.predict(1)  # the network's stand-in, called here on the loop
        return {"timings_ms": {"decode": 1.0}, "faces": []}

    return app


def test_meter_splits_loop_and_thread_cpu():
    engine = _Engine()
    meter = pr.CpuMeter(_app(engine))
    original_to_thread = asyncio.to_thread

    async def go():
        with pr.measured_parts(meter, engine):
            return await pr.profile_case(meter, b"\xff\xd8 not decoded here", {"faces": "[]"}, requests=3, warmup=1)

    samples, timings = asyncio.run(go())
    assert asyncio.to_thread is original_to_thread  # the run's wrappers are taken off
    assert engine.batcher.predict.__name__ == "predict"
    assert len(samples.loop) == len(samples.all_threads) == 3 and timings == {"decode": 1.0}
    for loop, total in zip(samples.loop, samples.all_threads):
        # 10 ms burnt on the loop, 4 ms in "the network" (also on the loop), 20 ms in the pool
        assert 0.014 <= loop < 0.014 + 0.015, loop
        assert total >= loop + 0.020, (loop, total)
    assert min(samples.parts["thread _burn"]) >= 0.020
    assert min(samples.parts["network"]) >= 0.004
    assert min(samples.parts["endpoint"]) >= 0.014
    for part in ("form", "dependencies", "response"):
        assert len(samples.parts[part]) == 3 and max(samples.parts[part]) < 0.010


def test_report_row_and_table():
    s = pr.Samples(loop=[0.004, 0.005, 0.006], all_threads=[0.015, 0.016, 0.017])
    for name, v in (("form", 0.0003), ("dependencies", 0.0005), ("endpoint", 0.002), ("response", 0.0001),
                    ("network", 0.0036), ("thread decode", 0.0033)):
        for _ in range(3):
            s.add_part(name, v)
    row = pr.report_row("landmarks", s, {"decode": 3.0, "total": 12.0}, cores=2)
    assert row["loop_ms"] == pytest.approx(5.0) and row["all_threads_ms"] == pytest.approx(16.0)
    assert row["requests_per_s_bound"] == pytest.approx(125.0)
    assert list(row["threads_ms"]) == ["network", "thread decode"]  # largest first, loop parts left out
    table = pr.markdown([row], "header")
    assert "| landmarks | 3 | 5.00 | 0.30 | 0.50 | 2.00 | 0.10 | 16.00 | 125 | network 3.60, decode 3.30 |" in table

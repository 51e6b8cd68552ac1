"""Where the CPU of one `POST /reconstruct` goes, measured in CPU time, so that a busy
machine changes the figures little.

On this 2-core machine a latency measured while anything else runs (a training run, the
benchmark's own client) measures the contention as much as the code, which is why
`bench/bench_service.py` wants a quiet machine. CPU time does not count the waiting. This
script serves the app (`service.app.create_app`) in process through httpx's ASGI
transport, one request at a time, and per request records:

- **loop**: the event loop thread's CPU (`time.thread_time`) inside the app's ASGI call:
  routing, the multipart parsing, FastAPI's dependencies and form validation, the
  endpoint's own code, the response's validation and encoding;
- **all threads**: the process's CPU (`time.process_time`) over the same call: the loop
  plus the thread pool (probe, decode, detection, crops, PnP, store) and the inference
  thread; `cores / all threads` is the most requests a second the machine could answer if
  it did nothing else;
- parts of the loop's CPU, each function wrapped for the run: Starlette's multipart
  parser (`Request._get_form`), FastAPI's `solve_dependencies` (the form fields'
  validation and the route's dependencies), the endpoint (`run_endpoint_function`: the
  loop's CPU while it runs, so also what the loop does meanwhile for this request, such as
  the gate's disconnect watch) and the response model (`serialize_response`);
- off the loop: the CPU of each function handed to `asyncio.to_thread` (by name) and of
  the batcher's call of the network (`network`: the calling thread only; ONNX Runtime's
  other intra-op thread shows in "all threads" alone);
- the answer's own `timings_ms` (wall clock, per stage).

Medians over `--requests` after `--warmup`. With `--cprofile FILE` the loop thread is also
profiled by cProfile (CPU clock) and the stats saved; cProfile's own cost inflates
every Python call, so its shares are a map, not a measurement.

    python bench/profile_request.py --cases landmarks detect --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_service import CASES, bench_images  # noqa: E402

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


@dataclass
class Samples:
    """Per-request CPU seconds of each measured part, in request order."""

    loop: list[float] = field(default_factory=list)
    all_threads: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)

    def add_part(self, name: str, seconds: float) -> None:
        self.parts.setdefault(name, []).append(seconds)


class CpuMeter:
    """ASGI wrapper: the loop thread's and the process's CPU over each HTTP call.

    Meant for one request at a time: with several in flight, each call's CPU would include
    the others' (`time.thread_time` counts whatever the loop ran meanwhile)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.samples = Samples()
        self._parts: dict[str, float] | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._parts = {}
        t0, p0 = time.thread_time(), time.process_time()
        try:
            await self.app(scope, receive, send)
        finally:
            self.samples.loop.append(time.thread_time() - t0)
            self.samples.all_threads.append(time.process_time() - p0)
            for name, seconds in self._parts.items():
                self.samples.add_part(name, seconds)
            self._parts = None

    def timed(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """``fn`` (a coroutine function) with its loop CPU added to part ``name`` of the
        current request."""

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return await fn(*args, **kwargs)
            finally:
                if self._parts is not None:
                    self._parts[name] = self._parts.get(name, 0.0) + time.thread_time() - t0

        return wrapper

    def timed_sync(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with the CPU of the thread that runs it added to part ``name`` of the
        current request (for the thread pool's and the batcher's work)."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                parts = self._parts
                if parts is not None:
                    parts[name] = parts.get(name, 0.0) + time.thread_time() - t0

        return wrapper


@contextmanager
def measured_parts(meter: CpuMeter, engine: Any) -> Iterator[None]:
    """Wrap, for the run, Starlette's multipart parser, FastAPI's dependency solver, every
    function handed to ``asyncio.to_thread`` (the pipeline's stages) and the batcher's
    call of the network."""
    import fastapi.routing
    from starlette.requests import Request

    to_thread = asyncio.to_thread

    async def timed_to_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        return await to_thread(meter.timed_sync(f"thread {name}", fn), *args, **kwargs)

    with patch.object(Request, "_get_form", meter.timed("form", Request._get_form)), \
            patch.object(fastapi.routing, "solve_dependencies",
                         meter.timed("dependencies", fastapi.routing.solve_dependencies)), \
            patch.object(fastapi.routing, "run_endpoint_function",
                         meter.timed("endpoint", fastapi.routing.run_endpoint_function)), \
            patch.object(fastapi.routing, "serialize_response",
                         meter.timed("response", fastapi.routing.serialize_response)), \
            patch.object(asyncio, "to_thread", timed_to_thread), \
            patch.object(engine.batcher, "predict", meter.timed_sync("network", engine.batcher.predict)):
        yield


def median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values) if values else float("nan")


async def profile_case(meter: CpuMeter, image: bytes, form: dict[str, str], requests: int,
                       warmup: int, profiler: cProfile.Profile | None = None) -> tuple[Samples, dict[str, float]]:
    """Send ``warmup`` then ``requests`` identical requests one at a time; the measured
    samples and the median of each stage of the answers' ``timings_ms``."""
    import httpx

    timings: dict[str, list[float]] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=meter), base_url="http://bench") as client:
        async def one() -> dict[str, Any]:
            r = await client.post("/reconstruct", files={"image": ("photo.jpg", image, "image/jpeg")}, data=form)
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:500]}")
            return r.json()

        for _ in range(warmup):
            await one()
        meter.samples = Samples()
        if profiler is not None:
            profiler.enable()
        try:
            for _ in range(requests):
                for stage, ms in (await one()).get("timings_ms", {}).items():
                    timings.setdefault(stage, []).append(float(ms))
        finally:
            if profiler is not None:
                profiler.disable()
    return meter.samples, {k: statistics.median(v) for k, v in timings.items()}


def report_row(case: str, samples: Samples, timings: dict[str, float], cores: int) -> dict[str, Any]:
    all_ms = median_ms(samples.all_threads)
    return {
        "case": case, "requests": len(samples.loop), "loop_ms": median_ms(samples.loop), "all_threads_ms": all_ms,
        "form_ms": median_ms(samples.parts.get("form", [])),
        "dependencies_ms": median_ms(samples.parts.get("dependencies", [])),
        "endpoint_ms": median_ms(samples.parts.get("endpoint", [])),
        "response_ms": median_ms(samples.parts.get("response", [])),
        "requests_per_s_bound": cores * 1e3 / all_ms if all_ms > 0 else float("nan"),
        "threads_ms": {k: median_ms(v) for k, v in sorted(samples.parts.items(), key=lambda kv: -sum(kv[1]))
                       if k == "network" or k.startswith("thread ")},
        "timings_ms": timings,
    }


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, "",
             "| case | requests | loop CPU ms | of which: multipart | dependencies | endpoint | response model "
             "| all threads CPU ms "
             "| requests/s bound | off the loop: CPU ms | answer's timings_ms (median, wall) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["timings_ms"].items())
        threads = ", ".join(f"{k.removeprefix('thread ')} {v:.2f}" for k, v in r["threads_ms"].items())
        lines.append(f"| {r['case']} | {r['requests']} | {r['loop_ms']:.2f} | {r['form_ms']:.2f} "
                     f"| {r['dependencies_ms']:.2f} | {r['endpoint_ms']:.2f} | {r['response_ms']:.2f} "
                     f"| {r['all_threads_ms']:.2f} | {r['requests_per_s_bound']:.0f} "
                     f"| {threads} | {stages} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=["landmarks", "detect"])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--max-batch-size", type=int, default=1)
    p.add_argument("--model", help="model name in the store (default: the store's default)")
    p.add_argument("--backend", choices=["auto", "torch", "ort", "ort-int8"])
    p.add_argument("--cprofile", type=Path, help="also profile the loop thread (CPU clock) and save the stats here")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)

    from service.app import create_app
    from service.settings import Settings

    images = bench_images()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="jmlr-profile-") as tmp:
        overrides: dict[str, Any] = dict(max_batch_size=args.max_batch_size, data_dir=Path(tmp), storage="sqlite",
                                         api_keys=[], rate_limit_per_minute=0, warmup=True)
        if args.model:
            overrides["model_name"] = args.model
        if args.backend:
            overrides["backend"] = args.backend
        app = create_app(Settings(**overrides))
        meter = CpuMeter(app)
        profiler = cProfile.Profile(time.thread_time) if args.cprofile else None

        async def run() -> None:
            async with app.router.lifespan_context(app):
                with measured_parts(meter, app.state.engine):
                    landmarks = None
                    for case in args.cases:
                        image = images[CASES[case][0]][1]
                        form: dict[str, str] = {}
                        if case == "landmarks":
                            if landmarks is None:
                                landmarks = await _first_landmarks(meter, image)
                            form = {"faces": json.dumps([{"landmarks5": landmarks}])}
                        samples, timings = await profile_case(meter, image, form, args.requests, args.warmup,
                                                              profiler)
                        row = report_row(case, samples, timings, cores)
                        rows.append(row)
                        print(f"{case}: loop {row['loop_ms']:.2f} ms, all threads {row['all_threads_ms']:.2f} ms, "
                              f"multipart {row['form_ms']:.2f}, dependencies {row['dependencies_ms']:.2f}, "
                              f"endpoint {row['endpoint_ms']:.2f}, response model {row['response_ms']:.2f}",
                              flush=True)

        asyncio.run(run())
        if profiler is not None:
            profiler.dump_stats(str(args.cprofile))
    backend = args.backend or "the server's default"
    header = (f"`python bench/profile_request.py --cases {' '.join(args.cases)} --requests {args.requests}` "
              f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores, max batch "
              f"{args.max_batch_size}, backend {backend}); medians per request, CPU time:")
    print(markdown(rows, header))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


async def _first_landmarks(meter: CpuMeter, image: bytes) -> list[list[float]]:
    """The detected face's 5 points, as a client that tracks faces would send them."""
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=meter), base_url="http://bench") as client:
        r = await client.post("/reconstruct", files={"image": ("photo.jpg", image, "image/jpeg")})
        r.raise_for_status()
        return r.json()["faces"][0]["landmarks5"]


if __name__ == "__main__":
    sys.exit(main())

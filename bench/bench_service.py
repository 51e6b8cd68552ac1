"""End-to-end throughput and latency of the HTTP service, batched vs unbatched.

Starts the real service (``python -m uvicorn service.app:app``) once per
``max_batch_size`` on a free local port, with its data dir in a temporary folder, and
drives ``POST /reconstruct`` with the astronaut photo from scikit-image:

- ``landmarks``: the client sends the face's 5 points, so detection is skipped and the
  numbers are the reconstruction path (decode, crop, batched inference, PnP, mesh store);
- ``detect``: the service runs its face detector too.

Each (batch size, mode, concurrency) cell sends a bounded number of requests under a
time cap and reports faces/s and p50/p95 latency; the batched/unbatched ratio comes from
the same run on the same machine. Writes a markdown report (default docs/bench_service.md).

    python bench/bench_service.py                      # defaults: model from the store index
    python bench/bench_service.py --requests 40 --concurrency 1 8 32 --device cpu
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Cell:
    batch_size: int
    mode: str
    concurrency: int
    requests: int = 0
    faces: int = 0
    errors: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    error_codes: dict[str, int] = field(default_factory=dict)

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.wall_s if self.wall_s > 0 else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def astronaut_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One uvicorn process; stopped (and waited for) on exit, whatever happens."""

    def __init__(self, batch_size: int, args: argparse.Namespace, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            JMLR_MAX_BATCH_SIZE=str(batch_size),
            JMLR_MAX_QUEUE_DELAY_MS=str(args.max_queue_delay_ms),
            JMLR_MAX_QUEUE_SIZE=str(max(64, 4 * max(args.concurrency))),
            JMLR_REQUEST_TIMEOUT_S=str(args.request_timeout_s),
            JMLR_DATA_DIR=str(data_dir),
            JMLR_STORAGE="sqlite",
            JMLR_API_KEYS="",
            JMLR_WARMUP="true",
        )
        env.pop("JMLR_REDIS_URL", None)
        if args.device:
            env["JMLR_DEVICE"] = args.device
        if args.model:
            env["JMLR_MODEL_NAME"] = args.model
        if args.model_store:
            env["JMLR_MODEL_STORE"] = str(Path(args.model_store).resolve())
        self.log_path = data_dir / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    return r.json()
                last = r.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout_s:.0f} s ({last}):\n{self.tail()}")

    def tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _one(client: httpx.AsyncClient, url: str, image: bytes, form: dict, cell: Cell) -> None:
    t0 = time.perf_counter()
    try:
        r = await client.post(f"{url}/reconstruct", files={"image": ("astronaut.jpg", image, "image/jpeg")}, data=form)
    except httpx.HTTPError as exc:
        cell.errors += 1
        cell.error_codes[type(exc).__name__] = cell.error_codes.get(type(exc).__name__, 0) + 1
        return
    ms = (time.perf_counter() - t0) * 1000
    if r.status_code == 200:
        cell.faces += len(r.json()["faces"])
        cell.latencies_ms.append(ms)
    else:
        cell.errors += 1
        try:
            code = r.json()["error"]["code"]
        except Exception:
            code = str(r.status_code)
        cell.error_codes[code] = cell.error_codes.get(code, 0) + 1


async def run_cell(url: str, image: bytes, form: dict, cell: Cell, n_requests: int, time_cap_s: float) -> None:
    limits = httpx.Limits(max_connections=cell.concurrency, max_keepalive_connections=cell.concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        # Warm the connections and the server's per-shape caches outside the timing.
        await asyncio.gather(*[_one(client, url, image, form, Cell(0, "", 0)) for _ in range(min(cell.concurrency, 4))])
        issued = 0
        deadline = time.perf_counter() + time_cap_s

        async def worker() -> None:
            nonlocal issued
            while issued < n_requests and time.perf_counter() < deadline:
                issued += 1
                await _one(client, url, image, form, cell)

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(cell.concurrency)])
        cell.wall_s = time.perf_counter() - t0
        cell.requests = issued


def find_landmarks(url: str, image: bytes) -> list[list[float]]:
    r = httpx.post(f"{url}/reconstruct", files={"image": ("a.jpg", image, "image/jpeg")}, timeout=120)
    r.raise_for_status()
    faces = r.json()["faces"]
    if not faces:
        raise RuntimeError("the detector found no face in the astronaut image")
    return faces[0]["landmarks5"]


def markdown(cells: list[Cell], info: dict, args: argparse.Namespace) -> str:
    by_key = {(c.batch_size, c.mode, c.concurrency): c for c in cells}
    lines = [
        "# Service benchmark",
        "",
        f"Generated by `python bench/bench_service.py` on {info['date']}.",
        "",
        f"- Machine: {info['machine']}",
        f"- Model: {info['model']}",
        "- Image: `skimage.data.astronaut()` (512×512 JPEG, one face); mode `landmarks` sends the face's 5 points "
        "(no detection), mode `detect` lets the service detect it.",
        f"- Server: one uvicorn worker, `JMLR_MAX_QUEUE_DELAY_MS={args.max_queue_delay_ms}`, "
        "sqlite storage in a temp dir "
        "(every request stores its mesh). Client and server share the machine.",
        f"- Each cell: up to {args.requests} requests (after a short warm-up) or {args.time_cap_s:g} s, "
        "whichever comes first.",
        "",
        "| max_batch_size | mode | concurrency | requests | errors | faces/s | p50 ms | p95 ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.batch_size} | {c.mode} | {c.concurrency} | {c.requests} | {c.errors} | "
            f"{c.faces_per_s:.2f} | {c.pct(50):.0f} | {c.pct(95):.0f} |"
        )
    if len(args.batch_sizes) >= 2:
        lo, hi = min(args.batch_sizes), max(args.batch_sizes)
        lines += [
            "",
            f"Throughput ratio, `max_batch_size={hi}` over `max_batch_size={lo}` (same run):",
            "",
            "| mode | concurrency | ratio |",
            "|---|---:|---:|",
        ]
        for mode in args.modes:
            for conc in args.concurrency:
                a, b = by_key.get((hi, mode, conc)), by_key.get((lo, mode, conc))
                if a and b and b.faces_per_s > 0:
                    lines.append(f"| {mode} | {conc} | {a.faces_per_s / b.faces_per_s:.2f}× |")
    lines += [
        "",
        "Reading it: at concurrency 1 the batcher has nothing to batch, so the ratio there should be "
        "about 1 and its distance from 1 is the noise level of the machine (other processes, CPU "
        "frequency). Batching pays once requests overlap; with detection the per-request work outside "
        "the model (decode, detector, PnP) bounds the gain.",
    ]
    errors = {k: v for c in cells for k, v in c.error_codes.items()}
    if errors:
        lines += ["", f"Error codes seen: {json.dumps(errors)}"]
    return "\n".join(lines) + "\n"


def machine_info(ready: dict) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    model = ready.get("model") or {}
    model_txt = ", ".join(f"{k}={v}" for k, v in model.items()) if isinstance(model, dict) else str(model)
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} CPU cores" + (f", {gpu}" if gpu else "") + f", torch {torch.__version__}",
        "model": model_txt or "default",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=48, help="requests per cell (default 48)")
    p.add_argument("--time-cap-s", type=float, default=45.0, help="per-cell time cap (default 45 s)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--modes", nargs="+", choices=["landmarks", "detect"], default=["landmarks", "detect"])
    p.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    p.add_argument("--request-timeout-s", type=float, default=60.0)
    p.add_argument("--model", help="model name in the store (default: the store's default)")
    p.add_argument("--model-store", help="model store folder (default: $JMLR_MODEL_STORE or ./model_store)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--startup-timeout-s", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench_service.md")
    args = p.parse_args(argv)

    image = astronaut_jpeg()
    cells: list[Cell] = []
    info: dict | None = None
    landmarks: list[list[float]] | None = None
    with tempfile.TemporaryDirectory(prefix="jmlr-bench-") as tmp:
        for bs in args.batch_sizes:
            data_dir = Path(tmp) / f"bs{bs}"
            data_dir.mkdir()
            with Server(bs, args, data_dir) as server:
                ready = server.wait_ready(args.startup_timeout_s)
                info = info or machine_info(ready)
                if landmarks is None:
                    landmarks = find_landmarks(server.url, image)
                    print(f"astronaut landmarks5: {np.round(landmarks, 1).tolist()}", flush=True)
                forms = {"landmarks": {"faces": json.dumps([{"landmarks5": landmarks}])}, "detect": {}}
                for mode in args.modes:
                    for conc in args.concurrency:
                        cell = Cell(bs, mode, conc)
                        asyncio.run(run_cell(server.url, image, forms[mode], cell, args.requests, args.time_cap_s))
                        cells.append(cell)
                        print(
                            f"bs={bs} {mode:9s} c={conc:2d}: {cell.requests} req, {cell.errors} err, "
                            f"{cell.faces_per_s:6.2f} faces/s, p50 {cell.pct(50):6.0f} ms, p95 {cell.pct(95):6.0f} ms",
                            flush=True,
                        )
    report = markdown(cells, info or {"date": "", "machine": "", "model": ""}, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

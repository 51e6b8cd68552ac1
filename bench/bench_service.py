"""End-to-end throughput, latency and per-stage budget of the HTTP service.

Starts the real service (``python -m uvicorn service.app:app``) once per
``max_batch_size`` on a free local port, with its data dir in a temporary folder, and
drives ``POST /reconstruct`` with three cases (images built from scikit-image's photos,
nothing downloaded):

- ``landmarks``: a 640×480 photo of one face (the astronaut) whose 5 points the client
  sends, so detection is skipped and the numbers are the reconstruction path (decode,
  crop, batched inference, PnP, mesh store, response);
- ``detect``: the same photo, the service runs its face detector too;
- ``group``: a 1280×886 group photo of six faces (the astronaut six times, mirrored,
  scaled and turned, on scikit-image's rocket photo), detected.

Each (batch size, case, concurrency) cell sends a bounded number of requests under a
time cap and reports faces/s and p50/p95 latency, and the per-stage budget: the mean of
each stage of the server's ``timings_ms`` (decode, detect, crop, infer, pnp, store),
the response encoding and the server's whole request time from its Prometheus
histograms (``/metrics`` read before and after the cell), and what is left of the
client's latency (HTTP). The raw network (the same backend, ``predict`` on aligned crops
of the photo at batch 1 and 8, in this process while no request runs) is timed in the
same run, before and after the service cells, so the report can say how much of a
request is the network. Writes a markdown report (default docs/bench_service.md).

    python bench/bench_service.py                      # defaults: model from the store index
    python bench/bench_service.py --requests 96 --concurrency 1 8 32 --device cpu
    python bench/bench_service.py --requests 8 --concurrency 1 --batch-sizes 8 --raw-seconds 1 --out /tmp/b.md
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
from typing import Any

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent

#: case -> (image, what it is); the image key is one of :func:`bench_images`
CASES = {
    "landmarks": ("photo", "640×480 photo, one face; the client sends its 5 points (no detection)"),
    "detect": ("photo", "the same photo; the service detects the face"),
    "group": ("group", "1280×886 group photo, six faces, detected"),
}
#: the server's own stages, in pipeline order (``timings_ms`` keys), then the encoding
STAGES = ("decode", "detect", "crop", "infer", "pnp", "store")
#: text after this line of an existing report is kept when the report is written again
NOTES_MARKER = "<!-- notes: kept by bench_service.py when it rewrites this file -->"


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
    timings: list[dict[str, float]] = field(default_factory=list)  # the answers' timings_ms
    server: dict[str, float] = field(default_factory=dict)  # from /metrics, means over the cell

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.wall_s if self.wall_s > 0 else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def faces_per_request(self) -> float:
        return self.faces / len(self.latencies_ms) if self.latencies_ms else float("nan")

    def stage_mean(self, name: str) -> float:
        """Mean ms of a ``timings_ms`` stage over the answered requests (0 where absent)."""
        if not self.timings:
            return float("nan")
        return float(np.mean([t.get(name, 0.0) for t in self.timings]))


# ----------------------------------------------------------------------------- images


def _jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def astronaut_jpeg() -> bytes:
    """scikit-image's astronaut (512×512, one face) as a JPEG."""
    from skimage import data

    return _jpeg(data.astronaut())


def photo_640x480() -> np.ndarray:
    """One face in a 640×480 frame: the astronaut's upper three quarters (her face is
    about 110 px wide here)."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut()[:384], (640, 480), interpolation=cv2.INTER_CUBIC)


#: the group photo's people: (centre x, centre y, scale, mirrored, rotation deg, gain);
#: a back row a little smaller than the front one. Faces 77–126 px wide.
GROUP_PEOPLE = ((230, 250, 0.95, False, -5, 0.95), (640, 230, 0.9, True, 4, 1.05), (1050, 255, 1.0, False, 7, 0.9),
                (380, 600, 1.3, True, -3, 1.0), (900, 610, 1.35, False, 2, 1.08), (1160, 700, 1.1, True, -8, 0.85))


def group_photo(width: int = 1280, height: int = 886) -> np.ndarray:
    """Six faces in one photo: the astronaut's head and shoulders pasted (soft oval
    edges) at :data:`GROUP_PEOPLE` onto scikit-image's rocket photo, blurred as an
    out-of-focus background. Deterministic; CenterFace finds all six."""
    import cv2
    from skimage import data

    bg = cv2.GaussianBlur(cv2.resize(data.rocket(), (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 3)
    out = bg.astype(np.float32)
    patch = data.astronaut()[10:300, 90:360].astype(np.float32)  # head and shoulders, face centred
    ph, pw = patch.shape[:2]
    yy, xx = np.mgrid[0:ph, 0:pw]
    oval = ((xx - pw / 2) / (pw * 0.46)) ** 2 + ((yy - ph / 2) / (ph / 2)) ** 2
    mask = np.clip((1.0 - oval) * 6.0, 0.0, 1.0).astype(np.float32)
    for cx, cy, scale, mirrored, rot, gain in GROUP_PEOPLE:
        p, m = (patch[:, ::-1], mask[:, ::-1]) if mirrored else (patch, mask)
        M = cv2.getRotationMatrix2D((pw / 2, ph / 2), rot, scale)
        M[:, 2] += (cx - pw / 2, cy - ph / 2)
        wp = cv2.warpAffine(np.ascontiguousarray(p) * gain, M, (width, height), flags=cv2.INTER_LINEAR)
        wm = cv2.warpAffine(np.ascontiguousarray(m), M, (width, height), flags=cv2.INTER_LINEAR)[..., None]
        out = out * (1.0 - wm) + wp * wm
    return np.clip(out, 0, 255).astype(np.uint8)


def bench_images() -> dict[str, tuple[np.ndarray, bytes]]:
    """image key -> (RGB, JPEG bytes) of the images the cases send."""
    photo, group = photo_640x480(), group_photo()
    return {"photo": (photo, _jpeg(photo)), "group": (group, _jpeg(group))}


# ----------------------------------------------------------------------------- server


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
            JMLR_MAX_QUEUE_SIZE=str(max(64, 8 * max(args.concurrency))),
            JMLR_REQUEST_TIMEOUT_S=str(args.request_timeout_s),
            JMLR_DATA_DIR=str(data_dir),
            JMLR_STORAGE="sqlite",
            JMLR_API_KEYS="",
            JMLR_WARMUP="true",
            JMLR_RATE_LIMIT_PER_MINUTE="0",
        )
        env.pop("JMLR_REDIS_URL", None)
        if args.device:
            env["JMLR_DEVICE"] = args.device
        if args.backend:
            env["JMLR_BACKEND"] = args.backend
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


# ----------------------------------------------------------------------------- server metrics


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _total(m: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in m.items() if n == name and want <= set(lab))


def _mean_ms(before: dict, after: dict, base: str, **labels: str) -> float:
    """Mean of a histogram's observations between two scrapes, in ms (nan: none)."""
    count = _total(after, f"{base}_count", **labels) - _total(before, f"{base}_count", **labels)
    total = _total(after, f"{base}_sum", **labels) - _total(before, f"{base}_sum", **labels)
    return total / count * 1000.0 if count > 0 else float("nan")


def server_means(before: dict, after: dict) -> dict[str, float]:
    """What the server's histograms say about the requests between two scrapes: the
    encoding stage, the whole request (ASGI in to last byte out), the batcher's queue
    wait and batch size, all means."""
    b_count = _total(after, "jmlr_batch_size_count") - _total(before, "jmlr_batch_size_count")
    b_sum = _total(after, "jmlr_batch_size_sum") - _total(before, "jmlr_batch_size_sum")
    return {
        "encode": _mean_ms(before, after, "jmlr_stage_duration_seconds", stage="encode"),
        "request": _mean_ms(before, after, "jmlr_request_duration_seconds", route="/reconstruct", status="200"),
        "queue_wait": _mean_ms(before, after, "jmlr_queue_wait_seconds"),
        "batch": b_sum / b_count if b_count > 0 else float("nan"),
    }


# ----------------------------------------------------------------------------- client


async def _one(client: httpx.AsyncClient, url: str, image: bytes, form: dict, cell: Cell) -> None:
    t0 = time.perf_counter()
    try:
        r = await client.post(f"{url}/reconstruct", files={"image": ("photo.jpg", image, "image/jpeg")}, data=form)
    except httpx.HTTPError as exc:
        cell.errors += 1
        cell.error_codes[type(exc).__name__] = cell.error_codes.get(type(exc).__name__, 0) + 1
        return
    ms = (time.perf_counter() - t0) * 1000
    if r.status_code == 200:
        body = r.json()
        cell.faces += len(body["faces"])
        cell.latencies_ms.append(ms)
        cell.timings.append(body.get("timings_ms", {}))
    else:
        cell.errors += 1
        try:
            code = r.json()["error"]["code"]
        except Exception:
            code = str(r.status_code)
        cell.error_codes[code] = cell.error_codes.get(code, 0) + 1


async def run_cell(url: str, image: bytes, form: dict, cell: Cell, n_requests: int, time_cap_s: float) -> None:
    limits = httpx.Limits(max_connections=cell.concurrency + 1, max_keepalive_connections=cell.concurrency + 1)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        # Warm the connections and the server's per-shape caches outside the timing.
        await asyncio.gather(*[_one(client, url, image, form, Cell(0, "", 0)) for _ in range(min(cell.concurrency, 4))])
        before = parse_metrics((await client.get(f"{url}/metrics")).text)
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
        after = parse_metrics((await client.get(f"{url}/metrics")).text)
        cell.server = server_means(before, after)


def find_landmarks(url: str, image: bytes) -> list[list[float]]:
    r = httpx.post(f"{url}/reconstruct", files={"image": ("a.jpg", image, "image/jpeg")}, timeout=120)
    r.raise_for_status()
    faces = r.json()["faces"]
    if not faces:
        raise RuntimeError("the detector found no face in the photo")
    return faces[0]["landmarks5"]


# ----------------------------------------------------------------------------- the raw network


def resolve_model(args: argparse.Namespace) -> tuple[Path, str, str]:
    """(model folder, backend, device) as the server resolves them (service.pipeline)."""
    import torch

    from jmlr.inference import resolve_backend
    from jmlr.paths import default_model_store
    from jmlr.store import default_model_name

    device = args.device or os.environ.get("JMLR_DEVICE") or "auto"
    device = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    store = Path(args.model_store or os.environ.get("JMLR_MODEL_STORE") or default_model_store())
    name = args.model or os.environ.get("JMLR_MODEL_NAME") or default_model_name(device, store)
    path = Path(name) if Path(name).is_absolute() else store / name
    backend = resolve_backend(args.backend or os.environ.get("JMLR_BACKEND") or "auto", device)
    return path, backend, device


def load_network(path: Path, backend: str, device: str) -> Any:
    """The model as the server loads it (same backend, ONNX cache and ORT settings)."""
    from jmlr.inference import load_backend
    from jmlr.onnxrt import OrtOptions

    env = os.environ
    threads = int(env.get("JMLR_ORT_THREADS", "0"))
    spinning = env.get("JMLR_ORT_SPINNING", "false").lower() in ("1", "true", "yes", "on")
    return load_backend(path, backend, device, cache_dir=env.get("JMLR_ONNX_CACHE_DIR") or None,
                        calibration=env.get("JMLR_ONNX_CALIBRATION") or None,
                        ort_options=OrtOptions(threads=threads, spinning=spinning))


def time_network(model: Any, crop: np.ndarray, batches: list[int], seconds: float) -> dict[int, dict[str, float]]:
    """``model.predict`` on ``crop`` repeated to each batch size, about ``seconds`` each
    (after a warm-up): ms per call (p50, p90) and faces/s (batch / p50)."""
    out = {}
    for b in batches:
        x = np.ascontiguousarray(np.repeat(crop[None], b, axis=0))
        for _ in range(3):
            model.predict(x)
        ms: list[float] = []
        end = time.perf_counter() + seconds
        while not ms or time.perf_counter() < end:
            t = time.perf_counter()
            model.predict(x)
            ms.append((time.perf_counter() - t) * 1000.0)
        p50 = float(np.median(ms))
        out[b] = {"calls": len(ms), "ms_p50": p50, "ms_p90": float(np.percentile(ms, 90)),
                  "faces_per_s": b * 1000.0 / p50}
    return out


def photo_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The photo's face cropped as the service crops it (detected five points)."""
    from jmlr.detect import create_detector
    from jmlr.inference import crop_faces

    dets = create_detector("centerface").detect(rgb)
    if not dets:
        raise RuntimeError("no face found in the benchmark photo")
    return crop_faces(rgb, [dets[0].landmarks5], size).crops[0]


# ----------------------------------------------------------------------------- report


def _f(x: float, nd: int = 1) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _around_ms(c: Cell) -> float:
    """Client latency minus detection and inference (queue wait included), per face: the
    request's cost outside them (decode, crop, PnP, store, encode, HTTP)."""
    mean_lat = float(np.mean(c.latencies_ms)) if c.latencies_ms else float("nan")
    return (mean_lat - c.stage_mean("detect") - c.stage_mean("infer")) / c.faces_per_request


def network_reference(raw: dict[str, dict[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    """Per batch size, the raw network's ms per call and faces/s: the mean of the
    before/after measurements' medians."""
    out = {}
    for b in sorted({b for per in raw.values() for b in per}):
        ms = float(np.mean([per[b]["ms_p50"] for per in raw.values() if b in per]))
        out[b] = {"ms": ms, "faces_per_s": b * 1000.0 / ms}
    return out


def targets(cells: list[Cell], ref: dict[int, dict[str, float]], batch_sizes: list[int]) -> list[list[str]]:
    """Rows (target, goal, one measured value per max_batch_size, met) of issue 12's targets."""
    by = {(c.batch_size, c.mode, c.concurrency): c for c in cells}
    net1 = ref.get(1, {}).get("ms", float("nan"))
    net8 = ref.get(8, {}).get("faces_per_s", float("nan"))

    def cell(bs: int, case: str, conc: int) -> Cell | None:
        c = by.get((bs, case, conc))
        return c if c is not None and c.latencies_ms else None

    def fps(case: str, conc: int):
        return lambda bs: cell(bs, case, conc).faces_per_s if cell(bs, case, conc) else float("nan")

    def p50(case: str):
        return lambda bs: cell(bs, case, 1).pct(50) if cell(bs, case, 1) else float("nan")

    def ratio_whole(bs: int) -> float:
        c = cell(bs, "landmarks", 1)
        return c.pct(50) / net1 if c else float("nan")

    def ratio_raw(bs: int) -> float:
        got = [cell(bs, "landmarks", k).faces_per_s for k in (8, 32) if cell(bs, "landmarks", k)]
        return max(got) / net8 if got else float("nan")

    def around(bs: int) -> float:
        c = cell(bs, "landmarks", 1)
        return _around_ms(c) / net1 if c else float("nan")

    def pnp(bs: int) -> float:
        got = [c.stage_mean("pnp") / c.faces_per_request for case in CASES if (c := cell(bs, case, 1))]
        return max(got) if got else float("nan")

    rows = [
        ("client landmarks, concurrency 8: faces/s", "≥ 60", fps("landmarks", 8), lambda v: v >= 60, 1),
        ("client landmarks, concurrency 1: p50 ms", "≤ 25", p50("landmarks"), lambda v: v <= 25, 0),
        ("client landmarks, concurrency 1: p50 / the network's own time at batch 1", "≤ 1.25×", ratio_whole,
         lambda v: v <= 1.25, 2),
        ("outside detection and inference, per face / the network's time (landmarks, c=1)", "≤ 0.25×", around,
         lambda v: v <= 0.25, 2),
        ("PnP per face, ms (worst case at concurrency 1)", "≤ 3", pnp, lambda v: v <= 3, 1),
        ("detection (640×480, one face), concurrency 8: faces/s", "≥ 30", fps("detect", 8), lambda v: v >= 30, 1),
        ("detection (640×480, one face), concurrency 1: p50 ms", "≤ 60", p50("detect"), lambda v: v <= 60, 0),
        ("group photo (6 faces), concurrency 1: p50 ms", "≤ 150", p50("group"), lambda v: v <= 150, 0),
        ("service (landmarks, best of c=8/32) / raw network at batch 8, faces/s", "≥ 0.8×", ratio_raw,
         lambda v: v >= 0.8, 2),
    ]
    out = []
    for name, goal, value, ok, nd in rows:
        vals = [value(bs) for bs in batch_sizes]
        if not any(np.isfinite(v) for v in vals):
            continue
        met = ["yes" if ok(v) else "no" for v in vals if np.isfinite(v)]
        out.append([name, goal, *[_f(v, nd) for v in vals], " / ".join(met)])
    return out


def markdown(cells: list[Cell], info: dict, args: argparse.Namespace, raw: dict) -> str:
    by_key = {(c.batch_size, c.mode, c.concurrency): c for c in cells}
    ref = network_reference(raw)
    lines = [
        "# Service benchmark",
        "",
        f"Generated by `python bench/bench_service.py` on {info['date']}.",
        "",
        f"- Machine: {info['machine']}",
        f"- Model: {info['model']}; backend `{info['backend']}`",
        "- Cases (images made from scikit-image's photos by `bench/bench_service.py`, JPEG quality 92):",
        *[f"  - `{case}`: {CASES[case][1]}" for case in args.modes],
        f"- Server: one uvicorn worker, `JMLR_MAX_QUEUE_DELAY_MS={args.max_queue_delay_ms}`, "
        "sqlite storage in a temp dir (every request stores its meshes). Client (httpx, persistent "
        "connections) and server share the machine.",
        f"- Each cell: up to {args.requests} requests (after a short warm-up) or {args.time_cap_s:g} s, "
        "whichever comes first.",
        "",
        "## The raw network, same run",
        "",
        f"`predict` of the same backend on the photo's aligned crop repeated to the batch size, in the "
        f"benchmark's process while no request runs, about {args.raw_seconds:g} s per batch size, before and "
        "after the service cells. The reference below is the mean of the two medians.",
        "",
        "| when | batch | calls | ms/batch p50 | ms/batch p90 | faces/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for when, per in raw.items():
        for b, v in per.items():
            lines.append(f"| {when} | {b} | {v['calls']} | {v['ms_p50']:.2f} | {v['ms_p90']:.2f} | "
                         f"{v['faces_per_s']:.1f} |")
    for b, v in ref.items():
        lines.append(f"| **reference** | {b} | | **{v['ms']:.2f}** | | **{v['faces_per_s']:.1f}** |")
    lines += [
        "",
        "## Throughput and latency",
        "",
        "| max_batch_size | case | concurrency | requests | errors | faces/s | p50 ms | p95 ms | mean batch |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.batch_size} | {c.mode} | {c.concurrency} | {c.requests} | {c.errors} | "
            f"{c.faces_per_s:.2f} | {c.pct(50):.0f} | {c.pct(95):.0f} | {_f(c.server.get('batch', np.nan), 2)} |"
        )
    if len(args.batch_sizes) >= 2:
        lo, hi = min(args.batch_sizes), max(args.batch_sizes)
        lines += [
            "",
            f"Throughput ratio, `max_batch_size={hi}` over `max_batch_size={lo}` (same run):",
            "",
            "| case | concurrency | ratio |",
            "|---|---:|---:|",
        ]
        for mode in args.modes:
            for conc in args.concurrency:
                a, b = by_key.get((hi, mode, conc)), by_key.get((lo, mode, conc))
                if a and b and b.faces_per_s > 0:
                    lines.append(f"| {mode} | {conc} | {a.faces_per_s / b.faces_per_s:.2f}× |")
    lines += [
        "",
        "## Per-stage budget",
        "",
        "Means over each cell's answered requests, ms per request. `decode` … `store`: the answers' "
        "`timings_ms` (`detect/locate`: the detector, or `track` where the client gave the faces; `infer` runs "
        "from handing the crops to the batcher to its result: the queue wait, "
        "whose mean the server's histogram gives in `(queue wait)`, plus the batch's run); `pipeline`: their "
        "`total`; `encode` (the response "
        "serialised and sent) and `request` (the server's whole request, from the ASGI call to the last "
        "byte) from `/metrics`; `client`: the latency the client saw; `HTTP`: `client` − `request` "
        "(connection, upload, parsing before the app, the client itself); `around/face`: `client` minus "
        "`detect` and `infer`, per face.",
        "",
        "| max_batch_size | case | concurrency | faces/request | decode | detect/locate | crop | infer | (queue wait) "
        "| pnp | store | pipeline | encode | request | client | HTTP | around/face |",
        "|---:|---|---:|---:|" + "---:|" * 13,
    ]
    nan = float("nan")
    for c in cells:
        if not c.latencies_ms:
            continue
        client = float(np.mean(c.latencies_ms))
        request = c.server.get("request", nan)
        cols = [c.stage_mean("decode"), c.stage_mean("detect") + c.stage_mean("track"), c.stage_mean("crop"),
                c.stage_mean("infer")]
        cols += [c.server.get("queue_wait", nan), c.stage_mean("pnp"), c.stage_mean("store"), c.stage_mean("total"),
                 c.server.get("encode", nan), request, client, client - request, _around_ms(c)]
        lines.append(f"| {c.batch_size} | {c.mode} | {c.concurrency} | {c.faces_per_request:.1f} | "
                     + " | ".join(_f(v) for v in cols) + " |")
    net1, net8 = ref.get(1), ref.get(8)
    if net1 or net8:
        lines += ["", "## Against the network", ""]
    if net1:
        rows = [(bs, by_key.get((bs, "landmarks", 1))) for bs in args.batch_sizes]
        rows = [(bs, c) for bs, c in rows if c and c.latencies_ms]
        if rows:
            lines += [
                f"Client landmarks at concurrency 1, whole request over the network's own time at batch 1 "
                f"({net1['ms']:.2f} ms):",
                "",
                "| max_batch_size | request p50 ms | ratio (p50) | request mean ms | ratio (mean) | infer mean ms |",
                "|---:|---:|---:|---:|---:|---:|",
            ]
            for bs, c in rows:
                mean = float(np.mean(c.latencies_ms))
                lines.append(f"| {bs} | {c.pct(50):.1f} | {c.pct(50) / net1['ms']:.2f}× | {mean:.1f} | "
                             f"{mean / net1['ms']:.2f}× | {c.stage_mean('infer'):.1f} |")
            lines.append("")
    if net8 and any(c.concurrency > 1 for c in cells):
        lines += [
            f"Service throughput over the raw network's at batch 8 ({net8['faces_per_s']:.1f} faces/s):",
            "",
            "| max_batch_size | case | concurrency | faces/s | ratio |",
            "|---:|---|---:|---:|---:|",
        ]
        for c in cells:
            if c.concurrency > 1:
                lines.append(f"| {c.batch_size} | {c.mode} | {c.concurrency} | {c.faces_per_s:.1f} | "
                             f"{c.faces_per_s / net8['faces_per_s']:.2f}× |")
    rows = targets(cells, ref, args.batch_sizes)
    if rows:
        lines += [
            "",
            "## Issue 12 targets",
            "",
            "| target | goal | " + " | ".join(f"max_batch_size={bs}" for bs in args.batch_sizes) + " | met |",
            "|---|---|" + "---:|" * len(args.batch_sizes) + "---|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        "Reading it: at concurrency 1 the batcher has nothing to batch, so the batch-size ratio there should be "
        "about 1 and its distance from 1 is the noise level of the machine (other processes, CPU "
        "frequency). Batching pays once requests overlap; with detection the per-request work outside "
        "the model (decode, detector, PnP) bounds the gain. Client and server share the cores, so under "
        "load the client's own work is in `HTTP`.",
    ]
    errors = {k: v for c in cells for k, v in c.error_codes.items()}
    if errors:
        lines += ["", f"Error codes seen: {json.dumps(errors)}"]
    return "\n".join(lines) + "\n"


def kept_notes(path: Path) -> str:
    """The part of an existing report after :data:`NOTES_MARKER` (with the marker), or ''."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    at = text.find(NOTES_MARKER)
    return "" if at < 0 else "\n" + text[at:].rstrip() + "\n"


def machine_info(ready: dict, backend: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    model = ready.get("model") or {}
    model_txt = ", ".join(f"{k}={v}" for k, v in model.items()) if isinstance(model, dict) else str(model)
    try:
        import onnxruntime

        ort = f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = ""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} CPU cores" + (f", {gpu}" if gpu else "")
                   + f", torch {torch.__version__}{ort}",
        "model": model_txt or "default",
        "backend": backend,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=48, help="requests per cell (default 48)")
    p.add_argument("--time-cap-s", type=float, default=45.0, help="per-cell time cap (default 45 s)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--modes", "--cases", dest="modes", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    p.add_argument("--request-timeout-s", type=float, default=60.0)
    p.add_argument("--model", help="model name in the store (default: the store's default)")
    p.add_argument("--model-store", help="model store folder (default: $JMLR_MODEL_STORE or ./model_store)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--backend", choices=["auto", "torch", "ort", "ort-int8"],
                   help="JMLR_BACKEND of the server and of the raw-network timing (default: the server's, 'auto')")
    p.add_argument("--raw-seconds", type=float, default=10.0,
                   help="raw network timing per batch size, before and after the service cells (default 10 s)")
    p.add_argument("--raw-batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--startup-timeout-s", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench_service.md")
    p.add_argument("--json", type=Path, help="also write the raw numbers (cells, timings, network) here")
    args = p.parse_args(argv)

    images = bench_images()
    path, backend, device = resolve_model(args)
    network = load_network(path, backend, device)
    crop = photo_crop(images["photo"][0], int(network.input_size))
    raw: dict[str, dict[int, dict[str, float]]] = {"before": time_network(network, crop, args.raw_batches,
                                                                            args.raw_seconds)}
    print(f"raw network ({backend}, {device}) before: "
          + ", ".join(f"b{b} {v['ms_p50']:.2f} ms {v['faces_per_s']:.1f} faces/s" for b, v in raw["before"].items()),
          flush=True)
    cells: list[Cell] = []
    info: dict | None = None
    landmarks: list[list[float]] | None = None
    with tempfile.TemporaryDirectory(prefix="jmlr-bench-") as tmp:
        for bs in args.batch_sizes:
            data_dir = Path(tmp) / f"bs{bs}"
            data_dir.mkdir()
            with Server(bs, args, data_dir) as server:
                ready = server.wait_ready(args.startup_timeout_s)
                info = info or machine_info(ready, backend)
                if landmarks is None:
                    landmarks = find_landmarks(server.url, images["photo"][1])
                    print(f"photo landmarks5: {np.round(landmarks, 1).tolist()}", flush=True)
                forms = {"landmarks": {"faces": json.dumps([{"landmarks5": landmarks}])}, "detect": {}, "group": {}}
                for mode in args.modes:
                    image = images[CASES[mode][0]][1]
                    for conc in args.concurrency:
                        cell = Cell(bs, mode, conc)
                        asyncio.run(run_cell(server.url, image, forms[mode], cell, args.requests, args.time_cap_s))
                        cells.append(cell)
                        print(
                            f"bs={bs} {mode:9s} c={conc:2d}: {cell.requests} req, {cell.errors} err, "
                            f"{cell.faces_per_s:6.2f} faces/s, p50 {cell.pct(50):6.0f} ms, p95 {cell.pct(95):6.0f} ms"
                            + "".join(f", {s} {cell.stage_mean(s):.1f}" for s in STAGES)
                            + f", encode {cell.server.get('encode', float('nan')):.1f}",
                            flush=True,
                        )
    raw["after"] = time_network(network, crop, args.raw_batches, args.raw_seconds)
    report = markdown(cells, info or {"date": "", "machine": "", "model": "", "backend": backend}, args, raw)
    report += kept_notes(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"info": info, "raw_network": raw, "cells": [
            {"batch_size": c.batch_size, "case": c.mode, "concurrency": c.concurrency, "requests": c.requests,
             "faces": c.faces, "errors": c.errors, "wall_s": c.wall_s, "latencies_ms": c.latencies_ms,
             "timings_ms": c.timings, "server": c.server, "error_codes": c.error_codes} for c in cells]},
            indent=1) + "\n", encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

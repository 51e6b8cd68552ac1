"""The long reliability cases of issue 11, against real uvicorn processes on loopback.

Scenarios (each bounded in requests and seconds, and stopping by itself):

- ``malformed``: the hostile corpus (bench/hostile_corpus.py) plus random byte flips of
  the photo; counts answers >= 500.
- ``bombs``: 8 concurrent 6000x6000 PNGs (~100 kB each, 36 Mpx decoded); server RSS
  before, peak and after, with the decode pixel budget and with it lifted, same run.
- ``chunked``: uploads with no Content-Length, far over the limit; bytes the server took
  before answering.
- ``overload``: capacity measured at concurrency 8, then 10x that rate offered by
  ``hey`` (apt-get install hey); statuses, latency per status, goodput. With
  ``--before DIR`` the same load against another checkout (e.g. the commit before the
  fix), in the same run.
- ``kill9``: SQLite storage, kill -9 of the server while clients write meshes and
  devices, restart, every acknowledged write looked up (3 rounds).
- ``redis``: Redis stopped (SIGTERM) and restarted mid-load, then killed (-9) and
  restarted; every acknowledged mesh and device looked up afterwards.
- ``redis_pressure``: meshes written into a small ``maxmemory`` Redis under
  ``noeviction`` and ``volatile-ttl`` until refused; acknowledged meshes lost.

    python bench/bench_reliability.py                       # all, writes docs/reliability_results.md
    python bench/bench_reliability.py --only overload --before /tmp/before

The machine is shared (2 cores, other jobs): compare numbers within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO_ROOT))

from bench_service import astronaut_jpeg, free_port  # noqa: E402
from hostile_corpus import all_cases  # noqa: E402

KEY = "bench-key"
H = {"X-API-Key": KEY}


# ----------------------------------------------------------------------------- processes


TESTED = {"repo": REPO_ROOT}  # --repo: the checkout whose service the scenarios start


class Server:
    """A uvicorn process of ``repo`` (this checkout or another) with extra JMLR_* env."""

    def __init__(self, data_dir: Path, repo: Path | None = None, **env_extra: str) -> None:
        repo = repo or TESTED["repo"]
        self.repo, self.data_dir = repo, data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("JMLR_")}
        env.update(JMLR_DATA_DIR=str(data_dir), JMLR_API_KEYS=KEY, JMLR_DEVICE="cpu", JMLR_WARMUP="true",
                   JMLR_MODEL_STORE=str(REPO_ROOT / "model_store"), JMLR_RATE_LIMIT_PER_MINUTE="0",
                   PYTHONPATH=str(repo))
        env.update({k: str(v) for k, v in env_extra.items()})
        self.env = env
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(data_dir / f"server-{self.port}.log", "ab")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 400) -> Server:  # model load + warm-up on a loaded 2-core box
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning", "--no-access-log"],
            cwd=self.repo, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = Path(self.log.name).read_bytes()[-2000:].decode(errors="replace")
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200 and \
                        httpx.get(f"{self.url}/metrics", timeout=2).text.find("jmlr_model_ready 1.0") >= 0:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("server not ready")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def written_mb(self) -> float:
        """Bytes the server process has written (files, sockets): spooling shows here."""
        for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1]) / 1e6
        return float("nan")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Server:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a server that never became ready must not linger
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


class Redis:
    def __init__(self, work: Path, *extra: str) -> None:
        self.port = free_port()
        self.dir = work / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                     "--appendonly", "yes", "--appendfsync", "always", "--save", "", *extra]
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for _ in range(100):
            ping = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True)
            if ping.stdout.strip() == b"PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


# ----------------------------------------------------------------------------- helpers


def landmarks_of(url: str, image: bytes) -> list:
    r = httpx.post(f"{url}/reconstruct", files={"image": ("a.jpg", image, "image/jpeg")}, headers=H, timeout=60)
    return r.json()["faces"][0]["landmarks5"]


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


# ----------------------------------------------------------------------------- scenarios


def scenario_malformed(work: Path, image: bytes, rounds: int) -> dict:
    rng = random.Random(11)
    cases = all_cases(image)
    faces = {"faces": json.dumps([{"landmarks5": [[203.3, 101.3], [247.2, 104.5], [223.1, 125.0], [203.4, 142.4],
                                                  [241.0, 144.9]]}])}
    for k in range(rounds):
        data = bytearray(image)
        for _ in range(rng.choice([1, 5, 50, 500])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        # With the face's points given, so a flip that still decodes costs no detection.
        cases.append((f"flip{k}", {"image": ("a.jpg", bytes(data), "image/jpeg")}, faces))
    statuses: Counter = Counter()
    failures = []
    with Server(work / "malformed") as s, httpx.Client(base_url=s.url, headers=H, timeout=60) as c:
        for name, files, data in cases:
            r = c.post("/reconstruct", files=files or None, data=data)
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                failures.append((name, r.status_code, r.text[:200]))
    return {"requests": len(cases), "statuses": dict(sorted(statuses.items())), "failures_5xx": failures}


def _bomb_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000), (40, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


def scenario_bombs(work: Path, budget: int | None, label: str) -> dict:
    bomb = _bomb_png()
    env = {"JMLR_MAX_IMAGE_PIXELS": "40000000", "JMLR_REQUEST_TIMEOUT_S": "60"}
    if budget is not None:
        env["JMLR_DECODE_PIXEL_BUDGET"] = str(budget)
    with Server(work / f"bombs-{label}", **env) as s:
        # Baseline: a server that has already served an ordinary large photo (detector and
        # allocator warmed at full size), so the growth below is what the bombs cost.
        big = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (3000, 2000), (90, 90, 90)).save(big, "JPEG")
        for _ in range(2):
            httpx.post(f"{s.url}/reconstruct", files={"image": ("p.jpg", big.getvalue(), "image/jpeg")}, headers=H,
                       timeout=60)
        time.sleep(1)
        before = s.rss_mb()
        peak = before
        stop = False

        async def sample():
            nonlocal peak
            while not stop:
                peak = max(peak, s.rss_mb())
                await asyncio.sleep(0.02)

        async def go():
            nonlocal stop
            sampler = asyncio.ensure_future(sample())
            async with httpx.AsyncClient(base_url=s.url, headers=H, timeout=120) as c:
                t0 = time.perf_counter()
                rs = await asyncio.gather(*(
                    c.post("/reconstruct", files={"image": ("b.png", bomb, "image/png")}) for _ in range(8)))
                wall = time.perf_counter() - t0
            stop = True
            await sampler
            return rs, wall

        rs, wall = asyncio.run(go())
        time.sleep(2)
        after = s.rss_mb()
    return {"file_kb": round(len(bomb) / 1024, 1), "budget_px": budget,
            "statuses": dict(Counter(r.status_code for r in rs)),
            "rss_before_mb": round(before), "rss_peak_mb": round(peak), "rss_after_mb": round(after),
            "growth_peak_mb": round(peak - before), "growth_after_mb": round(after - before), "wall_s": round(wall, 1)}


def scenario_chunked(work: Path, repo: Path, label: str) -> dict:
    limit = 2_000_000
    out = []
    with Server(work / f"chunked-{label}", repo=repo, JMLR_MAX_UPLOAD_BYTES=str(limit)) as s:
        for _ in range(3):
            sent = 0

            def body():
                nonlocal sent
                head = (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
                        b"Content-Type: image/jpeg\r\n\r\n")
                sent += len(head)
                yield head
                chunk = b"\xff" * 65536
                while sent < 200_000_000:
                    sent += len(chunk)
                    yield chunk

            t0 = time.perf_counter()
            w0 = s.written_mb()
            try:
                r = httpx.post(f"{s.url}/reconstruct", content=body(),
                               headers={**H, "Content-Type": "multipart/form-data; boundary=x"}, timeout=60)
                status = r.status_code
            except httpx.HTTPError as exc:  # the server may close while we are still sending
                status = type(exc).__name__
            out.append({"status": status, "client_sent_mb": round(sent / 1e6, 1),
                        "s": round(time.perf_counter() - t0, 2), "server_wrote_mb": round(s.written_mb() - w0, 1)})
    # httpx writes its whole body before it reads the answer; what matters is what the
    # server kept: server_wrote_mb counts every byte it wrote (spooling to disk included).
    return {"limit_mb": limit / 1e6, "uploads": out}


def _prebuilt(url: str, image: bytes, form: dict) -> tuple[bytes, dict]:
    """The multipart body encoded once, for the load generator."""
    req = httpx.Request("POST", f"{url}/reconstruct", files={"image": ("a.jpg", image, "image/jpeg")}, data=form)
    return req.read(), {"Content-Type": req.headers["Content-Type"], **H}


def _hey(url: str, body_path: Path, content_type: str, seconds: float, workers: int,
         qps_per_worker: float | None) -> list:
    """Load from ``hey`` (Debian's, in Go): a Python client on the same two cores fell
    behind its own schedule by seconds and measured itself, not the server. Returns
    (status, total ms, server wait ms) per request: the wait is from the request being
    written to the first byte of the answer."""
    cmd = ["hey", "-z", f"{seconds:g}s", "-c", str(workers), "-m", "POST", "-D", str(body_path), "-T", content_type,
           "-H", f"X-API-Key: {KEY}", "-t", "40", "-o", "csv", f"{url}/reconstruct"]
    if qps_per_worker:
        cmd[5:5] = ["-q", f"{qps_per_worker:g}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    rows = csv.DictReader(io.StringIO(out.stdout))
    return [(int(r["status-code"]), float(r["response-time"]) * 1000, float(r["Response-delay"]) * 1000) for r in rows]


def _server_latency(metrics_text: str, status: str) -> dict:
    """Share of /reconstruct answers with ``status`` the server gave within each histogram
    bucket, timed from when the request reached the app (after uvicorn parsed it)."""
    import re

    pattern = (r'jmlr_request_duration_seconds_bucket\{le="([^"]+)",method="POST",route="/reconstruct",'
               rf'status="{status}"\}} (\S+)')
    buckets = {float(le): float(v) for le, v in re.findall(pattern, metrics_text)}
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return {}
    return {f"<= {le * 1000:g} ms": round(v / total, 3) for le, v in sorted(buckets.items()) if le <= 0.1}


def scenario_overload(work: Path, image: bytes, repo: Path, label: str, seconds: float, capacity: float | None) -> dict:
    if shutil.which("hey") is None:
        return {"skipped": "needs `hey` (apt-get install hey)"}
    with Server(work / f"overload-{label}", repo=repo) as s:
        form = {"faces": json.dumps([{"landmarks5": landmarks_of(s.url, image)}])}
        body, headers = _prebuilt(s.url, image, form)
        body_path = work / "body.bin"
        body_path.write_bytes(body)
        if capacity is None:  # closed loop at concurrency 8, no rate limit: what it serves
            warm = _hey(s.url, body_path, headers["Content-Type"], 8, 8, None)
            capacity = sum(st == 200 for st, _, _ in warm) / 8
        # 10x capacity: twice that many workers, each at most one request per 2 s
        # (closed loop per worker, so a worker waiting on a slow answer offers less).
        workers = max(20, int(round(20 * capacity)))
        t0 = time.perf_counter()
        rows = _hey(s.url, body_path, headers["Content-Type"], seconds, workers, 0.5)
        wall = time.perf_counter() - t0
        metrics_text = httpx.get(f"{s.url}/metrics", timeout=30).text
    statuses = Counter(st for st, _, _ in rows)
    total = {st: [ms for s2, ms, _ in rows if s2 == st] for st in statuses}
    return {
        "capacity_req_s": round(capacity, 1), "offered_req_s": round(workers * 0.5, 1), "hey_workers": workers,
        "requests": len(rows), "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "answered_req_s": round(len(rows) / wall, 1), "goodput_req_s": round(statuses.get(200, 0) / wall, 1),
        "p50_ms": {str(k): pct(v, 50) for k, v in total.items()},
        "p95_ms": {str(k): pct(v, 95) for k, v in total.items()},
        "server_503_within": _server_latency(metrics_text, "503"),
        "other_5xx": sum(v for k, v in statuses.items() if k >= 500 and k not in (503, 504)),
        "wall_s": round(wall, 1),
    }


async def _writer_load(url: str, image: bytes, form: dict, seconds: float, acked: dict, concurrency: int = 4,
                       tag: str = "") -> Counter:
    """Reconstructs (meshes) and device creates until ``seconds`` pass or the server dies;
    records every acknowledged write in ``acked``."""
    statuses: Counter = Counter()
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers=H, timeout=15) as c:
        async def worker(w: int):
            k = 0
            while time.monotonic() < end:
                k += 1
                try:
                    if k % 3 == 0:
                        dev = f"d{tag}-{w}-{k}"
                        r = await c.post("/devices", json={"device_id": dev, "fx": 500.0, "fy": 500.0, "cx": 1.0,
                                                           "cy": 1.0, "width": 2, "height": 2})
                        if r.status_code == 201:
                            acked["devices"].append(dev)
                    else:
                        r = await c.post("/reconstruct", files={"image": ("a.jpg", image, "image/jpeg")}, data=form)
                        if r.status_code == 200:
                            for f in r.json()["faces"]:
                                if f.get("mesh_status") == "stored":
                                    acked["meshes"].append(f["mesh_id"])
                                else:
                                    acked["not_stored"].append(f.get("mesh_status"))
                    statuses[r.status_code] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return statuses


def _lost(url: str, acked: dict) -> dict:
    with httpx.Client(base_url=url, headers=H, timeout=30) as c:
        lost_meshes = [m for m in acked["meshes"] if c.get(f"/mesh/{m}").status_code != 200]
        lost_devices = [d for d in acked["devices"] if c.get(f"/devices/{d}").status_code != 200]
    return {"acked_meshes": len(acked["meshes"]), "acked_devices": len(acked["devices"]),
            "lost_meshes": len(lost_meshes), "lost_devices": len(lost_devices)}


def scenario_kill9(work: Path, image: bytes, rounds: int) -> dict:
    """Each round: load, kill -9, start again on the same data dir, look every
    acknowledged write up; the restarted server carries the next round's load."""
    data_dir = work / "kill9"
    out = []
    s = Server(data_dir, JMLR_STORAGE="sqlite").start()
    form = {"faces": json.dumps([{"landmarks5": landmarks_of(s.url, image)}])}
    try:
        for r in range(rounds):
            acked = {"meshes": [], "devices": [], "not_stored": []}

            async def go():
                load = asyncio.ensure_future(_writer_load(s.url, image, form, 30, acked, tag=str(r)))
                await asyncio.sleep(random.uniform(4, 8))
                s.kill9()
                return await load

            statuses = asyncio.run(go())
            s.stop()
            s = Server(data_dir, JMLR_STORAGE="sqlite").start()
            out.append({**_lost(s.url, acked), "statuses": {str(k): v for k, v in statuses.items()}})
    finally:
        s.stop()
    leftovers = sorted(p.name for p in (data_dir / "meshes").glob(".tmp-*"))
    return {"rounds": out, "tmp_files_left": len(leftovers)}


def scenario_redis(work: Path, image: bytes) -> dict:
    red = Redis(work).start()
    out = {}
    try:
        with Server(work / "redis-api", JMLR_STORAGE="redis", JMLR_REDIS_URL=red.url, JMLR_STORAGE_RETRY_S="1") as s:
            form = {"faces": json.dumps([{"landmarks5": landmarks_of(s.url, image)}])}
            for mode, sig in (("stop", signal.SIGTERM), ("kill9", signal.SIGKILL)):
                acked = {"meshes": [], "devices": [], "not_stored": []}
                probes: list[int] = []

                async def go():
                    load = asyncio.ensure_future(_writer_load(s.url, image, form, 12, acked, tag=mode))
                    await asyncio.sleep(3)
                    red.stop(sig)
                    await asyncio.sleep(1.5)
                    async with httpx.AsyncClient(base_url=s.url, timeout=10) as c:
                        probes.extend([(await c.get("/readyz")).status_code, (await c.get("/devices")).status_code])
                    await asyncio.sleep(1.5)
                    red.start()
                    return await load

                statuses = asyncio.run(go())
                time.sleep(1.5)
                ready_after = httpx.get(f"{s.url}/readyz", timeout=10).status_code
                out[mode] = {**_lost(s.url, acked), "statuses": {str(k): v for k, v in statuses.items()},
                             "not_stored_said_so": dict(Counter(acked["not_stored"])),
                             "readyz_and_devices_during_outage": probes, "readyz_after": ready_after}
    finally:
        red.stop()
    return out


def scenario_redis_pressure(work: Path) -> dict:
    from service.storage import RedisStorage, StorageFullError, new_mesh_id

    rng = np.random.default_rng(0)
    arrays = {"vertices_world": rng.normal(size=(1220, 3)).astype(np.float32),
              "faces": rng.integers(0, 1220, (2292, 3)).astype(np.int32), "R_cv": np.eye(3), "t_cv": np.zeros(3)}
    out = {}
    for policy in ("noeviction", "volatile-ttl"):
        red = Redis(work, "--maxmemory", "32mb", "--maxmemory-policy", policy).start()
        try:
            st = RedisStorage(red.url)
            acked, refused = [], 0
            for _ in range(2000):
                mesh_id = new_mesh_id()
                try:
                    st.put_mesh(mesh_id, {}, arrays, ttl_s=3600)
                    acked.append(mesh_id)
                except StorageFullError:
                    refused += 1
            time.sleep(2)
            lost = sum(st.get_mesh(m) is None for m in acked)
            out[policy] = {"written": 2000, "acked": len(acked), "refused_storage_full": refused,
                           "lost_before_ttl": lost, "evicted_keys": int(st.client.info("stats")["evicted_keys"])}
            st.close()
        finally:
            red.stop()
    return out


# ----------------------------------------------------------------------------- report


def _overload_pair(work: Path, image: bytes, args) -> dict:
    after = scenario_overload(work, image, args.repo, "after", args.overload_seconds, None)
    out = {"this_checkout": after}
    if args.before and "capacity_req_s" in after:
        out["before"] = scenario_overload(work, image, args.before, "before", args.overload_seconds,
                                          after["capacity_req_s"])
    return out


def markdown(results: dict, info: dict) -> str:
    lines = [
        "# Reliability results (generated)",
        "",
        f"Generated by `python bench/bench_reliability.py {info['argv']}` on {info['date']}; "
        f"{info['machine']}. The machine was shared with a CPU training job: compare numbers "
        "within this run, not with other runs. Read with [reliability.md](reliability.md).",
        "",
        "```json",
        json.dumps(results, indent=1),
        "```",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["malformed", "bombs", "chunked", "overload", "kill9", "redis", "redis_pressure"])
    ap.add_argument("--repo", type=Path, default=REPO_ROOT,
                    help="the checkout whose service is tested (default: this one)")
    ap.add_argument("--before", type=Path, help="another checkout to run overload and chunked against, same run")
    ap.add_argument("--overload-seconds", type=float, default=12.0)
    ap.add_argument("--malformed-rounds", type=int, default=120)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "reliability_results.md")
    args = ap.parse_args()
    TESTED["repo"] = args.repo
    want = set(args.only or ["malformed", "bombs", "chunked", "overload", "kill9", "redis", "redis_pressure"])
    image = astronaut_jpeg()
    work = Path(tempfile.mkdtemp(prefix="jmlr-rel-"))
    partial = args.out.with_suffix(".partial.json")
    scenarios = {
        "malformed": lambda: scenario_malformed(work, image, args.malformed_rounds),
        "bombs": lambda: {"budget_default": scenario_bombs(work, None, "budget"),
                          "budget_lifted": scenario_bombs(work, 10**12, "nobudget")},
        "chunked": lambda: {"this_checkout": scenario_chunked(work, args.repo, "after"),
                            **({"before": scenario_chunked(work, args.before, "before")} if args.before else {})},
        "overload": lambda: _overload_pair(work, image, args),
        "kill9": lambda: scenario_kill9(work, image, 3),
        "redis": lambda: scenario_redis(work, image),
        "redis_pressure": lambda: scenario_redis_pressure(work),
    }
    results: dict = {}
    try:
        for name, run in scenarios.items():
            if name not in want:
                continue
            for attempt in (1, 2):  # a server that failed to start (a colleague mid-edit) gets one retry
                try:
                    results[name] = run()
                    break
                except RuntimeError as exc:
                    print(f"{name}: attempt {attempt} failed: {exc}", file=sys.stderr)
                    results[name] = {"error": str(exc)[-500:]}
            partial.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = {"argv": " ".join(sys.argv[1:]), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}
    print(json.dumps(results, indent=1))
    args.out.write_text(markdown(results, info))
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

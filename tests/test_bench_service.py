"""bench/bench_service.py without a server: its photos (the detector finds one and six
faces), the per-stage means it reads from the service's own Prometheus histograms, and
the report's budget, network ratios and issue-12 targets from made-up cells."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bench_service as bs  # noqa: E402


def test_photos_have_one_and_six_faces():
    from jmlr.detect import create_detector

    images = bs.bench_images()
    photo, group = images["photo"][0], images["group"][0]
    assert photo.shape == (480, 640, 3) and group.shape == (886, 1280, 3)
    assert np.array_equal(group, bs.group_photo())  # deterministic
    # as the service's defaults build it (service.settings: threshold, max side, smallest face)
    det = create_detector("centerface", 0.5, 960, 48.0)
    assert len(det.detect(photo)) == 1
    faces = det.detect(group)
    assert len(faces) == 6
    widths = sorted(float(f.bbox[2] - f.bbox[0]) for f in faces)
    assert widths[0] > 60 and widths[-1] < 160
    for key in ("photo", "group"):
        assert images[key][1][:2] == b"\xff\xd8"  # JPEG


def test_server_means_from_the_service_metrics():
    from service.metrics import Metrics

    m = Metrics()
    m.observe_stage("encode", 0.5)
    m.batch_size.observe(8)
    before = bs.parse_metrics(m.render().decode())
    for s in (0.001, 0.003):
        m.observe_stage("encode", s)
        m.request_latency.labels(route="/reconstruct", method="POST", status="200").observe(s * 10)
        m.queue_wait.observe(s)
    m.request_latency.labels(route="/reconstruct", method="POST", status="503").observe(9.0)  # not counted
    m.batch_size.observe(1)
    m.batch_size.observe(3)
    means = bs.server_means(before, bs.parse_metrics(m.render().decode()))
    assert means["encode"] == pytest.approx(2.0) and means["queue_wait"] == pytest.approx(2.0)
    assert means["request"] == pytest.approx(20.0) and means["batch"] == pytest.approx(2.0)
    assert np.isnan(bs.server_means(before, before)["encode"])


def _cell(batch: int, case: str, conc: int, latency: float, faces: int, fps: float, **stages: float) -> bs.Cell:
    c = bs.Cell(batch, case, conc, requests=10, faces=10 * faces, wall_s=10 * faces / fps)
    c.latencies_ms = [latency] * 10
    c.timings = [dict(stages, total=sum(stages.values()))] * 10
    c.server = {"encode": 0.5, "request": latency - 2.0, "queue_wait": 0.1, "batch": 1.0}
    return c


def test_report_budget_ratios_and_targets():
    cells = [
        _cell(8, "landmarks", 1, 22.0, 1, 45.0, decode=1.0, track=0.1, crop=0.3, infer=18.0, pnp=1.5, store=0.5),
        _cell(8, "landmarks", 8, 110.0, 1, 72.0, decode=1.0, crop=0.3, infer=100.0, pnp=1.5, store=0.5),
        _cell(8, "detect", 1, 65.0, 1, 18.0, decode=1.0, detect=30.0, crop=0.3, infer=18.0, pnp=1.5, store=0.5),
        _cell(8, "group", 1, 140.0, 6, 43.0, decode=4.0, detect=60.0, crop=1.0, infer=60.0, pnp=9.0, store=3.0),
    ]
    raw = {"before": {1: {"calls": 100, "ms_p50": 19.0, "ms_p90": 20.0, "faces_per_s": 52.6},
                      8: {"calls": 20, "ms_p50": 100.0, "ms_p90": 101.0, "faces_per_s": 80.0}},
           "after": {1: {"calls": 100, "ms_p50": 21.0, "ms_p90": 22.0, "faces_per_s": 47.6},
                     8: {"calls": 20, "ms_p50": 100.0, "ms_p90": 101.0, "faces_per_s": 80.0}}}
    ref = bs.network_reference(raw)
    assert ref[1]["ms"] == pytest.approx(20.0) and ref[8]["faces_per_s"] == pytest.approx(80.0)

    rows = {r[0]: r[2:] for r in bs.targets(cells, ref, [8])}
    assert rows["client landmarks, concurrency 8: faces/s"] == ["72.0", "yes"]
    assert rows["client landmarks, concurrency 1: p50 ms"] == ["22", "yes"]
    assert rows["client landmarks, concurrency 1: p50 / the network's own time at batch 1"] == ["1.10", "yes"]
    # (22 - 0 - 18) / 20 ms
    assert rows["outside detection and inference, per face / the network's time (landmarks, c=1)"] == ["0.20", "yes"]
    assert rows["PnP per face, ms (worst case at concurrency 1)"] == ["1.5", "yes"]  # group: 9 / 6
    assert rows["group photo (6 faces), concurrency 1: p50 ms"] == ["140", "yes"]
    assert rows["detection (640×480, one face), concurrency 1: p50 ms"] == ["65", "no"]
    assert rows["service (landmarks, best of c=8/32) / raw network at batch 8, faces/s"] == ["0.90", "yes"]
    assert "detection (640×480, one face), concurrency 8: faces/s" not in rows  # no such cell

    args = argparse.Namespace(modes=list(bs.CASES), max_queue_delay_ms=5.0, requests=10, time_cap_s=45.0,
                              raw_seconds=10.0, batch_sizes=[8], concurrency=[1, 8])
    info = {"date": "today", "machine": "m", "model": "name=x", "backend": "ort"}
    text = bs.markdown(cells, info, args, raw)
    for heading in ("## The raw network, same run", "## Per-stage budget", "## Against the network",
                    "## Issue 12 targets"):
        assert heading in text
    budget = text.split("## Per-stage budget")[1].split("##")[0]
    group_row = next(line for line in budget.splitlines() if line.startswith("| 8 | group | 1 |"))
    # faces/request, then decode, detect/locate, crop, infer, (queue wait), pnp, store, pipeline, encode,
    # request, client, HTTP, around/face
    assert group_row.split(" | ")[3:] == ["6.0", "4.0", "60.0", "1.0", "60.0", "0.1", "9.0", "3.0", "137.0", "0.5",
                                          "138.0", "140.0", "2.0", "3.3 |"]


def test_notes_after_the_marker_are_kept(tmp_path):
    out = tmp_path / "bench.md"
    assert bs.kept_notes(out) == ""
    out.write_text("# old table\n\nno marker\n")
    assert bs.kept_notes(out) == ""
    out.write_text(f"# old table\n\n{bs.NOTES_MARKER}\n\n### A note\n\ntext\n")
    assert bs.kept_notes(out) == f"\n{bs.NOTES_MARKER}\n\n### A note\n\ntext\n"

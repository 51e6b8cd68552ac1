"""``jmlr track``: a video file through the service's sessions, with the shipped model."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from fastapi.testclient import TestClient

skimage_data = pytest.importorskip("skimage.data")

from jmlr.cli import main  # noqa: E402
from service.app import create_app  # noqa: E402
from service.offline_video import VideoReader  # noqa: E402
from service.settings import Settings  # noqa: E402

FRAMES, FPS, SHIFT_PX = 8, 10.0, 3


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """The astronaut drifting right by SHIFT_PX a frame, at FPS."""
    path = tmp_path_factory.mktemp("videos") / "astronaut walk.mp4"
    bgr = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (512, 512))
    assert writer.isOpened()
    for k in range(FRAMES):
        shift = np.float32([[1, 0, SHIFT_PX * k], [0, 1, 0]])
        writer.write(cv2.warpAffine(bgr, shift, (512, 512), borderMode=cv2.BORDER_REFLECT))
    writer.release()
    return path


def _read_frames(path: Path) -> list[np.ndarray]:
    """RGB frames, read as the command reads them."""
    reader = VideoReader(path)
    try:
        return [frame.rgb for frame in reader.frames()]
    finally:
        reader.close()


@pytest.fixture(scope="module")
def tracked(video, tmp_path_factory):
    """One run over the whole video: (exit status, out folder, stdout, answers)."""
    out = tmp_path_factory.mktemp("out")
    buf = io.StringIO()  # capsys is per test; this run serves several
    with contextlib.redirect_stdout(buf):
        status = main(["track", str(video), "--out", str(out), "--mesh", "glb", "--include", "vertices",
                       "--no-progress"])
    lines = (out / "astronaut walk.jsonl").read_text().splitlines() if status == 0 else []
    return status, out, buf.getvalue(), [json.loads(line) for line in lines]


def test_a_video_gives_a_line_per_frame_tracked_from_the_first_detection(tracked):
    status, _, stdout, answers = tracked
    assert status == 0
    assert [a["video"] for a in answers] == [{"frame": k, "time_s": pytest.approx(k / FPS)} for k in range(FRAMES)]
    sessions = [a["session"] for a in answers]
    assert [s["frame"] for s in sessions] == list(range(FRAMES))
    assert {s["id"] for s in sessions} == {"astronaut_walk"}  # the file's name, as a session id may be
    assert [s["status"] for s in sessions] == ["started"] + ["continued"] * (FRAMES - 1)
    assert [s["detected"] for s in sessions] == [True] + [False] * (FRAMES - 1)  # then followed
    assert all(s["smoothed"] for s in sessions)
    assert all(len(a["faces"]) == 1 and a["faces"][0]["track_id"] == 0 for a in answers)
    # The head drifts right in the frame: its camera-frame x grows (OpenCV: x right).
    x = [a["faces"][0]["pose"]["translation"][0] for a in answers]
    assert all(b > a for a, b in itertools.pairwise(x)), x
    assert f"{FRAMES} frames answered, 1.00 faces a frame, the detector ran on 1;" in stdout


def test_each_frame_has_its_mesh_and_the_overlay_video_its_frame(tracked, video):
    _, out, _, answers = tracked
    for a in answers:
        [face] = a["faces"]
        name = f"astronaut walk_f{a['video']['frame']:06d}_face0.glb"
        assert face["mesh_files"] == {"glb": name} and "mesh_urls" not in face
        glb = trimesh.load(out / name, force="mesh", process=False)
        np.testing.assert_allclose(glb.vertices, face["vertices"], atol=1e-5)
    drawn, original = _read_frames(out / "astronaut walk_overlay.mp4"), _read_frames(video)
    assert len(drawn) == FRAMES and drawn[0].shape == original[0].shape
    for a, d, o in zip(answers, drawn, original):
        changed = np.abs(d.astype(int) - o).max(-1) > 60  # beyond two MPEG-4 round trips' noise
        x0, y0, x1, y1 = (int(v) for v in a["faces"][0]["bbox"])
        assert changed[y0:y1, x0:x1].mean() > 0.01  # the face's curves and axes
        changed[max(y0 - 40, 0):y1 + 10, max(x0 - 10, 0):x1 + 10] = False
        assert changed.mean() < 0.002  # nothing far from the face


def test_the_answers_are_those_of_a_session_over_http(tracked, video, tmp_path):
    """The same frames, as the JPEGs the command sends, through POST /reconstruct with a
    session_id and the frames' timestamps: the same tracks, poses and points."""
    _, _, _, answers = tracked
    frames = _read_frames(video)
    with TestClient(create_app(Settings(data_dir=tmp_path, api_keys=["k"]))) as client:
        for k, (rgb, offline) in enumerate(zip(frames, answers)):
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok
            r = client.post("/reconstruct", files={"image": ("f.jpg", jpeg.tobytes(), "image/jpeg")},
                            data={"include": "vertices", "session_id": "s", "timestamp": str(k / FPS)},
                            headers={"X-API-Key": "k"})
            assert r.status_code == 200, r.text
            served = r.json()
            assert served["session"]["detected"] == offline["session"]["detected"]
            [a], [b] = served["faces"], offline["faces"]
            assert a["track_id"] == b["track_id"]
            for key in ("bbox", "landmarks5", "landmarks_68", "vertices", "distance_m"):
                np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=f"frame {k}: {key}")
            for key in ("rotation", "translation"):
                np.testing.assert_allclose(a["pose"][key], b["pose"][key], atol=1e-5, err_msg=f"frame {k}")


def test_every_other_frame_unsmoothed(video, tmp_path):
    out = tmp_path / "out"
    assert main(["track", str(video), "--out", str(out), "--every", "2", "--max-frames", "3", "--no-smoothing",
                 "--no-overlay", "--no-progress"]) == 0
    answers = [json.loads(line) for line in (out / "astronaut walk.jsonl").read_text().splitlines()]
    assert [a["video"]["frame"] for a in answers] == [0, 2, 4]
    assert [a["session"]["timestamp_s"] for a in answers] == pytest.approx([0.0, 0.2, 0.4])  # true times
    assert not any(a["session"]["smoothed"] for a in answers)
    assert sorted(p.name for p in out.iterdir()) == ["astronaut walk.jsonl"]  # no meshes asked for, no overlay


@pytest.mark.parametrize("args, message", [
    (["--every", "0"], "--every must be at least 1"),
    (["--smoothing", '{"beta": -1}'], "invalid `smoothing`"),
    (["--smoothing", '{"beta": 1}', "--no-smoothing"], "exclude each other"),
    (["--quality", "0"], "--quality must lie in 1..100"),
    (["--include", "normals"], "unknown include ['normals']"),
])
def test_bad_options_stop_before_the_model_loads(video, tmp_path, capsys, args, message):
    assert main(["track", str(video), "--out", str(tmp_path / "o"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_file_that_is_not_a_video_is_refused(tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    assert main(["track", str(text), "--out", str(tmp_path / "o")]) == 2
    assert "not a video OpenCV can read" in capsys.readouterr().err
    assert main(["track", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

"""The picture of ``jmlr track`` in docs/sessions.md: a rendered head turning quickly,
written as a video file, tracked by the command, and eight of its overlay frames beside
the truth.

    python docs/make_track_picture.py [--frames 75] [--out docs/track_overlay.jpg]

The sequence is `bench/bench_sessions.py`'s ``quick`` motion (seed 1, 640x480 at 30 fps,
known intrinsics), so the caption can give each frame's true yaw and its error.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not installed: the checkout's

from bench.bench_sessions import HEIGHT, WIDTH, K, render_sequence
from jmlr.cli import main as jmlr_main
from jmlr.geometry.camera import opencv_to_rt
from jmlr.geometry.rotation import geodesic_angle_deg, head_pose_euler
from service.offline_video import VideoReader

FPS = 30.0


def write_video(jpegs: list[bytes], path: Path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for jpeg in jpegs:
        writer.write(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    writer.release()


def caption(img: np.ndarray, lines: list[str]) -> None:
    for i, line in enumerate(lines):
        y = img.shape[0] - 12 - 22 * (len(lines) - 1 - i)
        cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=75)
    ap.add_argument("--shown", type=int, default=8, help="frames in the picture, evenly spaced")
    ap.add_argument("--out", type=Path, default=Path("docs/track_overlay.jpg"))
    args = ap.parse_args()

    print(f"rendering {args.frames} frames ...", file=sys.stderr)
    seq = render_sequence(args.frames, FPS, seed=1, renderer=None, kind="quick")
    camera = {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "width": WIDTH, "height": HEIGHT}
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "turning.mp4"
        write_video(seq["jpeg"], video)
        out = Path(tmp) / "out"
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            status = jmlr_main(["track", str(video), "--out", str(out), "--camera", json.dumps(camera)])
        if status != 0:
            return status
        summary = stdout.getvalue().strip().split(" -> ")[0].replace(str(video), video.name)
        answers = [json.loads(line) for line in (out / "turning.jsonl").read_text().splitlines()]
        reader = VideoReader(out / "turning_overlay.mp4")
        drawn = [frame.rgb for frame in reader.frames()]
        reader.close()

    errors = []
    for a in answers:
        k = a["video"]["frame"]
        R = np.asarray(a["faces"][0]["pose"]["rotation"]) if a["faces"] else None
        errors.append(float(geodesic_angle_deg(R, seq["R_cv"][k])) if R is not None else np.nan)
    shown = np.linspace(0, len(answers) - 1, args.shown).round().astype(int)
    tiles = []
    for i in shown:
        a, img = answers[i], drawn[i].copy()
        k = a["video"]["frame"]
        true_yaw = float(head_pose_euler(opencv_to_rt(seq["R_cv"][k], seq["t_cv"][k]))[0])
        lines = [f"frame {k}, {a['video']['time_s']:.2f} s, "
                 f"{'detector ran' if a['session']['detected'] else 'followed'}"]
        if a["faces"]:
            lines.append(f"yaw {a['faces'][0]['pose']['yaw']:+.0f} (true {true_yaw:+.0f}), "
                         f"error {errors[i]:.1f} deg")
        else:
            lines.append("no face")
        caption(img, lines)
        tiles.append(img)
    cols = 4
    rows = [np.concatenate(tiles[r * cols:(r + 1) * cols], 1) for r in range(len(tiles) // cols)]
    sheet = np.concatenate(rows, 0)
    sheet = cv2.resize(sheet, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(summary)
    print("the detector ran on frames", [a["video"]["frame"] for a in answers if a["session"]["detected"]])
    print(f"rotation error over all frames: mean {np.nanmean(errors):.2f} deg, max {np.nanmax(errors):.2f} deg")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

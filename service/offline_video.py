"""``jmlr track``: a video file through the service's video sessions, with no server.

Each frame is one ``POST /reconstruct`` of one session (`service.sessions.Sessions`, kept
in memory): faces are detected on the first frame and then followed from frame to frame
(the detector runs again every ``JMLR_SESSION_REDETECT_EVERY`` frames or when a track is
lost), and their pose, mesh and blendshapes are smoothed with the session's One Euro
filter, exactly as a client streaming the frames would get them. A frame goes to the
engine as the JPEG such a client would send (quality ``--quality``). What is written:

    OUT/<stem>.jsonl            one line per frame answered: the API's answer (its
                                ``session`` part included, each face's ``track_id``), with
                                ``video: {"frame": index in the file, "time_s": ...}``
    OUT/<stem>_overlay.mp4      the answered frames with each face's 68 points, head
                                axes and track label (MPEG-4 Part 2, which OpenCV's
                                FFmpeg writes everywhere)
    OUT/<stem>_f<frame>_face<k>.<format>
                                each face's mesh on each frame, only with ``--mesh``

Frame times come from the container (variable-rate phone videos keep their real gaps,
which the filter uses), or from ``--fps`` where it has none. A frame the API would refuse
stops the run with the API's code (exit 1; the lines written so far stay); bad options
or a file that is not a readable video exit 2 before any work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .offline import add_answer_arguments, add_engine_arguments

if TYPE_CHECKING:
    import numpy as np

    from .offline import PhotoOptions
    from .pipeline import Engine, ReconstructRequest
    from .schemas import ReconstructResponse
    from .schemas_sessions import SmoothingIn
    from .sessions import SessionFrame

#: Offline there is no client waiting: a frame may take as long as the machine needs.
_DEADLINE_S = 3600.0
#: The run's one session never expires while it runs, however slow the machine.
_SESSION_TTL_S = 10 * 365 * 86400.0


def register(subparsers) -> None:
    # Nothing heavy is imported here: every `jmlr` command builds this parser.
    p = subparsers.add_parser(
        "track",
        help="reconstruct and track the faces of a video file, as a POST /reconstruct session would (no server)",
        description="Run a video file's frames through the service's pipeline as one video session (tracking "
        "from frame to frame, the detector only now and then, One Euro smoothing) and write each frame's API "
        "answer as a JSON line and an overlay video. Every setting of the service, the sessions' included "
        "(JMLR_SESSION_*), also reads from JMLR_* env vars (service/settings.py); command-line values win.",
    )
    p.add_argument("video", type=Path, metavar="VIDEO", help="a video file OpenCV's FFmpeg reads (mp4, mov, mkv, ...)")
    p.add_argument("--out", type=Path, required=True, help="folder to write into (made if missing)")
    add_engine_arguments(p, camera_default="a 60 degree field of view; phone videos carry no focal length")
    add_answer_arguments(p, mesh_default=[])
    p.add_argument("--smoothing", help="JSON smoothing settings, as the API's `smoothing` field, e.g. "
                   '\'{"min_cutoff": 1.0, "beta": 0.15}\' (default: the service\'s)')
    p.add_argument("--no-smoothing", action="store_true",
                   help="answers not smoothed (tracking still runs), as smoothing {\"enabled\": false}")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="answer every Nth frame only (their true times kept; default 1: all)")
    p.add_argument("--start", type=float, default=0.0, metavar="SECONDS", help="skip the frames before this time")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="answer at most N frames")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate to use when the file has no frame times (default: the file's)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the frames sent to the engine (default 95)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class VideoOptions:
    """How the video is read and answered, besides the request fields."""

    smoothing: SmoothingIn | None
    every: int = 1
    start_s: float = 0.0
    max_frames: int | None = None
    fps: float | None = None
    quality: int = 95
    progress: bool = True


class VideoError(Exception):
    """The file cannot be read as a video (exit status 2)."""


def _video_options(args: argparse.Namespace) -> VideoOptions:
    """The video's own options, checked (`PhotoError` or `ApiError` when bad)."""
    from .offline import PhotoError
    from .routers.reconstruct import parse_form_json
    from .schemas_sessions import SmoothingIn

    smoothing = parse_form_json(args.smoothing, SmoothingIn, "invalid_smoothing", "smoothing")
    if args.no_smoothing:
        if smoothing is not None:
            raise PhotoError("validation_error", "--smoothing and --no-smoothing exclude each other")
        smoothing = SmoothingIn(enabled=False)
    if args.every < 1:
        raise PhotoError("validation_error", f"--every must be at least 1, not {args.every}")
    if args.max_frames is not None and args.max_frames < 1:
        raise PhotoError("validation_error", f"--max-frames must be at least 1, not {args.max_frames}")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise PhotoError("validation_error", f"--fps must lie in (0, 1000], not {args.fps}")
    if not 1 <= args.quality <= 100:
        raise PhotoError("validation_error", f"--quality must lie in 1..100, not {args.quality}")
    if not args.start >= 0:
        raise PhotoError("validation_error", f"--start must be at least 0, not {args.start}")
    return VideoOptions(smoothing, args.every, args.start, args.max_frames, args.fps, args.quality, args.progress)


@dataclass(frozen=True)
class VideoFrame:
    index: int  # in the file, from 0
    time_s: float
    rgb: np.ndarray  # (H, W, 3) uint8


class VideoReader:
    """A video file's frames in order, with their times in seconds (strictly increasing)."""

    def __init__(self, path: Path, fps: float | None = None) -> None:
        import cv2

        if not path.is_file():
            raise VideoError(f"{path}: no such file")
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise VideoError(f"{path}: not a video OpenCV can read")
        file_fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps or (file_fps if 0 < file_fps <= 1000 else None)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None  # an estimate for some containers
        self.path = path

    def frames(self) -> Iterator[VideoFrame]:
        import cv2

        last: float | None = None
        index = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok:
                return
            t_s = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            # The container's time when it has one that moves on; else the frame rate's.
            if last is not None and not t_s > last:
                if self.fps is None:
                    raise VideoError(f"{self.path}: the file gives no frame times; pass --fps")
                t_s = last + 1.0 / self.fps
            last = t_s
            yield VideoFrame(index, t_s, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1

    def close(self) -> None:
        self._cap.release()


def run(args: argparse.Namespace) -> int:
    from .errors import ApiError
    from .offline import PhotoError, load_engine, request_options

    try:
        options = request_options(args)
        video = _video_options(args)
    except (ApiError, PhotoError) as exc:
        print(f"jmlr track: error: {exc}", file=sys.stderr)
        return 2
    try:
        reader = VideoReader(args.video, video.fps)
    except VideoError as exc:
        print(f"jmlr track: error: {exc}", file=sys.stderr)
        return 2
    engine = load_engine(args, "jmlr track", session_storage="memory", session_ttl_s=_SESSION_TTL_S)
    if engine is None:
        reader.close()
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        summary = asyncio.run(track_video(engine, reader, args.out, options, video))
    except PhotoError as exc:
        print(f"{args.video}: stopped ({exc.code}): {exc}", file=sys.stderr)
        return 1
    except VideoError as exc:
        print(f"jmlr track: error: {exc}", file=sys.stderr)
        return 1
    finally:
        reader.close()
        engine.close()
    print(summary)
    return 0


async def track_video(engine: Engine, reader: VideoReader, out: Path, options: PhotoOptions,
                      video: VideoOptions) -> str:
    """Answer the video's frames as one session and write the files; returns a summary line.

    Raises:
        PhotoError: a frame the API would refuse (the lines written so far stay).
        VideoError: the file stopped giving frame times.
    """
    import cv2

    from .offline import MeshesInMemory, draw_answer, refused_as_photo_error, write_meshes
    from .sessions import MemorySessionStore, SessionRequest, Sessions

    settings = engine.settings
    sessions = Sessions(settings, MemorySessionStore(1))
    # The API's pattern for session ids (SESSION_ID_PATTERN): the file's name, made to fit.
    session_id = re.sub(r"[^A-Za-z0-9_.-]", "_", reader.path.stem)[:64] or "video"
    stem = reader.path.stem
    lines_path = out / f"{stem}.jsonl"
    overlay_path = out / f"{stem}_overlay.mp4"
    writer: Any = None
    answered = detected = faces = meshes_written = 0
    started = time.perf_counter()
    bar = _progress(reader, video)
    try:
        with lines_path.open("w") as lines:
            for frame in _selected(reader.frames(), video):
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR),
                                        [cv2.IMWRITE_JPEG_QUALITY, video.quality])
                assert ok  # a decoded frame always encodes
                meshes = MeshesInMemory()
                req = options.request(jpeg.tobytes())

                async def reconstruct(sf: SessionFrame, req: ReconstructRequest = req,
                                      meshes: MeshesInMemory = meshes) -> ReconstructResponse:
                    return await engine.reconstruct(req, meshes, time.monotonic() + _DEADLINE_S, sf)

                this = SessionRequest(session_id, frame.time_s, video.smoothing)
                with refused_as_photo_error(settings):
                    response = await sessions.run_frame("offline", this, engine.model.topology, reconstruct)
                answer = response.model_dump(mode="json", exclude_unset=True)
                meshes_written += write_meshes(answer, meshes, out, f"{stem}_f{frame.index:06d}", options)
                answer["video"] = {"frame": frame.index, "time_s": round(frame.time_s, 6)}
                lines.write(json.dumps(answer, separators=(",", ":")) + "\n")
                answered += 1
                detected += bool(answer["session"]["detected"])
                faces += len(answer["faces"])
                if options.overlay:
                    if writer is None:
                        writer = _overlay_writer(overlay_path, frame.rgb.shape, reader.fps, video.every)
                    drawn = draw_answer(frame.rgb, answer, meshes.meshes, engine.model.topology.triangles)
                    writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(faces=len(answer["faces"]), detector=detected, refresh=False)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.release()
    if answered == 0:
        raise VideoError(f"{reader.path}: no frame to answer (an empty video, or --start past its end)")
    seconds = time.perf_counter() - started
    written = [lines_path.name] + ([overlay_path.name] if writer is not None else [])
    if meshes_written:
        written.append(f"{meshes_written} mesh file{'s' if meshes_written != 1 else ''}")
    return (f"{reader.path}: {answered} frame{'s' if answered != 1 else ''} answered, "
            f"{faces / answered:.2f} faces a frame, the detector ran on {detected}; "
            f"{answered / seconds:.1f} frames/s -> {out} ({', '.join(written)})")


def _selected(frames: Iterator[VideoFrame], video: VideoOptions) -> Iterator[VideoFrame]:
    """The frames to answer: from ``start_s``, every ``every``-th, at most ``max_frames``."""
    kept = 0
    seen = 0
    for frame in frames:
        if frame.time_s < video.start_s:
            continue
        seen += 1
        if (seen - 1) % video.every:
            continue
        yield frame
        kept += 1
        if video.max_frames is not None and kept >= video.max_frames:
            return


def _overlay_writer(path: Path, shape: tuple[int, ...], fps: float | None, every: int) -> Any:
    import cv2

    h, w = shape[:2]
    rate = (fps or 30.0) / every
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), rate, (w, h))
    if not writer.isOpened():
        raise VideoError(f"OpenCV cannot write {path} (mp4v, {w}x{h})")
    return writer


def _progress(reader: VideoReader, video: VideoOptions) -> Any:
    if not video.progress:
        return None
    from tqdm import tqdm

    total = None
    if reader.frame_count is not None and video.start_s == 0:
        total = -(-reader.frame_count // video.every)
        if video.max_frames is not None:
            total = min(total, video.max_frames)
    return tqdm(total=total, unit="frame", desc=f"track {reader.path.name}", dynamic_ncols=True, file=sys.stderr)

"""``jmlr reconstruct``: the service's pipeline on photos on disk, with no server.

Each photo takes the way ``POST /reconstruct`` takes (`service.pipeline.Engine`: decode →
detect → crop → batch infer → uncrop → PnP), with the same settings and the same answer.
What the service would store and link to is written beside the answer instead:

    OUT/<stem>.json              the HTTP response's JSON, each face's ``mesh_urls``
                                 replaced by ``mesh_files`` (names relative to OUT;
                                 with no mesh format asked for, no mesh_id either)
    OUT/<stem>_face<k>.<format>  face k's mesh (glb, obj, ply, usdz; world or camera frame)
    OUT/<stem>_overlay.jpg       the photo with each posed mesh, its 68 points and its pose

A photo that cannot be answered (unreadable, unsupported, bad ``--faces`` for it) is
reported on stderr with the code the API would answer, and the others go on: exit status 0
when every photo was answered, 1 when some were not, 2 for bad options or no model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from .mesh_export import MeshSpace
    from .pipeline import Engine, ReconstructRequest
    from .settings import Settings

#: Offline there is no client waiting: a photo may take as long as the machine needs.
_DEADLINE_S = 3600.0


def register(subparsers) -> None:
    # Nothing heavy is imported here: every `jmlr` command builds this parser.
    p = subparsers.add_parser(
        "reconstruct",
        help="reconstruct the faces of photos on disk, as POST /reconstruct would (no server)",
        description="Run the service's pipeline on photos on disk and write, per photo, the API's JSON answer, "
        "each face's mesh and an overlay picture. Every setting of the service also reads from JMLR_* "
        "env vars (service/settings.py); command-line values win.",
    )
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="JPEG, PNG, WebP, HEIC or AVIF files")
    p.add_argument("--out", type=Path, required=True, help="folder to write into (made if missing)")
    add_engine_arguments(p, camera_default="the photo's EXIF focal length, else a 60 degree field of view")
    p.add_argument("--faces", help="JSON list of faces instead of detection, as the API's `faces` field "
                   "(the same for every photo)")
    add_answer_arguments(p, mesh_default=["glb"])
    p.add_argument("--texture", action="store_true", default=None,
                   help="meshes carry the photo as their texture (glb, usdz)")
    p.set_defaults(func=run)


def add_engine_arguments(p: argparse.ArgumentParser, camera_default: str) -> None:
    """The model, detector and camera options of the offline commands (the service's settings)."""
    p.add_argument("--model", dest="model_name", help="model name in the store (default: index.json)")
    p.add_argument("--model-store", help="model store folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--detector", help="'centerface', 'none' (needs --faces) or an SCRFD .onnx path")
    p.add_argument("--camera", help='JSON intrinsics as the API\'s `camera` field, e.g. '
                   '\'{"fx": 1450, "fy": 1450, "cx": 960, "cy": 540, "width": 1920, "height": 1080}\' '
                   f"(default: {camera_default})")


def add_answer_arguments(p: argparse.ArgumentParser, mesh_default: list[str]) -> None:
    """What the offline commands ask of each image and write of its answer."""
    p.add_argument("--include", default="", help="comma list of extra per-face arrays, as the API's `include` "
                   "field (vertices, landmarks_2d, blendshapes, ...)")
    p.add_argument("--max-faces", type=int, help="at most this many faces per image, best first")
    p.add_argument("--flip-tta", action="store_true", default=None,
                   help="average with the mirrored crop (about 2x the network's cost, more accurate)")
    default = " ".join(mesh_default) or "none"
    p.add_argument("--mesh", nargs="*", default=mesh_default, metavar="FORMAT",
                   help=f"mesh files to write per face: any of glb, obj, ply, usdz (default {default}; "
                   "none: --mesh alone)")
    p.add_argument("--space", choices=["world", "camera"], default="world",
                   help="mesh vertices in the head frame (world, as GET /mesh) or posed in the OpenCV camera frame")
    p.add_argument("--no-overlay", dest="overlay", action="store_false", help="no overlay picture")


@dataclass(frozen=True)
class PhotoOptions:
    """What every photo's request carries (the API's form fields) and what is written."""

    camera: Any = None  # Intrinsics
    faces: list | None = None  # list[FaceIn]
    include: frozenset[str] = frozenset()
    max_faces: int | None = None
    flip_tta: bool | None = None
    texture: bool | None = None
    mesh_formats: tuple[str, ...] = ("glb",)
    space: MeshSpace = "world"
    overlay: bool = True

    def request(self, data: bytes) -> ReconstructRequest:
        from .pipeline import ReconstructRequest

        return ReconstructRequest(data=data, camera=self.camera, faces=self.faces, max_faces=self.max_faces,
                                  flip_tta=self.flip_tta, texture=self.texture, include=set(self.include))


class MeshesInMemory:
    """Where the engine stores the posed meshes of one photo (`service.storage`'s
    ``put_mesh``): kept by mesh id, for the command to write as files."""

    def __init__(self) -> None:
        self.meshes: dict[str, dict[str, np.ndarray]] = {}

    def put_mesh(self, mesh_id: str, meta: dict, arrays: dict[str, np.ndarray], ttl_s: float) -> int:
        self.meshes[mesh_id] = arrays
        return 0


class PhotoError(Exception):
    """A photo the API would refuse: ``code`` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def request_options(args: argparse.Namespace) -> PhotoOptions:
    """The photos' request fields, checked as the API checks them (`ApiError` when bad)."""
    from .mesh_export import MESH_FORMATS
    from .routers.reconstruct import parse_form_json, parse_include
    from .schemas import CameraIn, FacesIn

    cam = parse_form_json(args.camera, CameraIn, "invalid_camera", "camera")
    faces = parse_form_json(getattr(args, "faces", None), FacesIn, "invalid_faces", "faces", wrap="faces")
    if args.max_faces is not None and not 1 <= args.max_faces <= 64:
        raise PhotoError("validation_error", f"--max-faces must lie in 1..64, not {args.max_faces}")
    unknown = sorted(set(args.mesh) - set(MESH_FORMATS))
    if unknown:
        raise PhotoError("validation_error", f"unknown mesh format(s) {unknown}; choose from {sorted(MESH_FORMATS)}")
    return PhotoOptions(
        camera=cam.to_intrinsics() if cam is not None else None,
        faces=faces.faces if faces is not None else None,
        include=frozenset(parse_include(args.include)),
        max_faces=args.max_faces, flip_tta=args.flip_tta, texture=getattr(args, "texture", None),
        mesh_formats=tuple(dict.fromkeys(args.mesh)), space=args.space,  # argparse's choices: a MeshSpace
        overlay=args.overlay,
    )


def load_engine(args: argparse.Namespace, command: str, **settings: Any) -> Engine | None:
    """The service's engine with the command's model options over the ``JMLR_*`` settings
    (and ``settings``), loaded; None, said on stderr, when the model does not load."""
    import logging

    from .metrics import Metrics
    from .pipeline import Engine
    from .settings import Settings

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    overrides = {k: getattr(args, k) for k in ("model_name", "model_store", "device", "detector")
                 if getattr(args, k, None) is not None}
    engine = Engine(Settings(**overrides, **settings, warmup=False), Metrics())
    engine.load()
    if not engine.loaded:
        print(f"{command}: error: the model did not load: {engine.error}", file=sys.stderr)
        return None
    return engine


def run(args: argparse.Namespace) -> int:
    from .errors import ApiError

    try:
        options = request_options(args)
    except (ApiError, PhotoError) as exc:
        print(f"jmlr reconstruct: error: {exc}", file=sys.stderr)
        return 2
    stems = Counter(p.stem for p in args.photos)
    twice = sorted(s for s, n in stems.items() if n > 1)
    if twice:
        print(f"jmlr reconstruct: error: photos with the same name would write the same files: {twice}",
              file=sys.stderr)
        return 2
    engine = load_engine(args, "jmlr reconstruct")
    if engine is None:
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        failed = asyncio.run(_reconstruct_all(engine, args.photos, args.out, options))
    finally:
        engine.close()
    return 1 if failed else 0


async def _reconstruct_all(engine: Engine, photos: list[Path], out: Path, options: PhotoOptions) -> int:
    """Answer each photo in turn; returns how many could not be answered."""
    failed = 0
    for path in photos:
        try:
            written = await reconstruct_photo(engine, path, out, options)
        except PhotoError as exc:
            failed += 1
            print(f"{path}: not answered ({exc.code}): {exc}", file=sys.stderr)
            continue
        print(written)
    return failed


async def reconstruct_photo(engine: Engine, path: Path, out: Path, options: PhotoOptions) -> str:
    """Reconstruct one photo and write its files into ``out``; returns a one-line summary.

    Raises:
        PhotoError: what the API would answer with an error (its code and message).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PhotoError("unreadable_file", exc.strerror or str(exc)) from None
    meshes = MeshesInMemory()
    with refused_as_photo_error(engine.settings):
        response = await engine.reconstruct(options.request(data), meshes, time.monotonic() + _DEADLINE_S)
    # The route's own serialisation: optional arrays appear only when asked for.
    answer = response.model_dump(mode="json", exclude_unset=True)
    written = write_meshes(answer, meshes, out, path.stem, options)
    answer_path = out / f"{path.stem}.json"
    answer_path.write_text(json.dumps(answer, indent=1) + "\n")
    extra = [f"{written} mesh file{'s' if written != 1 else ''}"] if written else []
    if options.overlay:
        name = f"{path.stem}_overlay.jpg"
        _write_overlay(out / name, data, engine.settings, answer, meshes.meshes, engine.model.topology.triangles)
        extra.append(name)
    return f"{path}: {_faces_summary(answer)} -> {answer_path}" + (f" (+ {', '.join(extra)})" if extra else "")


@contextlib.contextmanager
def refused_as_photo_error(settings: Settings) -> Iterator[None]:
    """What the API would refuse, raised as a `PhotoError` with the API's code and message."""
    from .errors import ApiError, domain_errors

    try:
        yield
    except ApiError as exc:
        raise PhotoError(exc.code, exc.message) from None
    except Exception as exc:
        # The table the HTTP layer answers these with; what is not in it is a bug: raised.
        spec = next((s for t, s in domain_errors().items() if isinstance(exc, t)), None)
        if spec is None:
            raise
        raise PhotoError(spec.code or str(getattr(exc, "code", "error")), spec.message(exc, settings)) from None


def write_meshes(answer: dict, meshes: MeshesInMemory, out: Path, prefix: str, options: PhotoOptions) -> int:
    """Write each answered face's mesh as ``OUT/<prefix>_face<k>.<format>`` and put the
    names in its ``mesh_files`` (its ``mesh_urls`` dropped: no server to download from);
    returns how many files were written."""
    from .mesh_export import export_mesh

    written = 0
    for k, face in enumerate(answer["faces"]):
        face.pop("mesh_urls", None)
        arrays = meshes.meshes.get(face.get("mesh_id") or "")
        if arrays is None:
            continue
        if not options.mesh_formats:  # none asked for: none kept
            del face["mesh_id"], face["mesh_status"]
            continue
        face["mesh_files"] = {}
        for fmt in options.mesh_formats:
            name = f"{prefix}_face{k}.{fmt}"
            (out / name).write_bytes(export_mesh(arrays, fmt, options.space))
            face["mesh_files"][fmt] = name
            written += 1
    return written


def _faces_summary(answer: dict) -> str:
    faces = answer["faces"]
    if not faces:
        return "no face found"
    parts = []
    for k, f in enumerate(faces):
        if not f["pose_ok"]:
            parts.append(f"face {k}: pose failed")
            continue
        p = f["pose"]
        parts.append(f"face {k}: {f['distance_m']:.2f} m, yaw {p['yaw']:.0f}, pitch {p['pitch']:.0f}, "
                     f"roll {p['roll']:.0f} deg")
    return f"{len(faces)} face{'s' if len(faces) > 1 else ''} ({'; '.join(parts)})"


#: Faces narrower than this (px) get no wireframe: at 1,220 vertices it would be a blot.
_WIREFRAME_MIN_WIDTH_PX = 160


def _write_overlay(path: Path, data: bytes, settings: Settings, answer: dict,
                   meshes: dict[str, dict[str, np.ndarray]], triangles: np.ndarray) -> None:
    """The photo (EXIF orientation applied, as the answer's pixels are) drawn on by
    `draw_answer`, as JPEG."""
    import cv2

    from .imaging import decode_image

    rgb = draw_answer(decode_image(data, settings.max_image_pixels).rgb, answer, meshes, triangles)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise OSError(f"could not write {path}")


def draw_answer(rgb: np.ndarray, answer: dict, meshes: dict[str, dict[str, np.ndarray]],
                triangles: np.ndarray) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8, the answered image, with each face's posed mesh (faces wide
    enough), its 68 points joined, its head axes and a label (its distance; in a session,
    its track id first)."""
    import numpy as np

    from jmlr.geometry.camera import project_camera_points
    from jmlr.viz import draw_axes, draw_label, draw_landmarks_68, draw_wireframe

    from .mesh_export import mesh_vertices

    K = np.asarray(answer["camera"]["K"], np.float64)
    for k, face in enumerate(answer["faces"]):
        x0, y0, x1, _ = face["bbox"]
        arrays = meshes.get(face.get("mesh_id") or "")
        if arrays is not None and x1 - x0 >= _WIREFRAME_MIN_WIDTH_PX:
            rgb = draw_wireframe(rgb, project_camera_points(mesh_vertices(arrays, "camera"), K), triangles)
        if face.get("landmarks_68"):
            rgb = draw_landmarks_68(rgb, np.asarray(face["landmarks_68"]), thickness=max(1, round((x1 - x0) / 150)))
        if face["pose_ok"]:
            pose = face["pose"]
            # Axes a third of the face's width long, at any distance.
            length = 0.05 * min(1.0, max(0.3, (x1 - x0) / 150))
            rgb = draw_axes(rgb, np.asarray(pose["rotation"]), np.asarray(pose["translation"]), K, length,
                            thickness=max(1, round((x1 - x0) / 80)))
            label = f"{face['distance_m']:.2f} m"  # the angles are in the JSON and on stdout
        else:
            label = "pose failed"
        name = f"#{face['track_id']}" if face.get("track_id") is not None else str(k)
        rgb = draw_label(rgb, f"{name}: {label}", (x0, y0 - 2),
                         scale=max(0.4, min(1.0, max(rgb.shape[:2]) / 1400)))
    return rgb

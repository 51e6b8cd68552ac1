"""The reconstruction pipeline, one way through:
decode → camera → detect → crop → batch infer → uncrop → PnP → store → response.

CPU-heavy steps run in the thread pool (``asyncio.to_thread``) so the event loop keeps
accepting requests; inference goes through the dynamic batcher's own worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from jmlr.geometry.camera import (
    intrinsics_from_focal_35mm,
    intrinsics_from_fov,
    make_intrinsics,
    rescale_intrinsics,
)
from jmlr.geometry.crop import apply_affine, crop_transform, invert_affine, warp_crop
from jmlr.geometry.pnp import solve_pnp
from jmlr.geometry.rotation import head_pose_euler, matrix_to_quaternion, matrix_to_rotvec, pose_matrix

from .batcher import BatcherStoppedError, DeadlineExceededError, DynamicBatcher, InferenceError, QueueFullError
from .blendshapes import BlendshapeEstimator
from .detect import Detection, Detector, create_detector, landmarks_in_box
from .errors import ApiError
from .face_checks import check_client_faces
from .imaging import ImageHeader, decode_image, probe_image
from .metrics import Metrics
from .pixel_budget import PixelBudget, PixelBudgetTimeout
from .schemas import (
    CameraIn,
    CameraOut,
    FaceIn,
    FaceOut,
    ImageOut,
    ModelOut,
    Pose,
    ReconstructResponse,
)
from .schemas_devices import Distortion, MeshUrls
from .settings import Settings

log = logging.getLogger("service.pipeline")


@dataclass
class ReconstructRequest:
    data: bytes
    camera: CameraIn | None = None
    device_id: str | None = None
    faces: list[FaceIn] | None = None
    max_faces: int | None = None
    flip_tta: bool = False
    include: set[str] = field(default_factory=set)
    base_url: str = ""


@dataclass
class CameraChoice:
    K: np.ndarray
    dist: np.ndarray | None
    distortion: Distortion | None
    source: str
    warnings: list[str]


def _dist_vector(d: Distortion | dict | None) -> tuple[np.ndarray | None, Distortion | None]:
    if d is None:
        return None, None
    d = d if isinstance(d, Distortion) else Distortion(**d)
    vec = np.array([d.k1, d.k2, d.p1, d.p2, d.k3], dtype=np.float64)
    return (vec if np.any(vec != 0) else None), d


def resolve_camera(
    width: int,
    height: int,
    camera: CameraIn | None,
    device: dict | None,
    focal_35mm: float | None,
    default_fov_deg: float,
) -> CameraChoice:
    """Intrinsics for the uploaded image: request > registered device > EXIF > default FOV."""
    warnings: list[str] = []

    def rescaled(fx, fy, cx, cy, cw, ch) -> np.ndarray:
        K = make_intrinsics(fx, fy, cx, cy)
        if cw is None or (cw, ch) == (width, height):
            return K
        if abs(cw / ch - width / height) > 0.01 * (width / height):
            warnings.append(
                f"camera calibrated at {cw}x{ch} but the image is {width}x{height} (different aspect "
                "ratio: cropped or rotated?); intrinsics were rescaled per axis anyway"
            )
        return rescale_intrinsics(K, (cw, ch), (width, height))

    if camera is not None:
        K = rescaled(camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height)
        dist, d = _dist_vector(camera.distortion)
        return CameraChoice(K, dist, d, "request", warnings)
    if device is not None:
        K = rescaled(device["fx"], device["fy"], device["cx"], device["cy"], device.get("width"), device.get("height"))
        dist, d = _dist_vector(device.get("distortion"))
        return CameraChoice(K, dist, d, "device", warnings)
    if focal_35mm is not None:
        return CameraChoice(intrinsics_from_focal_35mm(focal_35mm, width, height), None, None, "exif", warnings)
    warnings.append(
        f"no intrinsics given (camera, device_id or EXIF FocalLengthIn35mmFilm): assumed a "
        f"{default_fov_deg:g} degree horizontal field of view, so distance and scale are approximate"
    )
    return CameraChoice(intrinsics_from_fov(default_fov_deg, width, height, "horizontal"), None, None, "default_fov", warnings)


@dataclass
class _Face:
    bbox: np.ndarray
    score: float | None
    landmarks5: np.ndarray
    source: str


def _bbox_of(points: np.ndarray) -> np.ndarray:
    lo, hi = points.min(axis=0), points.max(axis=0)
    # The 5 points span eyes to mouth; a face box is about twice that, centred a bit higher.
    c, s = (lo + hi) / 2, max(hi - lo) * 1.0 + 1.0
    return np.array([c[0] - s, c[1] - 1.1 * s, c[0] + s, c[1] + 0.9 * s])


def _r(a: np.ndarray, nd: int = 6) -> list:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


_ABS_PATH = re.compile(r"(?:/[^/\s'\"]+)+/([^/\s'\"]+)")


def _without_paths(message: str) -> str:
    """Absolute paths reduced to their last part: errors shown to clients must not map
    the server's file system."""
    return _ABS_PATH.sub(r"\1", message)


@dataclass
class _ImageWork:
    """What the pixel-budgeted part of a request produced; the decoded image is gone."""

    width: int
    height: int
    format: str
    focal_35mm: float | None
    faces: list[_Face]
    Ms: list[np.ndarray]
    crops: np.ndarray | None
    timings: dict[str, float]


class Engine:
    """Owns the model, the detector and the batcher; stateless per request."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model: Any = None
        self.detector: Detector | None = None
        self.batcher: DynamicBatcher | None = None
        self.blendshapes: BlendshapeEstimator | None = None
        self.device: str = "cpu"
        self.loaded = False
        self.error: str | None = None
        self.pixel_budget = PixelBudget(settings.decode_pixel_budget, metrics.decode_pixels.set)

    @property
    def ready(self) -> bool:
        """Model loaded and the inference worker alive."""
        return self.loaded and self.batcher is not None and self.batcher.alive

    def not_ready_error(self) -> ApiError:
        if self.loaded:
            return ApiError(503, "inference_worker_down", "the inference worker stopped (see the server log)",
                            {"Retry-After": "5"})
        if self.error:
            return ApiError(503, "model_not_ready", f"model failed to load: {_without_paths(self.error)} "
                            "(see the server log)", {"Retry-After": "5"})
        return ApiError(503, "model_not_ready", "model is loading", {"Retry-After": "5"})

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Load model + detector and warm them up; never raises (the error is kept and logged)."""
        try:
            self._load()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.loaded = False
            self.metrics.model_ready.set(0)
            log.error("model failed to load, the service is NOT ready: %s", self.error)

    def _load(self) -> None:
        import torch

        from jmlr.store import default_model_name, load_model

        s = self.settings
        self.device = "cuda" if s.device == "cuda" or (s.device == "auto" and torch.cuda.is_available()) else "cpu"
        name = s.model_name or default_model_name(self.device, s.model_store)
        path = Path(name) if Path(name).is_absolute() else Path(s.model_store) / name
        t0 = time.perf_counter()
        model = load_model(path, device=self.device)
        detector = create_detector(s.detector, s.detector_threshold, s.detector_max_side)
        if s.warmup:
            S = int(model.input_size)
            model.predict(np.zeros((1, S, S, 3), np.uint8), flip_tta=False)
            detector.detect(np.zeros((64, 64, 3), np.uint8))
        self.model, self.detector = model, detector
        self.blendshapes = BlendshapeEstimator(model.topology)
        self.batcher = DynamicBatcher(
            model.predict, s.max_batch_size, s.max_queue_delay_ms / 1000.0, s.max_queue_size, self.metrics
        )
        self.batcher.start()
        topo = model.topology
        self.metrics.set_model(str(model.name), str(model.version), self.device, int(topo.num_vertices))
        self.metrics.model_ready.set(1)
        self.loaded, self.error = True, None
        log.info(
            "model %s v%s loaded on %s in %.1f s (%d vertices, input %d, detector %s)",
            model.name, model.version, self.device, time.perf_counter() - t0, topo.num_vertices,
            model.input_size, detector.name,
        )

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self.loaded = False

    def model_info(self) -> ModelOut:
        m, topo = self.model, self.model.topology
        return ModelOut(
            name=str(m.name), version=str(m.version), num_vertices=int(topo.num_vertices),
            num_triangles=int(len(topo.triangles)), input_size=int(m.input_size), device=self.device,
        )

    # ------------------------------------------------------------------ request
    def _check_deadline(self, deadline: float, stage: str) -> None:
        # Work whose answer would come too late is not started: it would only be a 504.
        if time.monotonic() >= deadline:
            self.metrics.dropped.labels(reason="deadline").inc()
            raise ApiError(504, "deadline_exceeded",
                           f"the request deadline ({self.settings.request_timeout_s:g} s) passed before {stage}")

    async def reconstruct(
        self, req: ReconstructRequest, storage: Any, deadline: float | None = None
    ) -> ReconstructResponse:
        """Run one request. ``deadline`` (``time.monotonic()`` seconds) bounds every stage;
        by default it is ``request_timeout_s`` from now. The request gate passes the one
        that started when the request arrived."""
        if not self.ready:
            raise self.not_ready_error()
        s = self.settings
        if deadline is None:
            deadline = time.monotonic() + s.request_timeout_s
        timings: dict[str, float] = {}
        t_start = time.perf_counter()

        async def stage(name: str, fn, *args):
            self._check_deadline(deadline, name)
            t = time.perf_counter()
            out = await asyncio.to_thread(fn, *args)
            dt = time.perf_counter() - t
            timings[name] = round(dt * 1000, 3)
            self.metrics.observe_stage(name, dt)
            return out

        device = None
        if req.device_id is not None and req.camera is None:
            if storage is None:
                raise ApiError(503, "storage_unavailable", "device records are unavailable (see the server log)",
                               {"Retry-After": "2"})
            device = await asyncio.to_thread(storage.get_device, req.device_id)
            if device is None:
                raise ApiError(404, "device_not_found", f"no registered device {req.device_id!r}")

        header: ImageHeader = await asyncio.to_thread(probe_image, req.data, s.max_image_pixels)
        max_faces = min(req.max_faces or s.max_faces, s.max_faces)
        work = await self._image_stage(req, header, max_faces, deadline)
        for name, dt in work.timings.items():
            timings[name] = round(dt * 1000, 3)
            self.metrics.observe_stage(name, dt)
        W, H = work.width, work.height
        cam = resolve_camera(W, H, req.camera, device, work.focal_35mm, s.default_fov_deg)
        warnings = list(cam.warnings)

        topo = self.model.topology
        out_faces: list[FaceOut] = []
        if work.faces:
            self._check_deadline(deadline, "inference")
            t = time.perf_counter()
            try:
                verts, points = await self.batcher.submit(work.crops, req.flip_tta, deadline)
            except QueueFullError as exc:
                raise ApiError(503, "queue_full", f"server busy: {exc}; retry shortly", {"Retry-After": "1"}) from None
            except DeadlineExceededError:
                self.metrics.dropped.labels(reason="deadline").inc()
                raise ApiError(504, "deadline_exceeded",
                               f"the request did not finish within {s.request_timeout_s:g} s (server busy)") from None
            except BatcherStoppedError:
                raise ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": "5"}) from None
            except InferenceError:
                raise ApiError(500, "inference_failed", "the model failed on this batch (logged)") from None
            dt = time.perf_counter() - t
            timings["infer"] = round(dt * 1000, 3)
            self.metrics.observe_stage("infer", dt)
            points_img = np.stack([apply_affine(invert_affine(M), p) for M, p in zip(work.Ms, points)])
            solved = await stage("pnp", self._solve, work.faces, verts, points_img, cam, req.include, topo)
            keep = [k for k, f in enumerate(solved) if f is not None]
            for k in sorted(set(range(len(solved))) - set(keep)):
                warnings.append(f"face {k} was dropped: its pose could not be computed (non-finite result)")
            out_faces = [solved[k] for k in keep]
            if out_faces and "blendshapes" in req.include and self.blendshapes is not None:
                warnings += await stage("blendshapes", self.blendshapes.annotate, out_faces, verts[keep])
            if out_faces:
                await stage("store", self._store, storage, out_faces, verts[keep], topo, cam, (W, H), req.base_url,
                            warnings)

        self.metrics.faces_per_request.observe(len(out_faces))
        K = cam.K
        fov_x = math.degrees(2 * math.atan2(W / 2, K[0, 0]))
        fov_y = math.degrees(2 * math.atan2(H / 2, K[1, 1]))
        timings["total"] = round((time.perf_counter() - t_start) * 1000, 3)
        return ReconstructResponse(
            model=self.model_info(),
            camera=CameraOut(
                K=_r(K), fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]),
                source=cam.source, distortion=cam.distortion, fov_x_deg=round(fov_x, 4), fov_y_deg=round(fov_y, 4),
            ),
            image=ImageOut(width=W, height=H, format=work.format),
            faces=out_faces,
            timings_ms=timings,
            warnings=warnings,
        )

    async def _image_stage(self, req: ReconstructRequest, header: ImageHeader, max_faces: int,
                           deadline: float) -> _ImageWork:
        """Decode, locate and crop while holding the image's pixels of the decode budget."""
        try:
            n = await self.pixel_budget.acquire(header.pixels, deadline - time.monotonic())
        except PixelBudgetTimeout as exc:
            self.metrics.dropped.labels(reason="deadline").inc()
            raise ApiError(504, "deadline_exceeded", f"the request deadline passed waiting to decode: {exc}") from None
        try:
            self._check_deadline(deadline, "decoding")
        except ApiError:
            self.pixel_budget.release(n)
            raise
        S = int(self.model.input_size)
        work = asyncio.ensure_future(asyncio.to_thread(self._decode_locate_crop, req.data, req.faces, max_faces, S))

        def release(fut: asyncio.Future) -> None:
            if not fut.cancelled():
                fut.exception()  # retrieved, so a dropped request's error is not reported as lost
            self.pixel_budget.release(n)

        try:
            return await asyncio.shield(work)
        finally:
            if work.done():
                self.pixel_budget.release(n)
            else:
                # Cancelled (client gone, deadline): the thread cannot be stopped and holds
                # the image until it returns, so its pixels stay reserved until then.
                work.add_done_callback(release)

    def _decode_locate_crop(self, data: bytes, client: list[FaceIn] | None, max_faces: int, S: int) -> _ImageWork:
        t0 = time.perf_counter()
        img = decode_image(data, self.settings.max_image_pixels)
        t1 = time.perf_counter()
        if client is not None:
            check_client_faces(client[:max_faces], img.width, img.height)
        faces = self._locate(img.rgb, client, max_faces)
        t2 = time.perf_counter()
        timings = {"decode": t1 - t0, "detect": t2 - t1}
        Ms: list[np.ndarray] = []
        crops = None
        if faces:
            try:
                Ms, crops = self._crop(img.rgb, faces, S)
            except (np.linalg.LinAlgError, cv2.error, ValueError) as exc:
                raise ApiError(422, "invalid_faces", f"the faces do not define a usable crop: {exc}") from None
            timings["crop"] = time.perf_counter() - t2
        # Only the crops leave: the full image is freed when this thread returns.
        return _ImageWork(img.width, img.height, img.format, img.focal_35mm, faces, Ms, crops, timings)

    # ------------------------------------------------------------------ stages (worker threads)
    def _locate(self, rgb: np.ndarray, client: list[FaceIn] | None, max_faces: int) -> list[_Face]:
        faces: list[_Face] = []
        if client is not None:
            for f in client[:max_faces]:
                if f.landmarks5 is not None:
                    lm = np.asarray(f.landmarks5, dtype=np.float64)
                    bbox = np.asarray(f.bbox, dtype=np.float64) if f.bbox is not None else _bbox_of(lm)
                    faces.append(_Face(bbox, None, lm, "client_landmarks"))
                else:
                    bbox = np.asarray(f.bbox, dtype=np.float64)
                    lm, score = landmarks_in_box(self.detector, rgb, bbox)
                    faces.append(_Face(bbox, score, lm, "client_bbox"))
            return faces
        dets: list[Detection] = self.detector.detect(rgb)
        dets.sort(key=lambda d: -d.score)
        return [_Face(d.bbox, d.score, d.landmarks5, "detector") for d in dets[:max_faces]]

    @staticmethod
    def _crop(rgb: np.ndarray, faces: list[_Face], S: int) -> tuple[list[np.ndarray], np.ndarray]:
        Ms = [crop_transform(f.landmarks5, S) for f in faces]
        crops = np.stack([warp_crop(rgb, M, S) for M in Ms])
        return Ms, crops

    @staticmethod
    def _solve(faces, verts, points_img, cam: CameraChoice, include: set[str], topo) -> list[FaceOut | None]:
        """One FaceOut per face, None where the result is not finite."""
        lm68 = getattr(topo, "landmarks68", None)
        out = []
        dist = cam.dist if cam.dist is not None else np.zeros(5)
        for f, V, p in zip(faces, verts, points_img):
            V = np.asarray(V, dtype=np.float64)
            if not (np.isfinite(V).all() and np.isfinite(p).all()):
                out.append(None)
                continue
            res = solve_pnp(V, p, cam.K, cam.dist)
            R, t = res.R_cv, np.asarray(res.t_cv, dtype=np.float64).reshape(3)
            if not (np.isfinite(R).all() and np.isfinite(t).all()):
                out.append(None)  # JSON has no inf/NaN: such a face would answer nulls
                continue
            proj, _ = cv2.projectPoints(V, cv2.Rodrigues(R)[0], t, cam.K, dist)
            proj = proj.reshape(-1, 2)
            if not np.isfinite(proj).all():
                out.append(None)
                continue
            yaw, pitch, roll = head_pose_euler(res.R_t)
            pose = Pose(
                rotation=_r(R, 8), translation=_r(t, 6), rotation_vector=_r(matrix_to_rotvec(R), 8),
                quaternion_wxyz=_r(matrix_to_quaternion(R), 8), matrix=_r(pose_matrix(R, t), 8),
                yaw=round(float(yaw), 4), pitch=round(float(pitch), 4), roll=round(float(roll), 4),
            )
            rms = float(res.rms_px)
            face = FaceOut(
                bbox=_r(f.bbox, 2), score=None if f.score is None else round(float(f.score), 5), source=f.source,
                landmarks5=_r(f.landmarks5, 2), pose=pose, pose_ok=bool(res.success),
                reprojection_rms_px=round(rms, 4) if math.isfinite(rms) else None,
                distance_m=round(float(np.linalg.norm(t)), 6),
            )
            if lm68 is not None and len(lm68) == 68:
                face.landmarks_68 = _r(proj[np.asarray(lm68)], 2)
            if "landmarks_2d" in include:
                face.landmarks_2d = _r(proj, 2)
            if "vertices" in include:
                face.vertices = _r(V, 6)
            if "vertices_camera" in include:
                face.vertices_camera = _r(V @ R.T + t, 6)
            out.append(face)
        return out

    def _store(self, storage, faces: list[FaceOut], verts, topo, cam: CameraChoice, image_size: tuple[int, int],
               base_url: str, warnings: list[str]) -> None:
        """Store each posed face's mesh and say per face whether it was (``mesh_status``);
        a face whose mesh could not be stored also gets a warning, never silence."""
        from .storage import StorageError, new_mesh_id

        m = self.model
        tri = np.asarray(topo.triangles, dtype=np.int32)
        created = datetime.now(timezone.utc).isoformat()
        camera = {"fx": float(cam.K[0, 0]), "fy": float(cam.K[1, 1]), "cx": float(cam.K[0, 2]),
                  "cy": float(cam.K[1, 2]), "source": cam.source,
                  "distortion": cam.distortion.model_dump() if cam.distortion else None}
        base = (self.settings.public_base_url or base_url).rstrip("/")
        failures: dict[str, list[int]] = {}
        reasons: dict[str, str] = {}
        for k, (face, V) in enumerate(zip(faces, verts)):
            if not face.pose_ok:
                face.mesh_status = "pose_failed"  # a mesh with a meaningless pose would mislead
                continue
            if storage is None:
                face.mesh_status = "storage_unavailable"
                failures.setdefault("storage_unavailable", []).append(k)
                reasons["storage_unavailable"] = "storage is not configured or failed to open"
                continue
            mesh_id = new_mesh_id()
            meta = {"model": {"name": str(m.name), "version": str(m.version)}, "created": created,
                    "image_size": list(image_size), "camera": camera}
            arrays = {
                "vertices_world": np.asarray(V, dtype=np.float32),
                "faces": tri,
                "R_cv": np.asarray(face.pose.rotation, dtype=np.float64),
                "t_cv": np.asarray(face.pose.translation, dtype=np.float64),
            }
            try:
                storage.put_mesh(mesh_id, meta, arrays, self.settings.mesh_ttl_s)
            except StorageError as exc:
                # The reconstruction itself succeeded: answer it, and say the link is missing.
                face.mesh_status = exc.code
                failures.setdefault(exc.code, []).append(k)
                reasons[exc.code] = str(exc)
                continue
            face.mesh_status = "stored"
            root = f"{base}/mesh/{mesh_id}"
            face.mesh_id = mesh_id
            face.mesh_urls = MeshUrls(glb=f"{root}.glb", obj=f"{root}.obj", ply=f"{root}.ply", self_=root)
        for code, ks in failures.items():
            self.metrics.meshes_not_stored.labels(reason=code).inc(len(ks))
            warnings.append(f"the mesh of face(s) {ks} was NOT stored ({code}: {_without_paths(reasons[code])}); "
                            "pose and vertices in this response are valid, but there is no download link")

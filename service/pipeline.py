"""The reconstruction pipeline, one way through:
decode → camera → detect → crop → batch infer → uncrop → PnP → store → response.

CPU-heavy steps run in the thread pool (``asyncio.to_thread``) so the event loop keeps
accepting requests; inference goes through the dynamic batcher's own worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
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

from .batcher import BatcherStoppedError, DeadlineExceededError, DynamicBatcher, QueueFullError
from .blendshapes import BlendshapeEstimator
from .detect import Detection, Detector, create_detector, landmarks_in_box
from .errors import ApiError
from .imaging import DecodedImage, decode_image
from .metrics import Metrics
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
        self.ready = False
        self.error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Load model + detector and warm them up; never raises (the error is kept and logged)."""
        try:
            self._load()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready = False
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
        self.ready, self.error = True, None
        log.info(
            "model %s v%s loaded on %s in %.1f s (%d vertices, input %d, detector %s)",
            model.name, model.version, self.device, time.perf_counter() - t0, topo.num_vertices,
            model.input_size, detector.name,
        )

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self.ready = False

    def model_info(self) -> ModelOut:
        m, topo = self.model, self.model.topology
        return ModelOut(
            name=str(m.name), version=str(m.version), num_vertices=int(topo.num_vertices),
            num_triangles=int(len(topo.triangles)), input_size=int(m.input_size), device=self.device,
        )

    # ------------------------------------------------------------------ request
    async def reconstruct(self, req: ReconstructRequest, storage: Any) -> ReconstructResponse:
        if not self.ready or self.batcher is None:
            raise ApiError(503, "model_not_ready", self.error and f"model not loaded: {self.error}" or "model is loading",
                           {"Retry-After": "5"})
        s = self.settings
        deadline = time.monotonic() + s.request_timeout_s
        timings: dict[str, float] = {}
        t_start = time.perf_counter()

        async def stage(name: str, fn, *args):
            t = time.perf_counter()
            out = await asyncio.to_thread(fn, *args)
            dt = time.perf_counter() - t
            timings[name] = round(dt * 1000, 3)
            self.metrics.observe_stage(name, dt)
            return out

        img: DecodedImage = await stage("decode", decode_image, req.data, s.max_image_pixels)
        H, W = img.height, img.width

        device = None
        if req.device_id is not None and req.camera is None:
            device = await asyncio.to_thread(storage.get_device, req.device_id) if storage is not None else None
            if device is None:
                raise ApiError(404, "device_not_found", f"no registered device {req.device_id!r}")
        cam = resolve_camera(W, H, req.camera, device, img.focal_35mm, s.default_fov_deg)

        max_faces = min(req.max_faces or s.max_faces, s.max_faces)
        faces: list[_Face] = await stage("detect", self._locate, img.rgb, req.faces, max_faces)

        topo = self.model.topology
        out_faces: list[FaceOut] = []
        if faces:
            S = int(self.model.input_size)
            Ms, crops = await stage("crop", self._crop, img.rgb, faces, S)
            t = time.perf_counter()
            try:
                verts, points = await self.batcher.submit(crops, req.flip_tta, deadline)
            except QueueFullError as exc:
                raise ApiError(503, "queue_full", f"server busy: {exc}; retry shortly", {"Retry-After": "1"}) from None
            except DeadlineExceededError:
                raise ApiError(504, "deadline_exceeded",
                               f"the request did not finish within {s.request_timeout_s:g} s (server busy)") from None
            except BatcherStoppedError:
                raise ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": "5"}) from None
            dt = time.perf_counter() - t
            timings["infer"] = round(dt * 1000, 3)
            self.metrics.observe_stage("infer", dt)
            points_img = np.stack([apply_affine(invert_affine(M), p) for M, p in zip(Ms, points)])
            out_faces = await stage("pnp", self._solve, faces, verts, points_img, cam, req.include, topo)
            if out_faces and "blendshapes" in req.include and self.blendshapes is not None:
                cam.warnings += await stage("blendshapes", self.blendshapes.annotate, out_faces, verts)
            if storage is not None:
                await stage("store", self._store, storage, out_faces, verts, topo, cam, img, req.base_url)

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
            image=ImageOut(width=W, height=H, format=img.format),
            faces=out_faces,
            timings_ms=timings,
            warnings=cam.warnings,
        )

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
    def _solve(faces, verts, points_img, cam: CameraChoice, include: set[str], topo) -> list[FaceOut]:
        lm68 = getattr(topo, "landmarks68", None)
        out = []
        dist = cam.dist if cam.dist is not None else np.zeros(5)
        for f, V, p in zip(faces, verts, points_img):
            V = np.asarray(V, dtype=np.float64)
            res = solve_pnp(V, p, cam.K, cam.dist)
            R, t = res.R_cv, np.asarray(res.t_cv, dtype=np.float64).reshape(3)
            proj, _ = cv2.projectPoints(V, cv2.Rodrigues(R)[0], t, cam.K, dist)
            proj = proj.reshape(-1, 2)
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

    def _store(self, storage, faces: list[FaceOut], verts, topo, cam: CameraChoice, img: DecodedImage, base_url: str) -> None:
        from .storage import new_mesh_id

        m = self.model
        tri = np.asarray(topo.triangles, dtype=np.int32)
        created = datetime.now(timezone.utc).isoformat()
        camera = {"fx": float(cam.K[0, 0]), "fy": float(cam.K[1, 1]), "cx": float(cam.K[0, 2]),
                  "cy": float(cam.K[1, 2]), "source": cam.source,
                  "distortion": cam.distortion.model_dump() if cam.distortion else None}
        base = (self.settings.public_base_url or base_url).rstrip("/")
        for face, V in zip(faces, verts):
            if not face.pose_ok:
                continue  # a mesh with a meaningless pose would mislead more than help
            mesh_id = new_mesh_id()
            meta = {"model": {"name": str(m.name), "version": str(m.version)}, "created": created,
                    "image_size": [img.width, img.height], "camera": camera}
            arrays = {
                "vertices_world": np.asarray(V, dtype=np.float32),
                "faces": tri,
                "R_cv": np.asarray(face.pose.rotation, dtype=np.float64),
                "t_cv": np.asarray(face.pose.translation, dtype=np.float64),
            }
            try:
                storage.put_mesh(mesh_id, meta, arrays, self.settings.mesh_ttl_s)
            except Exception:
                # The reconstruction itself succeeded; losing the download link is not worth a 500.
                log.exception("storing mesh %s failed", mesh_id)
                self.metrics.record_error("storage_error")
                continue
            root = f"{base}/mesh/{mesh_id}"
            face.mesh_id = mesh_id
            face.mesh_urls = MeshUrls(glb=f"{root}.glb", obj=f"{root}.obj", ply=f"{root}.ply", self_=root)

"""The reconstruction pipeline, one way through:
decode → camera → detect → crop → batch infer → uncrop → PnP → store → response.

CPU-heavy steps run in the thread pool (``asyncio.to_thread``) so the event loop keeps
accepting requests; inference goes through the dynamic batcher's own worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jmlr.detect import Detector, create_detector
from jmlr.geometry.intrinsics import Intrinsics
from jmlr.inference import (
    Face,
    FaceCrops,
    FaceReconstruction,
    crop_faces,
    infer_crops,
    load_backend,
    locate_faces,
    max_reduction,
    reconstruct_faces,
    resolve_backend,
    uncrop_points,
)
from jmlr.inference.crops import REDUCTIONS
from jmlr.onnxrt import OrtOptions

from .batcher import DynamicBatcher
from .blendshapes import BlendshapeEstimator
from .camera import CameraChoice, resolve_camera
from .errors import ApiError
from .face_checks import check_client_faces
from .imaging import ImageHeader, decode_image, probe_image
from .metrics import Metrics
from .pixel_budget import PixelBudget
from .respond import camera_out, face_out
from .schemas import FaceIn, FaceOut, ImageOut, ModelOut, ReconstructResponse
from .schemas_meshes import MeshUrls
from .settings import Settings
from .texture import TEXTURE_SIZE, FaceTexture, face_textures, texture_uv

if TYPE_CHECKING:
    from .sessions import SessionFrame

log = logging.getLogger("service.pipeline")

#: Detection decodes a JPEG at the detector's own scale only from this size up: below
#: it a whole decode takes a few ms, and a face too small for the reduced frame would
#: pay a second decode.
REDUCED_DETECTION_MIN_PIXELS = 2_000_000


@dataclass
class ReconstructRequest:
    data: bytes
    camera: Intrinsics | None = None
    device_id: str | None = None
    faces: list[FaceIn] | None = None
    max_faces: int | None = None
    flip_tta: bool | None = None  # None: the server's default (settings.flip_tta)
    texture: bool | None = None  # None: the server's default (settings.mesh_texture)
    include: set[str] = field(default_factory=set)
    base_url: str = ""


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
    faces: list[Face]
    crops: FaceCrops | None
    timings: dict[str, float]
    tracked: bool = False  # the faces came from a session's tracks
    detected: bool = False  # the detector ran
    textures: list[FaceTexture] | None = None  # per face, when the mesh is stored textured


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
        self.backend: str = ""
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

        from jmlr.store import default_model_name
        from jmlr.store.manifest import head_thresholds

        s = self.settings
        self.device = "cuda" if s.device == "cuda" or (s.device == "auto" and torch.cuda.is_available()) else "cpu"
        name = s.model_name or default_model_name(self.device, s.model_store)
        path = Path(name) if Path(name).is_absolute() else Path(s.model_store) / name
        t0 = time.perf_counter()
        ort_options = OrtOptions(threads=s.ort_threads, spinning=s.ort_spinning)
        self.backend = resolve_backend(s.backend, self.device)
        model = load_backend(path, self.backend, self.device, cache_dir=s.onnx_cache_dir,
                             calibration=s.onnx_calibration, ort_options=ort_options)
        detector = create_detector(s.detector, s.detector_threshold, s.detector_max_side, s.detect_min_face_px,
                                   ort_options, s.detector_sessions, s.detector_wide_when_idle)
        if s.warmup:
            S = int(model.input_size)
            for batch in sorted({1, s.max_batch_size}):
                model.predict(np.zeros((batch, S, S, 3), np.uint8), flip_tta=False)
            detector.detect(np.zeros((64, 64, 3), np.uint8))
        self.model, self.detector = model, detector
        self.blendshapes = BlendshapeEstimator(model.topology, getattr(model, "expression_names", ()),
                                               head_thresholds(getattr(model, "manifest", {})))
        self.batcher = DynamicBatcher(
            functools.partial(infer_crops, model), s.max_batch_size, s.max_queue_delay_ms / 1000.0, s.max_queue_size,
            self.metrics,
        )
        self.batcher.start()
        topo = model.topology
        self.metrics.set_model(str(model.name), str(model.version), self.device, int(topo.num_vertices))
        self.metrics.model_ready.set(1)
        self.loaded, self.error = True, None
        log.info(
            "model %s v%s loaded on %s (backend %s) in %.1f s (%d vertices, input %d, detector %s)",
            model.name, model.version, self.device, self.backend, time.perf_counter() - t0, topo.num_vertices,
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
            num_triangles=len(topo.triangles), input_size=int(m.input_size), device=self.device,
            blendshapes=self.blendshapes.source if self.blendshapes is not None else "none",
        )

    # ------------------------------------------------------------------ request
    def _check_deadline(self, deadline: float, stage: str) -> None:
        # Work whose answer would come too late is not started: it would only be a 504.
        if time.monotonic() >= deadline:
            self.metrics.dropped.labels(reason="deadline").inc()
            raise ApiError(504, "deadline_exceeded",
                           f"the request deadline ({self.settings.request_timeout_s:g} s) passed before {stage}")

    async def reconstruct(
        self, req: ReconstructRequest, storage: Any, deadline: float | None = None,
        session: SessionFrame | None = None,
    ) -> ReconstructResponse:
        """Run one request. ``deadline`` (``time.monotonic()`` seconds) bounds every stage;
        by default it is ``request_timeout_s`` from now. The request gate passes the one
        that started when the request arrived. With a video ``session`` the faces are
        cropped where its tracks are (the detector runs only when it says so, or when a
        track is lost) and the answers are its smoothed ones."""
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
            record = await asyncio.to_thread(storage.get_device, req.device_id)
            if record is None:
                raise ApiError(404, "device_not_found", f"no registered device {req.device_id!r}")
            device = Intrinsics.from_dict(record)

        header: ImageHeader = await asyncio.to_thread(probe_image, req.data, s.max_image_pixels)
        max_faces = min(req.max_faces or s.max_faces, s.max_faces)
        track = session if req.faces is None else None
        texture = s.mesh_texture if req.texture is None else req.texture
        work = await self._image_stage(req, header, max_faces, deadline, track, texture)
        for name, dt in work.timings.items():
            timings[name] = round(dt * 1000, 3)
            self.metrics.observe_stage(name, dt)
        self.metrics.decode_latency.labels(format=work.format).observe(work.timings["decode"])
        W, H = work.width, work.height
        cam = resolve_camera(W, H, req.camera, device, work.focal_35mm, s.default_fov_deg)
        warnings = list(cam.warnings)

        topo = self.model.topology
        out_faces: list[FaceOut] = []
        flip_tta = s.flip_tta if req.flip_tta is None else req.flip_tta
        recs = await self._predict(work, flip_tta, cam, deadline, timings, stage)
        if session is not None:
            if work.tracked and session.lost(recs):
                # A tracked crop lost its face: detect on this frame after all.
                work = await self._image_stage(req, header, max_faces, deadline, None, texture)
                timings["redetect"] = round(1000 * sum(work.timings.values()), 3)
                recs = await self._predict(work, flip_tta, cam, deadline, timings, stage)
            session.detected, session.tracked = work.detected, work.tracked
            recs = await stage("session", session.update, recs, cam.intrinsics)
        if recs:
            for k, rec in enumerate(recs):
                if not rec.finite:  # JSON has no inf/NaN: such a face would answer nulls
                    warnings.append(f"face {k} was dropped: its pose could not be computed (non-finite result)")
            kept = [rec for rec in recs if rec.finite]
            out_faces = [face_out(rec, req.include, topo, self.settings.landmarks_68_outline) for rec in kept]
            if session is not None:
                session.annotate(out_faces, kept)
            if out_faces and "blendshapes" in req.include and self.blendshapes is not None:
                warnings += await stage("blendshapes", self.blendshapes.annotate, out_faces, kept)
            if out_faces:
                textures = {id(f): t for f, t in zip(work.faces, work.textures or [])}
                await stage("store", self._store, storage, out_faces, kept, cam, (W, H), req.base_url, warnings,
                            textures)

        self.metrics.faces_per_request.observe(len(out_faces))
        timings["total"] = round((time.perf_counter() - t_start) * 1000, 3)
        return ReconstructResponse(
            model=self.model_info(),
            camera=camera_out(cam.intrinsics, cam.source),
            image=ImageOut(width=W, height=H, format=work.format),
            faces=out_faces,
            timings_ms=timings,
            warnings=warnings,
        )

    async def _predict(self, work: _ImageWork, flip_tta: bool, cam: CameraChoice, deadline: float,
                       timings: dict[str, float], stage) -> list[FaceReconstruction]:
        """Network and PnP for the located faces of ``work`` (none: an empty list)."""
        if not work.faces or work.crops is None:
            return []
        self._check_deadline(deadline, "inference")
        t = time.perf_counter()
        # The batcher's errors (queue full, deadline, shutting down, model failure)
        # answer through service.errors.domain_errors.
        assert self.batcher is not None
        verts, points, *rest = await self.batcher.submit(work.crops.crops, flip_tta, deadline)
        assert verts is not None and points is not None  # the batcher refuses a batch without them
        dt = time.perf_counter() - t
        timings["infer"] = round(dt * 1000, 3)
        self.metrics.observe_stage("infer", dt)
        return await stage("pnp", reconstruct_faces, work.faces, verts, uncrop_points(work.crops.Ms, points),
                           cam.intrinsics, rest[0] if rest else None)

    async def _image_stage(self, req: ReconstructRequest, header: ImageHeader, max_faces: int,
                           deadline: float, track: SessionFrame | None = None, texture: bool = False) -> _ImageWork:
        """Decode, locate and crop while holding the image's pixels of the decode budget.
        With a session (``track``) the faces are its tracks', unless it asks to detect."""
        # PixelBudgetTimeout answers 504 through service.errors.domain_errors.
        n = await self.pixel_budget.acquire(header.pixels, deadline - time.monotonic())
        try:
            self._check_deadline(deadline, "decoding")
        except ApiError:
            self.pixel_budget.release(n)
            raise
        S = int(self.model.input_size)
        work = asyncio.ensure_future(
            asyncio.to_thread(self._decode_locate_crop, req.data, req.faces, max_faces, S, track, header, texture))

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

    def _planned_reduction(self, header: ImageHeader | None, client: list[FaceIn] | None, max_faces: int,
                           S: int) -> int:
        """The JPEG reduction to decode at (`service.imaging.decode_image`): what the
        caller's five points let every crop afford, or, for detection in a large photo,
        what the detector looks at (faces found too small for it are decoded again)."""
        if header is None or header.format != "JPEG":
            return 1
        if client is not None:
            given = client[:max_faces]
            if not given or any(f.landmarks5 is None for f in given):
                return 1
            try:
                return max_reduction([np.asarray(f.landmarks5, np.float64) for f in given], S)
            except (ValueError, TypeError, np.linalg.LinAlgError):
                return 1  # crop_faces answers the 422
        if header.pixels < REDUCED_DETECTION_MIN_PIXELS:
            return 1
        input_scale = getattr(self.detector, "input_scale", None)
        scale = float(input_scale(header.height, header.width)) if input_scale is not None else 1.0
        return next((r for r in REDUCTIONS if r * scale <= 1.0), 1)

    def _decode_locate_crop(self, data: bytes, client: list[FaceIn] | None, max_faces: int, S: int,
                            track: SessionFrame | None = None,
                            header: ImageHeader | None = None, texture: bool = False) -> _ImageWork:
        t0 = time.perf_counter()
        # A texture is a larger crop than the network's: the decode must afford it too.
        fine = max(S, TEXTURE_SIZE) if texture else S
        reduction = 1 if track is not None else self._planned_reduction(header, client, max_faces, fine)
        img = decode_image(data, self.settings.max_image_pixels, reduction)
        t1 = time.perf_counter()
        if client is not None:
            check_client_faces(client[:max_faces], img.width, img.height)
        assert self.detector is not None
        tracked = track.faces_to_crop(img.width, img.height) if track is not None else None
        detected = tracked is None and client is None
        if tracked is None:
            faces = locate_faces(img.rgb, self.detector, client, max_faces, img.reduction)
            if not faces and track is not None:
                tracked = track.kept_faces()  # a detector miss does not end tracks that hold
        # A session's tracks are capped like detections: the tracks beyond max_faces end.
        faces = tracked[:max_faces] if tracked is not None else faces
        t2 = time.perf_counter()
        timings = {"decode": t1 - t0, ("detect" if detected else "track"): t2 - t1}
        crops = None
        textures = None
        if faces:
            lms = [f.landmarks5 for f in faces]
            if img.reduction > 1 and client is None and max_reduction(lms, fine) < img.reduction:
                # A face too small to crop from the frame the detector used: decode finer.
                img = decode_image(data, self.settings.max_image_pixels, max_reduction(lms, fine))
                timings["decode"] += time.perf_counter() - t2
                t2 = time.perf_counter()
            crops = crop_faces(img.rgb, lms, S, img.reduction)  # InvalidFacesError: 422
            timings["crop"] = time.perf_counter() - t2
            if texture:
                t3 = time.perf_counter()
                textures = face_textures(img.rgb, lms, img.reduction)
                timings["texture"] = time.perf_counter() - t3
        # Only the crops leave: the full image is freed when this thread returns.
        return _ImageWork(img.width, img.height, img.format, img.focal_35mm, faces, crops, timings,
                          tracked=tracked is not None, detected=detected, textures=textures)

    # ------------------------------------------------------------------ stages (worker threads)
    def _store(self, storage, faces: list[FaceOut], recs: list[FaceReconstruction], cam: CameraChoice,
               image_size: tuple[int, int], base_url: str, warnings: list[str],
               textures: dict[int, FaceTexture] | None = None) -> None:
        """Store each posed face's mesh and say per face whether it was (``mesh_status``);
        a face whose mesh could not be stored also gets a warning, never silence.
        ``textures``: by ``id(rec.face)``, the texture to store with that face's mesh."""
        from .storage import StorageError, new_mesh_id

        m = self.model
        tri = np.asarray(m.topology.triangles, dtype=np.int32)
        created = datetime.now(timezone.utc).isoformat()
        camera = {**cam.intrinsics.to_dict(), "source": cam.source}
        base = self.settings.public_base_url or base_url
        failures: dict[str, list[int]] = {}
        reasons: dict[str, str] = {}
        for k, (face, rec) in enumerate(zip(faces, recs)):
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
            # The pose PnP computed, not the response's rounding of it.
            arrays = {
                "vertices_world": np.asarray(rec.vertices, dtype=np.float32),
                "faces": tri,
                "R_cv": np.asarray(rec.pose.R_cv, dtype=np.float64),
                "t_cv": np.asarray(rec.pose.t_cv, dtype=np.float64),
            }
            texture = (textures or {}).get(id(rec.face))
            if texture is not None:
                arrays["uv"] = texture_uv(rec.pose.projected, texture)
                arrays["texture_jpeg"] = np.frombuffer(texture.jpeg, dtype=np.uint8)
            try:
                storage.put_mesh(mesh_id, meta, arrays, self.settings.mesh_ttl_s)
            except StorageError as exc:
                # The reconstruction itself succeeded: answer it, and say the link is missing.
                face.mesh_status = exc.code
                failures.setdefault(exc.code, []).append(k)
                reasons[exc.code] = str(exc)
                continue
            face.mesh_status = "stored"
            face.mesh_id = mesh_id
            face.mesh_urls = MeshUrls.for_mesh(base, mesh_id)
        for code, ks in failures.items():
            self.metrics.meshes_not_stored.labels(reason=code).inc(len(ks))
            warnings.append(f"the mesh of face(s) {ks} was NOT stored ({code}: {_without_paths(reasons[code])}); "
                            "pose and vertices in this response are valid, but there is no download link")

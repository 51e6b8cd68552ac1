"""The FastAPI application: ``uvicorn service.app:app`` or ``jmlr serve``.

``create_app(settings)`` builds an independent app (own metrics registry, storage and
engine) so tests can run several in one process; the model is loaded in the lifespan,
never at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request

from .errors import error_json, install_error_handlers
from .metrics import Metrics
from .pipeline import Engine
from .routers import devices, health, meshes, reconstruct
from .settings import Settings, get_settings

log = logging.getLogger("service")

DESCRIPTION = """\
Perspective 3D face reconstruction (JMLR, ECCV 2022 WCPA winner): from one photo and
its camera intrinsics, a metric 6DoF head pose and a dense face mesh per face.

Poses are **world (head) → OpenCV camera** (x right, y down, z forward), metres.
Errors are always `{"error": {"code": "...", "message": "..."}}`. See docs/api.md.
"""

_PURGE_EVERY_S = 300.0
_FORM_SLACK_BYTES = 1 << 20


async def _purge_loop(app: FastAPI) -> None:
    # Expired meshes are already invisible to reads; this only reclaims their space.
    while True:
        await asyncio.sleep(_PURGE_EVERY_S)
        storage = getattr(app.state, "storage", None)
        if storage is None:
            continue
        try:
            n = await asyncio.to_thread(storage.purge_expired)
            if n:
                log.info("purged %d expired meshes", n)
        except Exception:
            log.exception("purging expired meshes failed")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    from .storage import create_storage

    try:
        app.state.storage = await asyncio.to_thread(create_storage, settings)
    except Exception as exc:
        # Reconstruction still works without storage (no mesh links); device routes answer 503.
        app.state.storage = None
        log.error("storage %s unavailable: %s", settings.storage_kind(), exc)
    await asyncio.to_thread(app.state.engine.load)
    purge = asyncio.create_task(_purge_loop(app))
    try:
        yield
    finally:
        purge.cancel()
        app.state.engine.close()
        if app.state.storage is not None:
            with contextlib.suppress(Exception):
                app.state.storage.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="JMLR face reconstruction",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    app.state.engine = Engine(settings, metrics)
    app.state.storage = None
    install_error_handlers(app)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            length = request.headers.get("content-length", "")
            # Refuse an obviously oversized body before parsing it; the multipart parser
            # would otherwise spool all of it to disk first. Slack covers the form fields.
            if length.isdigit() and int(length) > settings.max_upload_bytes + _FORM_SLACK_BYTES:
                status = 413
                metrics.record_error("payload_too_large")
                return error_json(
                    413, "payload_too_large", f"request body is {length} bytes; the image limit is {settings.max_upload_bytes}"
                )
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            end = time.perf_counter()
            route = request.scope.get("route")
            # The route template, not the raw path: /mesh/{mesh_id} is one series, not one per id.
            path = getattr(route, "path", None) or "unmatched"
            metrics.request_latency.labels(route=path, method=request.method, status=str(status)).observe(end - start)
            encode_start = getattr(request.state, "encode_start", None)
            if encode_start is not None:
                metrics.observe_stage("encode", end - encode_start)

    app.include_router(health.router)
    app.include_router(reconstruct.router)
    app.include_router(devices.router)
    app.include_router(meshes.router)
    return app


app = create_app()

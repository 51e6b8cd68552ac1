"""The FastAPI application: ``uvicorn service.app:app`` or ``jmlr serve``.

``create_app(settings)`` builds an independent app (own metrics registry, storage and
engine) so tests can run several in one process; the model is loaded in the lifespan,
never at import time. ``service.app.app`` is built on first access (uvicorn's), so
importing this module reads no file and imports no torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from functools import lru_cache

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.types import Scope

from .admission import AdmissionController
from .body_limit import BodyLimitMiddleware
from .errors import install_error_handlers
from .exposure import ExposureGuard
from .gate import RequestGate
from .heif_child import HEIF_CHILD
from .memory import return_large_blocks_to_os
from .metrics import Metrics
from .observe import ObserveMiddleware
from .pipeline import Engine
from .ratelimit import RateLimiter
from .routers import demo, devices, health, meshes, reconstruct, sessions
from .sessions import Sessions
from .settings import Settings, get_settings
from .storage_guard import GuardedStorage

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
    from .storage import StorageError, create_storage

    return_large_blocks_to_os()

    # The guard opens the backend on first use and again after a failure, so a storage
    # that is down at start does not need a restart once it is back.
    storage = GuardedStorage(lambda: create_storage(settings), app.state.metrics, settings.storage_kind(),
                             retry_s=settings.storage_retry_s)
    app.state.storage = storage
    app.state.sessions = Sessions.create(settings, storage)
    try:
        status = await asyncio.to_thread(storage.check, 0.0)
        if status.get("evicts_meshes"):
            log.warning("redis maxmemory-policy is %s: Redis may evict stored meshes before their TTL; "
                        "use noeviction (the service refuses new meshes at its own budget instead)",
                        status.get("maxmemory_policy"))
    except StorageError as exc:
        # Reconstruction still works (faces say their mesh was not stored); /readyz says not ready.
        log.error("storage %s unavailable at start: %s", settings.storage_kind(), exc)
    await asyncio.to_thread(app.state.engine.load)
    purge = asyncio.create_task(_purge_loop(app))
    try:
        yield
    finally:
        purge.cancel()
        app.state.engine.close()
        HEIF_CHILD.close()  # started again by the next HEIC, if another app in this process gets one
        if app.state.storage is not None:
            with contextlib.suppress(Exception):
                app.state.storage.close()


def _body_limit(settings: Settings) -> Callable[[Scope], int]:
    upload_limit = settings.max_upload_bytes + _FORM_SLACK_BYTES  # slack covers the form fields

    def limit_for(scope: Scope) -> int:
        return upload_limit if scope["path"] == reconstruct.ROUTE else settings.max_json_body_bytes

    return limit_for


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # FastAPIOffline: /docs and /redoc served from assets inside the fastapi-offline
    # package (Swagger UI, ReDoc), so the docs page works without a CDN.
    app = FastAPIOffline(
        title="JMLR face reconstruction",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    app.state.engine = Engine(settings, metrics)
    app.state.storage = None
    app.state.admission = AdmissionController(settings.max_in_flight, settings.admission_target())
    app.state.rate_limiter = (
        RateLimiter(settings.rate_limit_per_minute / 60.0, settings.rate_limit_burst)
        if settings.rate_limit_per_minute > 0
        else None
    )
    install_error_handlers(app)

    # Outermost last: Observe sees every answer; the exposure guard comes before anything
    # else is decided; the gate admits before the body limit starts reading.
    app.add_middleware(BodyLimitMiddleware, limit_for=_body_limit(settings))
    app.add_middleware(RequestGate, path=reconstruct.ROUTE)
    app.add_middleware(ExposureGuard)
    app.add_middleware(ObserveMiddleware)

    app.include_router(health.router)
    app.include_router(reconstruct.router)
    app.include_router(devices.router)
    app.include_router(meshes.router)
    app.include_router(sessions.router)
    demo.install(app)
    return app


@lru_cache(maxsize=1)
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn service.app:app`` asks for ``app``: it is built then, from the environment
    # (and a .env file), which merely importing this module must not read.
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

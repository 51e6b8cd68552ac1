"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from ..deps import EngineDep, MetricsDep, OptionalStorageDep
from ..errors import ErrorResponse, error_json
from ..schemas import ModelOut
from ..storage import StorageError

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model: ModelOut
    storage: dict = Field(description="The storage backend's status (backend, memory or bytes used, limits).")


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    summary="Readiness: model loaded, inference worker alive, storage answering",
    responses={
        503: {
            "model": ErrorResponse,
            "description": "Not ready: `model_not_ready` (loading or failed), `inference_worker_down`, "
            "`storage_unavailable` (the storage backend does not answer).",
        }
    },
)
async def readyz(engine: EngineDep, storage: OptionalStorageDep):
    if not engine.ready:
        err = engine.not_ready_error()
        return error_json(err.status_code, err.code, err.message, err.headers)
    if storage is None:
        return error_json(503, "storage_unavailable", "storage is not configured", {"Retry-After": "5"})
    check = getattr(storage, "check", None) or storage.ping
    try:
        status = await asyncio.to_thread(check)
    except StorageError as exc:
        return error_json(503, exc.code, f"storage: {exc}", {"Retry-After": "2"})
    return Ready(status="ready", model=engine.model_info(), storage=status)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=m.content_type)

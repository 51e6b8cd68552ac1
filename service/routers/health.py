"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from ..deps import get_engine, get_metrics
from ..errors import ErrorResponse, error_json
from ..metrics import Metrics
from ..pipeline import Engine
from ..schemas import ModelOut

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model: ModelOut


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    summary="Readiness: the model is loaded and warmed up",
    responses={503: {"model": ErrorResponse, "description": "Model loading or failed to load (`model_not_ready`)."}},
)
async def readyz(engine: Annotated[Engine, Depends(get_engine)]):
    if not engine.ready:
        msg = f"model failed to load: {engine.error}" if engine.error else "model is loading"
        return error_json(503, "model_not_ready", msg, {"Retry-After": "5"})
    return Ready(status="ready", model=engine.model_info())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def metrics(m: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    return Response(m.render(), media_type=m.content_type)

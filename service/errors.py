"""One error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

Clients branch on ``code`` (stable snake_case); ``message`` is for humans and may change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("service.errors")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    """The body of every non-2xx answer."""

    error: ErrorBody


#: A route's ``responses=`` for the OpenAPI document: status code -> answer.
OpenApiResponses = dict[int | str, dict[str, Any]]

#: What a route behind ``deps.ApiKeyRequired`` may answer besides its own.
AUTH_RESPONSES: OpenApiResponses = {
    401: {"model": ErrorResponse, "description": "No X-API-Key while keys are configured (`missing_api_key`)."},
    403: {"model": ErrorResponse, "description": "The X-API-Key is not valid (`invalid_api_key`)."},
}


class ApiError(Exception):
    """Raise anywhere in a request to answer with the common error shape."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers


# Codes for the plain HTTPExceptions Starlette raises itself (404 route, 405 method).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
    504: "timeout",
}


def error_json(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={"error": {"code": code, "message": message}},
        headers=headers,
    )


def _record(request: Request, code: str) -> None:
    # Metrics live on app.state; an app without them (a bare test app) still answers.
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.record_error(code)


def _format_validation(exc: RequestValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


async def _fields_sent(request: Request, exc: RequestValidationError) -> str:
    """For a required form field that is missing, the fields the form did carry: a photo sent
    as ``file`` instead of ``image`` is otherwise only "image: Field required"."""
    missing = any(e.get("type") == "missing" and tuple(e.get("loc", ()))[:1] == ("body",) for e in exc.errors())
    if not missing or not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return ""
    # FastAPI parsed the form before validating it; Starlette keeps it on the request.
    sent = sorted(set((await request.form()).keys()))
    return f" (the form carried: {', '.join(f'`{k}`' for k in sent) if sent else 'no fields'})"


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts on this path. Starlette's own 405 names only the
    first route that matched the path (``Allow: GET`` on ``/devices``, which takes POST
    too). Asked through ``Route.matches`` only, so nested routers count as well."""
    allowed = [
        m for m in _METHODS
        if any(route.matches({**request.scope, "method": m})[0] is Match.FULL for route in request.app.routes)
    ]
    return ", ".join(allowed)


@dataclass(frozen=True)
class DomainError:
    """How an exception from below the HTTP layer answers.

    ``code`` None: the exception's own ``code`` attribute (storage errors carry theirs).
    ``message(exc, settings)``: for the client. ``dropped``: the ``jmlr_dropped_total``
    reason it counts as.
    """

    status_code: int
    code: str | None
    message: Callable[[Exception, Any], str]
    headers: dict[str, str] | None = None
    dropped: str | None = None


def domain_errors() -> dict[type[Exception], DomainError]:
    """The one table of domain exceptions (batcher, decode budget, crops, storage) -> HTTP."""
    # Imported here: storage and inference pull in numpy; a bare error-handling app does not need them.
    from jmlr.inference import InvalidFacesError

    from .batcher import BatcherStoppedError, DeadlineExceededError, InferenceError, QueueFullError
    from .pixel_budget import PixelBudgetTimeout
    from .storage import StorageError

    return {
        QueueFullError: DomainError(503, "queue_full", lambda e, s: f"server busy: {e}; retry shortly",
                                    {"Retry-After": "1"}),
        DeadlineExceededError: DomainError(
            504, "deadline_exceeded",
            lambda e, s: f"the request did not finish within {s.request_timeout_s:g} s (server busy)",
            dropped="deadline"),
        PixelBudgetTimeout: DomainError(504, "deadline_exceeded",
                                        lambda e, s: f"the request deadline passed waiting to decode: {e}",
                                        dropped="deadline"),
        BatcherStoppedError: DomainError(503, "shutting_down", lambda e, s: "the server is shutting down",
                                         {"Retry-After": "5"}),
        InferenceError: DomainError(500, "inference_failed", lambda e, s: "the model failed on this batch (logged)"),
        InvalidFacesError: DomainError(422, "invalid_faces", lambda e, s: str(e)),
        # A dependency failed, not the request: 503 so clients and load balancers retry.
        StorageError: DomainError(503, None, lambda e, s: f"storage: {e}", {"Retry-After": "2"}),
    }


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        _record(request, exc.code)
        return error_json(exc.status_code, exc.code, exc.message, exc.headers)

    def _domain_handler(spec: DomainError):
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            code = spec.code or str(getattr(exc, "code", "error"))
            _record(request, code)
            metrics = getattr(request.app.state, "metrics", None)
            if spec.dropped is not None and metrics is not None:
                metrics.dropped.labels(reason=spec.dropped).inc()
            message = spec.message(exc, getattr(request.app.state, "settings", None))
            return error_json(spec.status_code, code, message, spec.headers)
        return handle

    for exc_type, spec in domain_errors().items():
        app.add_exception_handler(exc_type, _domain_handler(spec))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        _record(request, "validation_error")
        return error_json(422, "validation_error", _format_validation(exc) + await _fields_sent(request, exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        _record(request, code)
        detail: Any = exc.detail
        message = detail if isinstance(detail, str) else str(detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return error_json(exc.status_code, code, message, headers)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # A bug: every expected failure is an ApiError. Log the traceback, hide it from clients.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        _record(request, "internal_error")
        return error_json(500, "internal_error", "internal server error (logged)")

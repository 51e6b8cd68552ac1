"""One error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

Clients branch on ``code`` (stable snake_case); ``message`` is for humans and may change.
"""

from __future__ import annotations

import logging
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


def install_error_handlers(app: FastAPI) -> None:
    # Imported here: storage pulls in numpy, and a bare error-handling app does not need it.
    from .storage import StorageError

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        _record(request, exc.code)
        return error_json(exc.status_code, exc.code, exc.message, exc.headers)

    @app.exception_handler(StorageError)
    async def _storage_error(request: Request, exc: StorageError) -> JSONResponse:
        # A dependency failed, not the request: 503 so clients and load balancers retry.
        _record(request, exc.code)
        return error_json(503, exc.code, f"storage: {exc}", {"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        _record(request, "validation_error")
        return error_json(422, "validation_error", _format_validation(exc))

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

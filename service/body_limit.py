"""Request body size limits, enforced while the body arrives.

A ``Content-Length`` over the limit is refused before anything is read. A body without
one (chunked) is counted as it streams in and cut off one chunk past the limit, so the
multipart parser never spools more than the limit to disk (it used to take 1.5 GB of
/tmp before answering 413). Errors keep the service's JSON shape.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .asgi_send import TrackedSend
from .errors import error_json


class BodyTooLargeError(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing re-raises it
    (anything else there becomes a 400) and the error handlers answer 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """``limit_for(scope)`` gives the byte limit of each request's body."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        length = _content_length(scope)
        if length is not None and length > limit:
            await self._refuse(scope, receive, send, limit, length)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        tracked = TrackedSend(send)
        try:
            await self.app(scope, limited_receive, tracked)
        except BodyTooLargeError:
            if tracked.started:
                raise
            await self._refuse(scope, receive, send, limit, None)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int, length: int | None) -> None:
        metrics = getattr(getattr(scope.get("app"), "state", None), "metrics", None)
        if metrics is not None:
            metrics.record_error("payload_too_large")
        size = f"{length} bytes" if length is not None else "larger than that (counted as it arrived)"
        response = error_json(413, "payload_too_large", f"the request body is {size}; the limit is {limit} bytes")
        await response(scope, receive, send)

"""The door of ``POST /reconstruct``: everything decided before the body is read, and the
request's whole life bounded.

In order, each answered within a millisecond or so and before the upload is read:
model not ready (503), API key (401/403), the key's rate limit (429), admission
control (503 ``overloaded`` with Retry-After, see ``admission.py``). An admitted request
then runs under one deadline that starts here, at arrival (``request.state.deadline``,
monotonic seconds): if it passes before the response starts, the work is cancelled
and the client gets 504. A client that disconnects before its response starts has its
work cancelled too (the batcher drops its crops, later stages never run).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .asgi_send import TrackedSend
from .deps import check_api_key
from .errors import ApiError, error_json

ROUTE = "/reconstruct"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _key_id(api_key: str) -> str:
    # Hashed: the limiter's table must not hold secrets in the clear.
    return hashlib.sha256(api_key.encode()).hexdigest()[:24]


class RequestGate:
    def __init__(self, app: ASGIApp, path: str = ROUTE) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        settings, metrics = state.settings, state.metrics
        arrival = time.monotonic()
        scope["jmlr.route"] = self.path  # metrics label for answers given before routing

        async def refuse(exc: ApiError, reason: str | None = None) -> None:
            metrics.record_error(exc.code)
            if reason is not None:
                metrics.rejected.labels(reason=reason).inc()
            await error_json(exc.status_code, exc.code, exc.message, exc.headers)(scope, receive, send)

        engine = state.engine
        if not engine.ready:
            await refuse(engine.not_ready_error(), "not_ready")
            return
        api_key = _header(scope, b"x-api-key")
        try:
            check_api_key(settings.api_keys, api_key)
        except ApiError as exc:
            await refuse(exc, "unauthorized")
            return
        limiter = getattr(state, "rate_limiter", None)
        # Limits are per key. Without keys the service is on loopback (or behind a proxy
        # that authenticates and would make every client one address): no limit here.
        if limiter is not None and settings.api_keys and api_key:  # a key, since the check passed
            wait = limiter.acquire(_key_id(api_key))
            if wait > 0:
                await refuse(
                    ApiError(429, "rate_limited", f"rate limit of {settings.rate_limit_per_minute:g} requests "
                             "per minute exceeded; retry later", {"Retry-After": limiter.retry_after(wait)}),
                    "rate_limited",
                )
                return
        admission = state.admission
        decision = admission.try_admit()
        if not decision.admitted:
            expected = f"{decision.expected_s:.1f} s" if decision.expected_s is not None else "unknown"
            await refuse(
                ApiError(503, "overloaded", f"server busy ({admission.in_flight} requests in progress, expected "
                         f"wait {expected}); retry later",
                         {"Retry-After": admission.retry_after(decision.retry_after_s)}),
                decision.reason,
            )
            return

        metrics.in_flight.set(admission.in_flight)
        deadline = arrival + settings.request_timeout_s
        scope.setdefault("state", {})["deadline"] = deadline
        completed = False
        try:
            completed = await self._run(scope, receive, send, deadline, metrics)
        finally:
            admission.release(completed)
            metrics.in_flight.set(admission.in_flight)

    async def _run(self, scope: Scope, receive: Receive, send: Send, deadline: float, metrics) -> bool:
        """Run the app until it answers, the deadline passes or the client leaves.
        Returns whether the app finished its work."""
        body_done = asyncio.Event()
        client_gone = asyncio.Event()
        tracked = TrackedSend(send)

        async def gated_receive() -> Message:
            if body_done.is_set():
                # After the body only a disconnect can come; the watcher below owns receive.
                await client_gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                client_gone.set()
            elif not message.get("more_body", False):
                body_done.set()
            return message

        async def watch_disconnect() -> None:
            await body_done.wait()
            if (await receive())["type"] == "http.disconnect":
                client_gone.set()

        app_task = asyncio.ensure_future(self.app(scope, gated_receive, tracked))
        watcher = asyncio.ensure_future(watch_disconnect())
        gone = asyncio.ensure_future(client_gone.wait())
        try:
            await asyncio.wait({app_task, gone}, timeout=max(0.0, deadline - time.monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
            if not app_task.done() and not tracked.started:
                app_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await app_task
                if client_gone.is_set():
                    metrics.dropped.labels(reason="client_gone").inc()
                    return False
                metrics.dropped.labels(reason="deadline").inc()
                metrics.record_error("deadline_exceeded")
                timeout = scope["app"].state.settings.request_timeout_s
                await error_json(504, "deadline_exceeded",
                                 f"the request did not finish within {timeout:g} s (server busy)")(scope, receive, send)
                return False
            await app_task  # done, or already answering: let it finish
            return True
        finally:
            for task in (watcher, gone):
                task.cancel()
            if not app_task.done():
                app_task.cancel()

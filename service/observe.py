"""Request latency by route template, method and status, for every answer.

A pure ASGI middleware (not ``BaseHTTPMiddleware``): it sees answers given by other
middlewares before routing (413, 429, 503 at the door) and does not get between the
request gate and the client's disconnect.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from .asgi_send import TrackedSend


class ObserveMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = scope["app"].state.metrics
        start = time.perf_counter()
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        finally:
            status = tracked.status or 500
            end = time.perf_counter()
            route = scope.get("route")
            # The route template, not the raw path: /mesh/{mesh_id} is one series, not one per id.
            path = getattr(route, "path", None) or scope.get("jmlr.route") or "unmatched"
            metrics.request_latency.labels(route=path, method=scope["method"], status=str(status)).observe(end - start)
            encode_start = scope.get("state", {}).get("encode_start")
            if encode_start is not None:
                metrics.observe_stage("encode", end - encode_start)

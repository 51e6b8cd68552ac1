"""Secure by default: no open service on a network address.

With no API keys every write (devices, and ``POST /reconstruct``, which stores meshes)
is open. That is fine on loopback, for development, and wrong anywhere else, so the
service refuses to start on a non-loopback address without keys unless
``JMLR_ALLOW_UNAUTHENTICATED=true`` says it is meant (behind an authenticating proxy,
say). ``jmlr serve`` checks the address it binds; an app started some other way
(``uvicorn service.app:app --host 0.0.0.0``) checks the address each request arrived on
and answers 503 ``insecure_configuration`` instead of serving openly.
"""

from __future__ import annotations

import ipaddress
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_json
from .settings import Settings

log = logging.getLogger("service.exposure")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; False for other addresses and names
    (0.0.0.0 and :: listen on every interface)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(host: str, settings: Settings) -> str | None:
    """Why serving on ``host`` with these settings is refused, or None if it is fine."""
    if settings.api_keys or settings.allow_unauthenticated or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} without API keys: anyone who can reach it could store "
        "meshes and change devices. Set JMLR_API_KEYS, bind 127.0.0.1, or set "
        "JMLR_ALLOW_UNAUTHENTICATED=true if something in front of the service authenticates."
    )


class ExposureGuard:
    """Answers 503 on every route when the request came in on a non-loopback address of
    an unauthenticated service (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] == "http" and server and isinstance(server[0], str):
            host = server[0]
            # Only real socket addresses: test clients use names such as "testserver".
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                host = ""
            problem = exposure_problem(host, scope["app"].state.settings) if host else None
            if problem:
                if not self._warned:
                    log.error(problem)
                    self._warned = True
                await error_json(503, "insecure_configuration", problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)

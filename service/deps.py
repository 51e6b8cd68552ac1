"""FastAPI dependencies: everything a route needs comes from ``app.state`` through here.

Routes take the typed aliases (``SettingsDep``, ``EngineDep``, ``StorageDep``, ...) so the
wiring is written once. Tests build an app with ``create_app(settings)`` and get their own
settings, storage and engine, so no route reaches for a module-level global.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in its thread
pool, one hand-off per dependency per request (six on ``POST /reconstruct``), for what is
an attribute lookup. They must not block (none does any I/O).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from .errors import ApiError
from .metrics import Metrics
from .pipeline import Engine
from .settings import Settings
from .storage import Storage

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Required on write routes when JMLR_API_KEYS is set.")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_optional_storage(request: Request) -> Storage | None:
    """The storage, or None when it is not configured (reconstruction still answers)."""
    return getattr(request.app.state, "storage", None)


async def get_storage(request: Request) -> Storage:
    storage = getattr(request.app.state, "storage", None)
    if storage is None:
        raise ApiError(503, "storage_unavailable", "storage is not available (see the server log)")
    return storage


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def check_api_key(keys: list[str], api_key: str | None) -> None:
    """Raise the 401/403 ``ApiError`` unless ``api_key`` is one of ``keys`` (no keys: open).

    Shared by the route dependency and the request gate, which checks before the body
    of ``POST /reconstruct`` is read."""
    if not keys:
        return
    if not api_key:
        raise ApiError(401, "missing_api_key", "this route needs an X-API-Key header", {"WWW-Authenticate": "ApiKey"})
    # Constant-time comparison against every key: no early exit that leaks which matched.
    ok = False
    for key in keys:
        ok |= secrets.compare_digest(api_key.encode(), key.encode())
    if not ok:
        raise ApiError(403, "invalid_api_key", "the X-API-Key is not valid")


async def require_api_key(
    request: Request, api_key: Annotated[str | None, Depends(api_key_header)] = None
) -> None:
    check_api_key(request.app.state.settings.api_keys, api_key)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
OptionalStorageDep = Annotated[Storage | None, Depends(get_optional_storage)]
EngineDep = Annotated[Engine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
#: For ``dependencies=[ApiKeyRequired]`` on write routes.
ApiKeyRequired = Depends(require_api_key)

"""The routes' dependencies run on the event loop, not in FastAPI's thread pool."""

from __future__ import annotations

import inspect

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.routers import demo, devices, health, meshes, reconstruct, sessions


def _calls(dependant: Dependant):
    for dep in dependant.dependencies:
        yield dep.call
        yield from _calls(dep)


def _is_async(call) -> bool:
    # A function, or an instance whose class has an async __call__ (fastapi.security's).
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


def test_every_dependency_is_async():
    # A plain `def` dependency costs a thread-pool hand-off per request: six of them were
    # a millisecond or more of each POST /reconstruct for attribute lookups.
    routes = [r for m in (demo, devices, health, meshes, reconstruct, sessions) for r in m.router.routes
              if isinstance(r, APIRoute)]
    assert any(r.path == "/reconstruct" for r in routes)
    sync = sorted({f"{r.path}: {getattr(c, '__qualname__', c)}" for r in routes for c in _calls(r.dependant)
                   if c is not None and not _is_async(c)})
    assert sync == []

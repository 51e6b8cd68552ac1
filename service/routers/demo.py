"""``GET /demo``: a web page to try the service with a photo (``GET /`` redirects there).

The page and the 3D viewer it uses (``<model-viewer>``, which bundles three.js; licences
beside it) are package data under ``service/static``: nothing is loaded from a CDN, so
the page works offline. Its Content-Security-Policy makes the browser refuse any request
to another origin, so it stays that way.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# 'self' everywhere: scripts, styles, the GLB and the API calls come from this server;
# blob:/data: cover the photo bitmap and the viewer's textures; the viewer's shadow DOM
# sets inline styles.
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
       "connect-src 'self' blob: data:; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; "
       "frame-ancestors 'none'")

router = APIRouter(tags=["demo"])


@router.get("/demo", response_class=FileResponse,
            summary="Demo web page: upload a photo, see mesh, pose and blendshapes")
def demo_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "demo" / "index.html", media_type="text/html",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/demo")


def install(app: FastAPI) -> None:
    """Add the page and its static files (``/static``) to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

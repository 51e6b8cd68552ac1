"""``/mesh/{id}``: download a reconstructed face as GLB / OBJ / PLY, or its metadata.

Meshes are kept for ``JMLR_MESH_TTL_S`` after reconstruction; past that they answer 404
like an unknown id (the storage never hands out an expired mesh).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam

from service.deps import SettingsDep, StorageDep
from service.errors import ApiError, ErrorResponse, OpenApiResponses
from service.mesh_export import MESH_FORMATS, export_mesh
from service.schemas_meshes import MeshInfo, MeshModelInfo, MeshUrls
from service.storage import Storage

router = APIRouter(prefix="/mesh", tags=["meshes"])


class SpaceParam(str, Enum):
    world = "world"
    camera = "camera"


SpaceQuery = Annotated[
    SpaceParam,
    Query(
        description="'world': head frame (metres, y up, z out of the face). "
        "'camera': OpenCV camera frame of the photo, X = R_cv @ V + t_cv (metres, y down, z forward)."
    ),
]

_NOT_FOUND: OpenApiResponses = {404: {"model": ErrorResponse, "description": "Unknown or expired mesh id."}}


def _load(storage: Storage, mesh_id: str) -> tuple[dict, dict]:
    found = storage.get_mesh(mesh_id)
    if found is None:
        raise ApiError(404, "mesh_not_found", f"no mesh {mesh_id!r} (unknown id, or it expired)")
    return found


def _iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _model_info(meta: dict[str, Any]) -> MeshModelInfo:
    # The reconstruct route may store the model as a dict or as flat keys.
    model = meta.get("model")
    if isinstance(model, dict):
        return MeshModelInfo(name=model.get("name"), version=model.get("version"))
    return MeshModelInfo(
        name=model if isinstance(model, str) else meta.get("model_name"),
        version=meta.get("model_version"),
    )


# Declared before "/{mesh_id}" so that "abc.glb" is never read as the id "abc.glb".
@router.get(
    "/{mesh_id}.{fmt}",
    summary="Download a mesh",
    response_class=Response,
    responses={
        200: {
            "description": "The mesh file.",
            "content": {f.media_type: {} for f in MESH_FORMATS.values()},
        },
        **_NOT_FOUND,
    },
)
def download_mesh(
    mesh_id: str,
    fmt: Annotated[str, PathParam(description=", ".join(MESH_FORMATS), json_schema_extra={"enum": list(MESH_FORMATS)})],
    storage: StorageDep,
    space: SpaceQuery = SpaceParam.world,
) -> Response:
    # Any other suffix means the whole segment is an id with a dot in it ("abc.def"),
    # which no mesh has: 404 like every unknown id, not a 422 about a format.
    if fmt not in MESH_FORMATS:
        raise ApiError(404, "mesh_not_found", f"no mesh {f'{mesh_id}.{fmt}'!r}")
    meta, arrays = _load(storage, mesh_id)
    data = export_mesh(arrays, fmt, space.value)
    suffix = "" if space is SpaceParam.world else "_camera"
    # The bytes never change while the mesh lives, so clients may cache until expiry.
    max_age = max(0, int(meta.get("expires_at", time.time()) - time.time()))
    return Response(
        content=data,
        media_type=MESH_FORMATS[fmt].media_type,
        headers={
            "Content-Disposition": f'attachment; filename="face_{mesh_id}{suffix}.{fmt}"',
            "Cache-Control": f"private, max-age={max_age}",
        },
    )


@router.get("/{mesh_id}", response_model=MeshInfo, summary="Mesh metadata and download URLs", responses=_NOT_FOUND)
def mesh_info(
    mesh_id: str,
    request: Request,
    storage: StorageDep,
    settings: SettingsDep,
) -> MeshInfo:
    meta, arrays = _load(storage, mesh_id)
    image_size = meta.get("image_size")
    return MeshInfo(
        mesh_id=mesh_id,
        num_vertices=int(arrays["vertices_world"].shape[0]),
        num_faces=int(arrays["faces"].shape[0]),
        model=_model_info(meta),
        created=meta.get("created") or _iso(meta["stored_at"]),
        expires_at=_iso(meta["expires_at"]),
        image_size=list(image_size) if image_size is not None else None,
        camera=meta.get("camera"),
        R_cv=arrays["R_cv"].reshape(3, 3).tolist(),
        t_cv=arrays["t_cv"].reshape(3).tolist(),
        textured="texture_jpeg" in arrays,
        urls=MeshUrls.for_mesh(settings.public_base_url or str(request.base_url), mesh_id),
    )

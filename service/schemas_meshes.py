"""Response models for ``/mesh``: a stored mesh's metadata and its download URLs."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .mesh_export import MESH_FORMATS


def _url_fields(schema: dict[str, Any]) -> None:
    # The formats are MeshUrls' extra fields; the schema names each one.
    props = schema.setdefault("properties", {})
    for name, fmt in MESH_FORMATS.items():
        props[name] = {"type": "string", "title": name.upper(), "description": f"Download as {fmt.media_type}."}
    schema["required"] = [*MESH_FORMATS, "self"]


class MeshUrls(BaseModel):
    """A download URL per format of `service.mesh_export.MESH_FORMATS`, and ``self``
    (the metadata)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", json_schema_extra=_url_fields)

    self_: str = Field(alias="self")

    @classmethod
    def for_mesh(cls, base_url: str, mesh_id: str) -> MeshUrls:
        root = f"{base_url.rstrip('/')}/mesh/{mesh_id}"
        # Validated from a dict: the format URLs are extra fields, unknown to the signature.
        return cls.model_validate({"self": root, **{name: f"{root}.{name}" for name in MESH_FORMATS}})


class MeshModelInfo(BaseModel):
    name: str | None = None
    version: str | None = None


@lru_cache(maxsize=1)
def _example_topology_counts() -> tuple[int, int]:
    from jmlr.facemodel.topology import Topology, default_topology_path

    topo = Topology.load(default_topology_path())
    return topo.num_vertices, topo.num_triangles


def _mesh_info_example(schema: dict[str, Any]) -> None:
    # The counts of the packaged default topology rather than numbers written here, which
    # would go stale; read when the schema is first built, not at import.
    num_vertices, num_faces = _example_topology_counts()
    mesh_id = "q3Wm1c0V2yq8Vv1Yd7mXbA"
    urls = MeshUrls.for_mesh("http://localhost:8000", mesh_id).model_dump(by_alias=True)
    schema["examples"] = [{
        "mesh_id": mesh_id,
        "num_vertices": num_vertices,
        "num_faces": num_faces,
        "model": {"name": "jmlr_mnv2_128_cpu", "version": "1"},
        "created": "2024-05-01T12:00:00Z",
        "expires_at": "2024-05-01T13:00:00Z",
        "image_size": [800, 800],
        "camera": {"fx": 629.77, "fy": 629.77, "cx": 400.0, "cy": 400.0, "width": 800, "height": 800,
                   "distortion": None, "source": "request"},
        "R_cv": [[1, 0, 0], [0, -1, 0], [0, 0, -1]],
        "t_cv": [0.0, 0.0, 0.5],
        "textured": False,
        "urls": urls,
    }]


class MeshInfo(BaseModel):
    """``GET /mesh/{id}``: what a stored mesh is and where to download it."""

    model_config = ConfigDict(json_schema_extra=_mesh_info_example)

    mesh_id: str
    num_vertices: int
    num_faces: int
    model: MeshModelInfo
    created: datetime
    expires_at: datetime
    image_size: list[int] | None = Field(None, description="(width, height) of the source image.")
    camera: dict | None = Field(None, description="Intrinsics the mesh was reconstructed with "
                                "(jmlr.geometry.Intrinsics.to_dict() and their source).")
    R_cv: list[list[float]] = Field(description="World → OpenCV camera rotation: X_cam = R_cv @ V + t_cv.")
    t_cv: list[float] = Field(description="World → OpenCV camera translation in metres.")
    textured: bool = Field(False, description="Stored with the photo as its texture (the request's `texture` "
                           "field): the GLB and USDZ downloads carry it.")
    urls: MeshUrls

"""Turn stored mesh arrays into GLB / OBJ / PLY / USDZ bytes.

:data:`MESH_FORMATS` is the one table of download formats: the download route's formats
and media types, the ``mesh_urls`` of a response and the OpenAPI schema all come from it,
so a new format is one entry here.

``space="world"`` is the head frame (metres, y up, z out of the face), which is also
glTF's and USD's convention, so viewers show the face upright. ``space="camera"`` applies the
stored pose, ``X_cam = R_cv @ V + t_cv``, i.e. OpenCV camera coordinates (y down,
z forward): put it next to a point cloud or depth map from the same camera.

A mesh stored with a texture (`service.texture`: ``uv`` and ``texture_jpeg`` among its
arrays) carries it in GLB and USDZ; OBJ and PLY stay plain (an OBJ's texture would be
two more files, and PLY viewers rarely read one).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import trimesh
from PIL import Image

from jmlr.geometry.camera import world_to_opencv

from .usdz import mesh_usdz

MeshSpace = Literal["world", "camera"]


@dataclass(frozen=True)
class MeshFormat:
    """A download format: its media type and how trimesh writes it."""

    media_type: str
    write: Callable[[trimesh.Trimesh], Any]


MESH_FORMATS: dict[str, MeshFormat] = {
    "glb": MeshFormat("model/gltf-binary", lambda mesh: mesh.export(file_type="glb")),
    # No normals/texture coordinates: they would be invented, not measured.
    "obj": MeshFormat("model/obj", lambda mesh: mesh.export(file_type="obj", include_normals=False,
                                                            include_texture=False)),
    "ply": MeshFormat("model/ply", lambda mesh: mesh.export(file_type="ply", encoding="binary")),
    # Apple's AR formats (AR Quick Look, RealityKit); trimesh has no USD writer.
    "usdz": MeshFormat("model/vnd.usdz+zip",
                       lambda mesh: mesh_usdz(mesh.vertices, mesh.faces, mesh.vertex_normals, *_texture_of(mesh))),
}

#: format -> media type (derived from :data:`MESH_FORMATS`).
MEDIA_TYPES: dict[str, str] = {name: f.media_type for name, f in MESH_FORMATS.items()}


def _texture_of(mesh: trimesh.Trimesh) -> tuple[np.ndarray | None, Image.Image | None]:
    """(UVs with v up, the texture image) of a textured mesh, else (None, None)."""
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None:
        return np.asarray(visual.uv), getattr(visual.material, "image", None)
    return None, None


def mesh_vertices(arrays: dict[str, np.ndarray], space: MeshSpace = "world") -> np.ndarray:
    verts = np.asarray(arrays["vertices_world"], dtype=np.float64)
    if space == "world":
        return verts
    if space == "camera":
        return world_to_opencv(verts, np.asarray(arrays["R_cv"]).reshape(3, 3), np.asarray(arrays["t_cv"]).reshape(3))
    raise ValueError(f"unknown space {space!r} (expected 'world' or 'camera')")


def export_mesh(arrays: dict[str, np.ndarray], fmt: str, space: MeshSpace = "world") -> bytes:
    if fmt not in MESH_FORMATS:
        raise ValueError(f"unknown mesh format {fmt!r} (expected one of {sorted(MESH_FORMATS)})")
    visual = None
    if "uv" in arrays and "texture_jpeg" in arrays:
        uv = np.asarray(arrays["uv"], dtype=np.float64)
        image = Image.open(io.BytesIO(np.asarray(arrays["texture_jpeg"], np.uint8).tobytes()))
        # Stored with v down (image rows); glTF's exporter in trimesh, USD and OBJ want v up.
        visual = trimesh.visual.TextureVisuals(uv=np.c_[uv[:, 0], 1.0 - uv[:, 1]], image=image)
    mesh = trimesh.Trimesh(
        vertices=mesh_vertices(arrays, space).astype(np.float32),
        faces=np.asarray(arrays["faces"], dtype=np.int64),
        visual=visual,
        # process=False keeps vertex order and count: vertex i is topology vertex i,
        # which clients rely on to map landmarks and regions.
        process=False,
    )
    data = MESH_FORMATS[fmt].write(mesh)
    return data.encode() if isinstance(data, str) else bytes(data)

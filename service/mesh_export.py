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
    """A download format: its media type and how it is written from a trimesh mesh and the
    stored texture's JPEG bytes (None for an untextured mesh)."""

    media_type: str
    write: Callable[[trimesh.Trimesh, bytes | None], Any]


def _glb(mesh: trimesh.Trimesh, texture_jpeg: bytes | None) -> Any:
    """GLB bytes; a texture is embedded as the stored JPEG itself. trimesh re-encodes a
    texture image at Pillow's default quality (75), which would add a second loss on top of
    the stored one, so its buffer postprocessor (called before the buffer views are laid
    out) swaps the image's buffer for the original bytes."""
    if texture_jpeg is None:
        return mesh.export(file_type="glb")
    padded = texture_jpeg + b"\0" * (-len(texture_jpeg) % 4)  # glTF buffer views are 4-byte aligned

    def keep_stored_jpeg(buffer_items: Any, tree: dict[str, Any]) -> None:
        keys = list(buffer_items.keys())
        for image in tree.get("images", []):
            if image.get("mimeType") == "image/jpeg":
                buffer_items[keys[image["bufferView"]]] = padded

    return mesh.export(file_type="glb", buffer_postprocessor=keep_stored_jpeg)


MESH_FORMATS: dict[str, MeshFormat] = {
    "glb": MeshFormat("model/gltf-binary", _glb),
    # No normals/texture coordinates: they would be invented, not measured.
    "obj": MeshFormat("model/obj", lambda mesh, _: mesh.export(file_type="obj", include_normals=False,
                                                               include_texture=False)),
    "ply": MeshFormat("model/ply", lambda mesh, _: mesh.export(file_type="ply", encoding="binary")),
    # Apple's AR formats (AR Quick Look, RealityKit); trimesh has no USD writer.
    "usdz": MeshFormat("model/vnd.usdz+zip",
                       lambda mesh, jpeg: mesh_usdz(mesh.vertices, mesh.faces, mesh.vertex_normals,
                                                    _uv_of(mesh), jpeg)),
}

#: format -> media type (derived from :data:`MESH_FORMATS`).
MEDIA_TYPES: dict[str, str] = {name: f.media_type for name, f in MESH_FORMATS.items()}


def _uv_of(mesh: trimesh.Trimesh) -> np.ndarray | None:
    """The UVs (v up) of a textured mesh, else None."""
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None:
        return np.asarray(visual.uv)
    return None


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
    visual, texture_jpeg = None, None
    if "uv" in arrays and "texture_jpeg" in arrays:
        uv = np.asarray(arrays["uv"], dtype=np.float64)
        texture_jpeg = np.asarray(arrays["texture_jpeg"], np.uint8).tobytes()
        image = Image.open(io.BytesIO(texture_jpeg))
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
    data = MESH_FORMATS[fmt].write(mesh, texture_jpeg)
    return data.encode() if isinstance(data, str) else bytes(data)

"""Turn stored mesh arrays into GLB / OBJ / PLY bytes.

``space="world"`` is the head frame (metres, y up, z out of the face), which is also
glTF's convention, so viewers show the face upright. ``space="camera"`` applies the
stored pose, ``X_cam = R_cv @ V + t_cv``, i.e. OpenCV camera coordinates (y down,
z forward): put it next to a point cloud or depth map from the same camera.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import trimesh

MeshFormat = Literal["glb", "obj", "ply"]
MeshSpace = Literal["world", "camera"]

MEDIA_TYPES: dict[str, str] = {
    "glb": "model/gltf-binary",
    "obj": "model/obj",
    "ply": "model/ply",
}


def mesh_vertices(arrays: dict[str, np.ndarray], space: MeshSpace = "world") -> np.ndarray:
    verts = np.asarray(arrays["vertices_world"], dtype=np.float64)
    if space == "world":
        return verts
    if space == "camera":
        R = np.asarray(arrays["R_cv"], dtype=np.float64).reshape(3, 3)
        t = np.asarray(arrays["t_cv"], dtype=np.float64).reshape(3)
        return verts @ R.T + t
    raise ValueError(f"unknown space {space!r} (expected 'world' or 'camera')")


def export_mesh(arrays: dict[str, np.ndarray], fmt: MeshFormat, space: MeshSpace = "world") -> bytes:
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unknown mesh format {fmt!r} (expected one of {sorted(MEDIA_TYPES)})")
    mesh = trimesh.Trimesh(
        vertices=mesh_vertices(arrays, space).astype(np.float32),
        faces=np.asarray(arrays["faces"], dtype=np.int64),
        # process=False keeps vertex order and count: vertex i is topology vertex i,
        # which clients rely on to map landmarks and regions.
        process=False,
    )
    if fmt == "ply":
        data = mesh.export(file_type="ply", encoding="binary")
    elif fmt == "obj":
        # No normals/texture coordinates: they would be invented, not measured.
        data = mesh.export(file_type="obj", include_normals=False, include_texture=False)
    else:
        data = mesh.export(file_type="glb")
    return data.encode() if isinstance(data, str) else bytes(data)

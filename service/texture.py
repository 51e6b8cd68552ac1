"""The photo as a stored mesh's texture: a square crop around the face and per-vertex UVs.

The texture is the face's aligned crop (`jmlr.inference.crop_faces`, the network's own
similarity alignment) warped at ``TEXTURE_SIZE`` px from the decoded frame, JPEG-encoded.
A vertex's UV is where the posed mesh projects into the frame (``pose.projected``, image
px), mapped by the same crop transform: what the camera saw at that vertex. Vertices the
camera did not see (the far side of a turned head) take whatever lies in front of them
in the photo; the texture shows the photo, it does not invent the hidden side.

UVs are stored in image convention: u to the right, v down, (0, 0) the texture's top-left
corner, clipped to [0, 1]; exporters convert (glTF, USD and OBJ put v = 0 at the bottom).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from jmlr.geometry.crop import apply_affine
from jmlr.inference import crop_faces

TEXTURE_SIZE = 512  # px, square
TEXTURE_JPEG_QUALITY = 88


@dataclass(frozen=True)
class FaceTexture:
    """One face's texture: ``M`` (2, 3) frame px -> texture px; ``jpeg`` its bytes."""

    M: np.ndarray
    jpeg: bytes
    size: int = TEXTURE_SIZE


def face_textures(image: np.ndarray, landmarks5: list[np.ndarray], reduction: int = 1,
                  size: int = TEXTURE_SIZE) -> list[FaceTexture]:
    """Texture crops of each face of an RGB frame (decoded at ``1 / reduction`` of its size;
    points in frame px), in the order of ``landmarks5``."""
    crops = crop_faces(image, landmarks5, size, reduction)
    out = []
    for M, crop in zip(crops.Ms, crops.crops):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, TEXTURE_JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding of a texture failed")
        out.append(FaceTexture(np.asarray(M, np.float64), buf.tobytes(), size))
    return out


def texture_uv(projected: np.ndarray, texture: FaceTexture) -> np.ndarray:
    """(N, 2) image px of the posed vertices -> (N, 2) float32 UVs in [0, 1], image
    convention (v down from the top-left corner)."""
    uv = apply_affine(texture.M, np.asarray(projected, np.float64)) / texture.size
    return np.clip(uv, 0.0, 1.0).astype(np.float32)

"""On-the-fly training batches rendered straight into the face crop.

Instead of rendering the 800x800 frame and warping it, the crop similarity ``M``
(image px -> crop px, from the 5 points of the projected 68 landmarks, as the
detector-based pipeline computes it) is folded into the projection,
``K_crop = [M; 0 0 1] @ K``, and the head is rasterized at S x S directly. Alignment
jitter (scale, rotation, shift of ``M``) teaches the network to tolerate imperfect
detector landmarks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from jmlr.geometry.crop import (
    apply_affine,
    compose_affine,
    crop_transform,
    invert_affine,
    landmarks5_from_68,
    similarity_scale,
)
from jmlr.geometry.crop import jitter_similarity as geometry_jitter

from .scene import SyntheticFaceGenerator, _project, numpy_threads_like_torch

__all__ = ["CropJitter", "SyntheticCropStream", "crop_projection", "jitter_similarity", "zoom_about_centre"]


@dataclass(frozen=True)
class CropJitter:
    """Uniform alignment noise: relative scale, rotation in degrees, shift as a fraction of S."""

    scale: float = 0.08
    rotation: float = 8.0
    shift: float = 0.04

    @classmethod
    def none(cls) -> CropJitter:
        return cls(0.0, 0.0, 0.0)


def jitter_similarity(rng: np.random.Generator, batch: int, size: int, jitter: CropJitter) -> np.ndarray:
    """Random similarities (B, 2, 3) of crop px about the crop centre
    (`jmlr.geometry.crop.jitter_similarity` with a `CropJitter`'s bounds)."""
    return geometry_jitter(rng, batch, size, jitter.scale, jitter.rotation, jitter.shift)


def zoom_about_centre(size: int, zoom: float) -> np.ndarray:
    """The similarity (2, 3) scaling crop px by ``zoom`` about the crop centre."""
    c = (size - 1) / 2.0
    return np.array([[zoom, 0.0, c - zoom * c], [0.0, zoom, c - zoom * c]])


def crop_projection(M: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``[M; 0 0 1] @ K``: (…, 3, 3) projection from OpenCV camera points to crop pixels."""
    M = np.asarray(M, np.float64)
    H = np.zeros(M.shape[:-2] + (3, 3))
    H[..., :2, :] = M
    H[..., 2, 2] = 1.0
    return H @ np.asarray(K, np.float64)


class SyntheticCropStream:
    """Endless batches of synthetic face crops with their ground truth.

    Each batch is a dict of torch tensors on ``device``:
    ``image (B, 3, S, S)`` float in [0, 1] (RGB); ``verts (B, N, 3)`` world metres in the
    topology; ``points2d (B, N, 2)`` crop pixels; ``R_t (B, 4, 4)`` row-vector world ->
    OpenGL camera; ``K (B, 3, 3)`` intrinsics of each capture's 800x800 frame (a phone
    camera of its own with probability ``generator.world.camera``, else the WCPA K); ``M (B, 2, 3)``
    image px -> crop px; ``mask (B, S, S)`` bool head pixels.

    Args:
        facemodel: `jmlr.facemodel.FaceModel`.
        topology: `jmlr.facemodel.Topology`.
        size: crop size S.
        batch_size: B.
        device: torch device (rasterization runs there; backgrounds and camera effects
            run on the CPU with OpenCV).
        seed: seeds the stream; the same seed gives the same batches.
        jitter: `CropJitter` (``CropJitter.none()`` for exact alignment).
        effects: apply blur/noise/colour cast/JPEG.
        generator: an existing `SyntheticFaceGenerator` to share (its device and
            renderer win).
        zoom: scale of the aligned face about the crop centre before jitter (< 1 leaves
            a margin around the JMLR template, so that stored crops can be re-jittered
            and resized later, see `jmlr.data.packed`).
        renderer: ``"gl"``, ``"torch"`` or ``"auto"`` (see `SyntheticFaceGenerator`).
    """

    def __init__(
        self,
        facemodel,
        topology,
        size: int = 256,
        batch_size: int = 32,
        device="cpu",
        seed: int = 0,
        jitter: CropJitter | None = None,
        effects: bool = True,
        generator: SyntheticFaceGenerator | None = None,
        zoom: float = 1.0,
        renderer: str | None = None,
    ):
        self.generator = generator or SyntheticFaceGenerator(facemodel, topology, device=device, renderer=renderer)
        self.device = self.generator.device
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.jitter = CropJitter() if jitter is None else jitter
        self.effects = effects
        self.zoom = float(zoom)
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def next_batch(self, return_params: bool = False) -> dict:
        """One batch (see the class docstring); with ``return_params`` also ``params``,
        the batch's `SceneParams` (identity and expression weights, ...)."""
        with numpy_threads_like_torch():
            return self._next_batch(return_params)

    def _next_batch(self, return_params: bool) -> dict:
        g, B, S, rng = self.generator, self.batch_size, self.size, self.rng
        params = g.sample_params(rng, B, phone_camera=True)
        verts = g.topology_vertices_np(params.identity, params.expression)  # (B, N, 3)
        K = g.frame_intrinsics(params)
        full = _project(verts.astype(np.float64), params.R_t.astype(np.float64), K)  # (B, N, 2)
        M = crop_transform(landmarks5_from_68(full[:, g.landmarks68]), S)
        if self.zoom != 1.0:
            M = compose_affine(zoom_about_centre(S, self.zoom), M)
        M = compose_affine(jitter_similarity(rng, B, S, self.jitter), M)
        K_crop = crop_projection(M, K)
        out = g.render(params, K=K_crop, size=(S, S), rng=rng)
        scale = np.clip(1.0 / similarity_scale(M), 0.3, 3.0)  # blur in full-frame pixels
        images = g.finish(
            out,
            rng,
            jpeg=self.effects,
            effects=self.effects,
            scale=scale,
            params=params,
            K=K_crop,
            frame_from_image=invert_affine(M),
        )
        dev = self.device
        image = torch.from_numpy(np.stack(images)).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        f32 = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=dev)  # noqa: E731
        return {
            "image": image,
            "verts": f32(verts),
            "points2d": f32(apply_affine(M, full)),
            "R_t": f32(params.R_t),
            "K": f32(K),
            "M": f32(M),
            "mask": out.mask.to(dev),
        } | ({"params": params} if return_params else {})

"""One synthetic capture: sample a person, an expression and a pose, and render it.

`SyntheticFaceGenerator` ties the pieces together and is shared by the challenge-layout
writer (`jmlr synth`), the on-the-fly crop stream and the benchmark. It holds the face
model's bases as torch tensors on one device, the render triangles, and per-vertex
appearance masks.

Randomness comes only from ``numpy.random.Generator`` objects passed in, so a seed
fixes every byte of the output.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from jmlr.geometry.camera import WCPA_IMAGE_SIZE, WCPA_PROJECTION_MATRIX, intrinsics_from_projection

from .appearance import (
    HeadRegions,
    SubjectAppearance,
    albedo_from_appearance,
    apply_camera_effects,
    composite,
    sample_background,
    sample_lighting,
    sample_subject_appearance,
    specular_and_occlusion,
)
from .render import Lighting, RenderOutput, render_mesh
from .sampler import FACIAL_ACTIONS, PoseSampler, sample_expression, sample_identity

__all__ = ["SceneParams", "SyntheticFaceGenerator", "wcpa_intrinsics", "render_materials", "RENDERERS",
           "numpy_threads_like_torch", "set_worker_threads"]

log = logging.getLogger(__name__)

RENDERERS = ("auto", "gl", "torch")
RENDERER_ENV = "JMLR_SYNTH_RENDERER"

# Materials drawn by the renderer. ICT-FaceKit's lacrimal fluid, eye-blend, occlusion
# and eyelash shells are transparent overlays in the original and look wrong opaque.
RENDER_MATERIALS = ("M_Face", "M_BackHead", "M_GumsTongue", "M_Teeth", "M_ScleraLeft",
                    "M_IrisLeft", "M_ScleraRight", "M_IrisRight")


_threadpools = None


def numpy_threads_like_torch():
    """Context in which numpy's BLAS and LAPACK use ``torch.get_num_threads()`` threads.

    The generator's numpy products are small, yet OpenBLAS starts a thread per core for
    them and the threads spin: on a loaded 2-core machine that cost the per-subject
    albedo 2.5x its single-thread CPU time. Data generation scales with processes.
    """
    global _threadpools
    if _threadpools is None:
        from threadpoolctl import ThreadpoolController

        _threadpools = ThreadpoolController()
    return _threadpools.limit(limits=torch.get_num_threads(), user_api="blas")


def set_worker_threads(threads: int = 1) -> None:
    """Set up this process for data generation with ``threads`` CPU threads.

    Sets torch's threads (numpy's BLAS follows them inside the generator), OpenCV's, and
    Mesa llvmpipe's rasterizer threads (``LP_NUM_THREADS``; none besides the caller when
    ``threads`` is 1, which costs the least CPU per image); and has glibc keep freed
    memory instead of unmapping it (the pipeline allocates and frees arrays of a few MB
    per image; faulting them back in cost about 1 ms of 30 per 160 px crop in paired
    runs). Call it first in each worker process: llvmpipe reads its setting when the
    process's GL context is made.
    """
    import ctypes
    import ctypes.util

    import cv2

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    os.environ["LP_NUM_THREADS"] = "0" if threads <= 1 else str(threads)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's largest on 64-bit)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass
    from .render_gl import has_context

    if has_context():
        log.warning("set_worker_threads: this process already has a GL context; LP_NUM_THREADS applies to new ones")


def wcpa_intrinsics() -> np.ndarray:
    """K (3, 3) of the 800x800 WCPA frame, from the challenge's projection matrix."""
    return intrinsics_from_projection(WCPA_PROJECTION_MATRIX, *WCPA_IMAGE_SIZE)


def render_materials(facemodel, hidden_vertices: np.ndarray | None = None) -> np.ndarray:
    """(T, 3) int64 render triangles of the opaque materials of a face model.

    Polygons whose corners are all in ``hidden_vertices`` (a (V,) bool mask, e.g. the
    cornea of `HeadRegions`) are left out.
    """
    names = list(facemodel.material_names)
    quads = np.asarray(facemodel.quads)
    keep = np.isin(np.asarray(facemodel.face_material), [names.index(m) for m in RENDER_MATERIALS if m in names])
    if hidden_vertices is not None:
        q = np.where(quads >= 0, quads, quads[:, :1])
        keep &= ~hidden_vertices[q].all(1)
    return facemodel.triangles(quads[keep])


@dataclass
class SceneParams:
    """Parameters of B captures.

    identity (B, K) and expression (B, E) float32 weights; R_t (B, 4, 4) float32
    row-vector world -> OpenGL camera; actions: B facial-action names;
    appearance: B `SubjectAppearance`.
    """

    identity: np.ndarray
    expression: np.ndarray
    R_t: np.ndarray
    actions: list[str]
    appearance: list[SubjectAppearance]

    def __len__(self) -> int:
        return len(self.identity)

    @staticmethod
    def concat(parts: list[SceneParams]) -> SceneParams:
        return SceneParams(
            np.concatenate([p.identity for p in parts]), np.concatenate([p.expression for p in parts]),
            np.concatenate([p.R_t for p in parts]), [a for p in parts for a in p.actions],
            [a for p in parts for a in p.appearance],
        )


def _per_image(rng, batch: int) -> list[np.random.Generator]:
    """One generator per image: the list given, or the same shared generator B times."""
    if isinstance(rng, (list, tuple)):
        if len(rng) != batch:
            raise ValueError(f"{len(rng)} generators for {batch} images")
        return list(rng)
    return [rng or np.random.default_rng()] * batch


class SyntheticFaceGenerator:
    """Sampler + renderer of synthetic WCPA-style captures.

    Args:
        facemodel: a `jmlr.facemodel.FaceModel`.
        topology: a `jmlr.facemodel.Topology` (ground-truth vertices are its subset).
        device: torch device for geometry and rasterization.
        K: (3, 3) intrinsics of the full frame (default: WCPA).
        image_size: (W, H) of the full frame.
        pose_sampler: a `PoseSampler`.
        identity_scale: standard deviation of identity weights.
        renderer: ``"gl"`` (OpenGL on a headless EGL context, `jmlr.synth.render_gl`),
            ``"torch"`` (the PyTorch reference, `jmlr.synth.render`) or ``"auto"``: GL
            when this process can create a context, else torch (the reason is logged).
            Default: ``$JMLR_SYNTH_RENDERER`` or ``"auto"``. Resolved on first render,
            in the process that renders (see `renderer_name`).
    """

    def __init__(self, facemodel, topology, device="cpu", K: np.ndarray | None = None,
                 image_size: tuple[int, int] = WCPA_IMAGE_SIZE, pose_sampler: PoseSampler | None = None,
                 identity_scale: float = 1.0, renderer: str | None = None):
        self.facemodel = facemodel
        self.topology = topology
        self.device = torch.device(device)
        self.K = np.asarray(wcpa_intrinsics() if K is None else K, np.float64)
        self.image_size = tuple(int(s) for s in image_size)
        self.pose_sampler = pose_sampler or PoseSampler()
        self.identity_scale = identity_scale
        self.expression_names = tuple(facemodel.expression_names)
        self.bases = facemodel.torch_bases(self.device)
        self.regions = HeadRegions.from_facemodel(facemodel)
        self.faces = torch.as_tensor(render_materials(facemodel, self.regions.cornea), device=self.device)
        spec, occ = specular_and_occlusion(self.regions)
        self.specular = torch.as_tensor(spec, device=self.device)
        self.occlusion = torch.as_tensor(occ, device=self.device)
        self.topology_index = torch.as_tensor(np.asarray(topology.ict_index), dtype=torch.long, device=self.device)
        self.landmarks68 = np.asarray(topology.landmarks68)
        self._albedo_cache: dict[int, tuple[SubjectAppearance, np.ndarray]] = {}
        self._eyeballs = [facemodel.region(f"eyeball_{side}") for side in ("left", "right")
                          if f"eyeball_{side}" in facemodel.region_names]
        # float32 copies of the bases on the topology's vertices: the fp16 model would
        # otherwise be gathered and converted for every ground-truth head.
        idx = np.asarray(topology.ict_index)
        self._topo_neutral = np.ascontiguousarray(facemodel.neutral[idx], np.float32).reshape(-1)
        self._topo_identity = facemodel.identity_basis[:, idx].astype(np.float32).reshape(facemodel.num_identity, -1)
        self._topo_expression = facemodel.expression_basis[:, idx].astype(np.float32).reshape(
            facemodel.num_expressions, -1)
        self.renderer = (renderer or os.environ.get(RENDERER_ENV) or "auto").lower()
        if self.renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}, not {self.renderer!r}")
        self._gl_fallback_logged = False

    # ------------------------------------------------------------------ backend
    def _gl(self):
        """This process's `GLRenderer`, or None when rendering with torch."""
        if self.renderer == "torch":
            return None
        from .render_gl import GLUnavailable, gl_renderer

        try:
            return gl_renderer()
        except GLUnavailable as exc:
            if self.renderer == "gl":
                raise
            if not self._gl_fallback_logged:
                log.warning("synthetic renderer: OpenGL unavailable, using the PyTorch renderer (%s)", exc)
                self._gl_fallback_logged = True
            return None

    @property
    def renderer_name(self) -> str:
        """``"gl"`` or ``"torch"``: the backend this process renders with."""
        return "torch" if self._gl() is None else "gl"

    # ------------------------------------------------------------------ sampling
    def sample_subject(self, rng: np.random.Generator) -> tuple[np.ndarray, SubjectAppearance]:
        """One person: identity weights (K,) and appearance."""
        ident = sample_identity(rng, 1, self.facemodel.num_identity, self.identity_scale)[0]
        return ident, sample_subject_appearance(rng)

    def sample_params(self, rng, batch: int, subjects=None, actions=None,
                      max_tries: int = 20) -> SceneParams:
        """Draw B captures; ``subjects`` (list of (identity, appearance)) and ``actions``
        (list of names) fix those parts, otherwise they are random.

        Poses are redrawn until the 68 landmarks land inside the frame. ``rng`` may be
        a list of one generator per image (each image is then drawn from its own).
        """
        if isinstance(rng, (list, tuple)):
            return SceneParams.concat([
                self.sample_params(r, 1, None if subjects is None else [subjects[i]],
                                   None if actions is None else [actions[i]], max_tries)
                for i, r in enumerate(_per_image(rng, batch))])
        if subjects is None:
            subjects = [self.sample_subject(rng) for _ in range(batch)]
        if actions is None:
            actions = [FACIAL_ACTIONS[int(rng.integers(len(FACIAL_ACTIONS)))] for _ in range(batch)]
        identity = np.stack([s[0] for s in subjects]).astype(np.float32)
        expression = np.stack([sample_expression(rng, self.expression_names, a) for a in actions])
        R_t = np.zeros((batch, 4, 4), np.float32)
        verts = self.topology_vertices_np(identity, expression)
        lm = verts[:, self.landmarks68]
        todo = np.arange(batch)
        for _ in range(max_tries):
            cand, _ = self.pose_sampler.sample(rng, len(todo), self.K, self.image_size)
            R_t[todo] = cand
            p = _project(lm[todo], cand, self.K)
            w, h = self.image_size
            inside = ((p[..., 0] >= 0).all(1) & (p[..., 0] <= w - 1).all(1)
                      & (p[..., 1] >= 0).all(1) & (p[..., 1] <= h - 1).all(1))
            todo = todo[~inside]
            if len(todo) == 0:
                break
        return SceneParams(identity, expression, R_t, list(actions), [s[1] for s in subjects])

    # ------------------------------------------------------------------ geometry
    def head_vertices(self, identity: np.ndarray, expression: np.ndarray) -> torch.Tensor:
        """Full-head vertices (B, V, 3) world metres on the generator's device.

        Evaluated one head at a time: a batched GEMM may round differently with the
        batch size, and a seed must give the same bytes whatever the batching.
        """
        i = torch.as_tensor(identity, dtype=torch.float32, device=self.device)
        e = torch.as_tensor(expression, dtype=torch.float32, device=self.device)
        b = self.bases
        out = torch.stack([b.neutral.reshape(-1) + i[k:k + 1] @ b.identity[: i.shape[1]]
                           + e[k:k + 1] @ b.expression[: e.shape[1]] for k in range(len(i))]).reshape(len(i), -1, 3)
        return out

    def topology_vertices_np(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """Ground-truth vertices (B, N, 3) float32 world metres in the topology.

        One head at a time (see `head_vertices`), with the same arithmetic as
        ``FaceModel.vertices(..., index=topology.ict_index)`` on cached float32 bases.
        """
        identity = np.asarray(identity, np.float32)
        expression = np.asarray(expression, np.float32)
        bi = self._topo_identity[: identity.shape[1]]
        be = self._topo_expression[: expression.shape[1]]
        out = np.stack([self._topo_neutral + identity[k] @ bi + expression[k] @ be for k in range(len(identity))])
        return out.reshape(len(identity), -1, 3)

    # ------------------------------------------------------------------ rendering
    def albedo(self, appearance: SubjectAppearance) -> np.ndarray:
        """Per-vertex albedo (V, 3) of a subject, computed once per appearance object."""
        key = id(appearance)
        hit = self._albedo_cache.get(key)
        if hit is None or hit[0] is not appearance:
            if len(self._albedo_cache) > 256:
                self._albedo_cache.clear()
            hit = (appearance, albedo_from_appearance(self.regions, appearance))
            self._albedo_cache[key] = hit
        return hit[1]

    def render(self, params: SceneParams, verts: torch.Tensor | None = None, K: np.ndarray | None = None,
               size: tuple[int, int] | None = None, rng: np.random.Generator | None = None) -> RenderOutput:
        """Shade and rasterize the heads (no background, no camera effects).

        ``K`` (3, 3) or (B, 3, 3) defaults to the full-frame intrinsics and ``size``
        (W, H) to the full frame; a crop folded into K renders the crop directly.
        ``rng`` draws the lighting: one generator, or a list of one per image (so
        that an image does not depend on its batch neighbours).
        """
        B = len(params.identity)
        rngs = _per_image(rng, B)
        if verts is None:
            verts = self.head_vertices(params.identity, params.expression)
        verts = self._recess_eyeballs(verts)
        albedo = torch.as_tensor(np.stack([self.albedo(a) for a in params.appearance]), device=self.device)
        parts = ([sample_lighting(r, 1) for r in rngs] if isinstance(rng, (list, tuple))
                 else [sample_lighting(rngs[0], B)])
        lighting = Lighting(*(torch.cat(ts) for ts in zip(*((q.ambient, q.directions, q.colors, q.specular, q.shininess)
                                                             for q in parts)))).to(self.device)
        K_t = torch.as_tensor(self.K if K is None else K, dtype=torch.float32, device=self.device)
        w, h = size or self.image_size
        R_t = torch.as_tensor(params.R_t, dtype=torch.float32, device=self.device)
        gl = self._gl()
        return (render_mesh if gl is None else gl.render_mesh)(
            verts, self.faces, R_t, K_t, (h, w), albedo, lighting,
            specular_mask=self.specular.expand(B, -1), occlusion=self.occlusion.expand(B, -1))

    def _recess_eyeballs(self, verts: torch.Tensor, shrink: float = 0.97) -> torch.Tensor:
        """Shrink the eyeballs about their centres by ~0.5 mm for rendering only.

        Closed lids of the blink shapes graze the eyeball surface; without this the
        sclera pokes through them as speckles. Ground truth is unaffected (the
        topology has no eyeball vertices).
        """
        if not self._eyeballs:
            return verts
        verts = verts.clone()
        for sl in self._eyeballs:
            eye = verts[:, sl]
            c = eye.mean(1, keepdim=True)
            verts[:, sl] = c + (eye - c) * shrink
        return verts

    def finish(self, out: RenderOutput, rng, jpeg: bool = True, effects: bool = True,
               scale=None) -> list[np.ndarray]:
        """Composite the renders over random backgrounds and apply camera effects.

        ``rng``: one generator or one per image. ``scale``: (B,) or scalar size of a
        render pixel relative to a full-frame pixel (blur is scaled by it); default
        the render size over the frame size.
        Returns B uint8 (H, W, 3) RGB images.
        """
        images = out.image.detach().cpu().numpy()
        masks = out.mask.detach().cpu().numpy()
        h, w = images.shape[1:3]
        rngs = _per_image(rng, len(images))
        scales = np.broadcast_to(max(h, w) / max(self.image_size) if scale is None else scale, (len(images),))
        result = []
        for img, m, r, sc in zip(images, masks, rngs, scales):
            im = composite(img, m, sample_background(r, h, w))
            if effects:
                im = apply_camera_effects(im, r, jpeg=jpeg, scale=float(sc))
            result.append(im)
        return result


def _project(V: np.ndarray, R_t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """World points (B, N, 3) -> pixels (B, N, 2) (row-vector R_t, OpenGL camera)."""
    cam = V @ R_t[:, :3, :3] + R_t[:, None, 3, :3]
    cv = cam * np.array([1.0, -1.0, -1.0])
    p = cv @ np.asarray(K).T
    return p[..., :2] / np.maximum(p[..., 2:3], 1e-9)

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
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from jmlr.geometry.camera import (
    WCPA_IMAGE_SIZE,
    WCPA_PROJECTION_MATRIX,
    intrinsics_from_projection,
    transform_points,
)
from jmlr.malloc import keep_freed_memory

from . import render_gl  # by module: `gl_renderer` is looked up per call (tests replace it)
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
from .backgrounds import photo_backgrounds
from .camera import PhoneCameraModel
from .environment import CaptureContext, colour_lighting, finish_capture
from .heads import HeadAssets, HeadConfig, SubjectMesh
from .occluders import Anchors
from .render import Lighting, RenderOutput, render_mesh
from .sampler import FACIAL_ACTIONS, PoseSampler, sample_expression, sample_identity
from .world import ElementRngs, WorldConfig, element_rngs

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
        from threadpoolctl import ThreadpoolController  # only data generation needs it, once

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
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    os.environ["LP_NUM_THREADS"] = "0" if threads <= 1 else str(threads)
    keep_freed_memory()
    if render_gl.has_context():
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
    appearance: B `SubjectAppearance`; K: (B, 3, 3) intrinsics of each frame when the
    captures have cameras of their own (phone cameras, `jmlr.synth.camera`), else None
    (the generator's K).
    """

    identity: np.ndarray
    expression: np.ndarray
    R_t: np.ndarray
    actions: list[str]
    appearance: list[SubjectAppearance]
    K: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.identity)

    @staticmethod
    def concat(parts: list[SceneParams]) -> SceneParams:
        return SceneParams(
            np.concatenate([p.identity for p in parts]), np.concatenate([p.expression for p in parts]),
            np.concatenate([p.R_t for p in parts]), [a for p in parts for a in p.actions],
            [a for p in parts for a in p.appearance],
            None if parts[0].K is None else np.concatenate([p.K for p in parts]),
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
        world: `jmlr.synth.world.WorldConfig`, the probability of each world and camera
            element (photo backgrounds, coloured light, shadows, occluders, phone
            cameras and their effects). Default: ``$JMLR_SYNTH_WORLD`` or all on;
            `WorldConfig.legacy()` gives the earlier backgrounds and effects byte for byte.
        heads: `jmlr.synth.heads.HeadConfig`, the probability of each head element (hair,
            brows, eyes, skin detail, clothing, ...). Default: ``$JMLR_SYNTH_HEADS`` or all
            on; `HeadConfig.legacy()` draws the earlier bald heads byte for byte. Hair and
            torso add triangles (`render_faces`); `faces` stays the head's own.
    """

    def __init__(self, facemodel, topology, device="cpu", K: np.ndarray | None = None,
                 image_size: tuple[int, int] = WCPA_IMAGE_SIZE, pose_sampler: PoseSampler | None = None,
                 identity_scale: float = 1.0, renderer: str | None = None, heads: HeadConfig | None = None,
                 world: WorldConfig | None = None):
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
        self._albedo_cache: dict[int, tuple[SubjectAppearance, SubjectMesh]] = {}
        self.heads = HeadConfig.from_env() if heads is None else heads
        self.head_assets = HeadAssets(facemodel, self.regions, self.heads, _skin_triangles(facemodel)) \
            if self.heads.any else None
        self.render_faces = self.faces
        if self.head_assets is not None and self.head_assets.num_extra:
            extra = torch.as_tensor(self.head_assets.faces, device=self.device)
            self.render_faces = torch.cat([self.faces, extra])
            self._neutral = torch.as_tensor(np.asarray(facemodel.neutral, np.float32), device=self.device)
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
        self.world = WorldConfig.from_env() if world is None else world
        self.photos = photo_backgrounds() if self.world.photo_background > 0 else None
        self.phone_camera = PhoneCameraModel()

    # ------------------------------------------------------------------ backend
    def _gl(self):
        """This process's `GLRenderer`, or None when rendering with torch."""
        if self.renderer == "torch":
            return None
        try:
            return render_gl.gl_renderer()
        except render_gl.GLUnavailable as exc:
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
        return ident, sample_subject_appearance(rng, self.heads)

    def sample_params(self, rng, batch: int, subjects=None, actions=None,
                      max_tries: int = 20, phone_camera: bool = False) -> SceneParams:
        """Draw B captures; ``subjects`` (list of (identity, appearance)) and ``actions``
        (list of names) fix those parts, otherwise they are random.

        Poses are redrawn until the 68 landmarks land inside the frame. ``rng`` may be
        a list of one generator per image (each image is then drawn from its own).
        With ``phone_camera`` each capture gets, with the probability ``world.camera``, a
        phone camera of its own (`SceneParams.K`, a focal length and distance from
        `jmlr.synth.camera.PhoneCameraModel`); the other captures use the generator's K.
        """
        if isinstance(rng, (list, tuple)):
            return SceneParams.concat([
                self.sample_params(r, 1, None if subjects is None else [subjects[i]],
                                   None if actions is None else [actions[i]], max_tries, phone_camera)
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
        if phone_camera and self.world.camera > 0:
            Ks, R_t = self._phone_poses(rng, lm, max_tries)
            return SceneParams(identity, expression, R_t, list(actions), [s[1] for s in subjects], Ks)
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

    def _phone_poses(self, rng: np.random.Generator, lm: np.ndarray, max_tries: int) -> tuple[np.ndarray, np.ndarray]:
        """Per capture: K (B, 3, 3) of a phone camera (or the generator's) and a pose
        R_t (B, 4, 4) at its distance with the 68 landmarks ``lm`` (B, 68, 3) in the frame."""
        B = len(lm)
        cams = element_rngs(rng, B)  # drawn without advancing rng
        Ks = np.repeat(self.K[None], B, 0)
        R_t = np.zeros((B, 4, 4), np.float32)
        w, h = self.image_size
        for b in range(B):
            sampler = self.pose_sampler
            rc = cams[b]["camera"]
            if rc.random() < self.world.camera:
                Ks[b], _, dist = self.phone_camera.sample(rc, self.image_size)
                sampler = self.phone_camera.pose_sampler(sampler, dist)
            for _ in range(max_tries):
                R_t[b] = sampler.sample(rng, 1, Ks[b], self.image_size)[0][0]
                p = _project(lm[b:b + 1], R_t[b:b + 1], Ks[b])[0]
                if (p >= 0).all() and (p[:, 0] <= w - 1).all() and (p[:, 1] <= h - 1).all():
                    break
        return Ks, R_t

    def frame_intrinsics(self, params: SceneParams) -> np.ndarray:
        """K (B, 3, 3) of each capture's frame: its own camera's, else the generator's."""
        return np.repeat(self.K[None], len(params), 0) if params.K is None else np.asarray(params.K, np.float64)

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
        """Per-vertex albedo (V, 3) of a subject's head, computed once per appearance object."""
        return self.subject_mesh(appearance).albedo[: len(self.regions.positions)]

    def subject_mesh(self, appearance: SubjectAppearance) -> SubjectMesh:
        """A subject's shading inputs and extra geometry (hair, torso) in the layout of
        `render_faces`, computed once per appearance object."""
        return self.subject_meshes([appearance])[0]

    def subject_meshes(self, appearances: Sequence[SubjectAppearance]) -> list[SubjectMesh]:
        """`subject_mesh` of each appearance; the hair of the subjects not cached yet is
        built in one batch (`HairAssets.build_many`: the same hair, at about half the cost)."""
        cache = self._albedo_cache
        meshes: dict[int, SubjectMesh] = {}
        todo: dict[int, SubjectAppearance] = {}
        for a in appearances:
            hit = cache.get(id(a))
            if hit is not None and hit[0] is a:  # the entry holds the object: its id is not reused
                meshes[id(a)] = hit[1]
            else:
                todo[id(a)] = a
        if todo:
            if len(cache) + len(todo) > 256:
                cache.clear()
            ha = self.head_assets
            hair_assets = None if ha is None else ha.hair
            hair_styles = {key: a.style.hair for key, a in todo.items()
                           if a.style is not None and a.style.hair is not None}
            hair = {} if hair_assets is None else dict(
                zip(hair_styles, hair_assets.build_many(list(hair_styles.values()))))
            spec, occ = self.specular.cpu().numpy(), self.occlusion.cpu().numpy()
            for key, a in todo.items():
                albedo = albedo_from_appearance(self.regions, a, None if ha is None else ha.detail)
                if ha is None or a.style is None:
                    mesh = SubjectMesh(albedo, spec, occ, np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
                else:
                    mesh = ha.subject_mesh(a.style, albedo, spec, occ, a.skin, hair=hair.get(key))
                cache[key] = (a, mesh)
                meshes[key] = mesh
        return [meshes[id(a)] for a in appearances]

    def dressed_vertices(self, verts: torch.Tensor, meshes: list[SubjectMesh]) -> torch.Tensor:
        """Head vertices (B, V, 3) followed by each subject's extra vertices (B, V + X, 3):
        each sits at ``rest + head[anchor] - neutral[anchor]``."""
        if self.render_faces is self.faces:
            return verts
        dev = verts.device
        rest = torch.as_tensor(np.stack([m.rest for m in meshes]), device=dev)
        anchor = torch.as_tensor(np.stack([m.anchor for m in meshes]), device=dev)
        moved = torch.gather(verts, 1, anchor[..., None].expand(-1, -1, 3)) - self._neutral.to(dev)[anchor]
        return torch.cat([verts, rest + moved], 1)

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
        meshes = self.subject_meshes(params.appearance)
        verts = self.dressed_vertices(self._recess_eyeballs(verts), meshes)
        stack = lambda k: torch.as_tensor(np.stack([getattr(m, k) for m in meshes]), device=self.device)  # noqa: E731
        albedo = stack("albedo")
        parts = ([sample_lighting(r, 1) for r in rngs] if isinstance(rng, (list, tuple))
                 else [sample_lighting(rngs[0], B)])
        lighting = Lighting(*(torch.cat(ts) for ts in zip(*((q.ambient, q.directions, q.colors, q.specular, q.shininess)
                                                             for q in parts)))).to(self.device)
        lighting.shininess = lighting.shininess * torch.tensor([m.gloss for m in meshes], device=self.device)
        if self.world.colour_light > 0:
            lighting = colour_lighting(lighting, _world_rngs(rng, B), self.world.colour_light)
        K_t = torch.as_tensor(self.frame_intrinsics(params) if K is None else K, dtype=torch.float32,
                              device=self.device)
        w, h = size or self.image_size
        R_t = torch.as_tensor(params.R_t, dtype=torch.float32, device=self.device)
        gl = self._gl()
        out = (render_mesh if gl is None else gl.render_mesh)(
            verts, self.render_faces, R_t, K_t, (h, w), albedo, lighting,
            specular_mask=stack("specular"), occlusion=stack("occlusion"))
        out.lighting = lighting.to(out.image.device)
        return out

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
               scale=None, params: SceneParams | None = None, K: np.ndarray | None = None,
               frame_from_image: np.ndarray | None = None) -> list[np.ndarray]:
        """Composite the renders over random backgrounds and apply camera effects.

        ``rng``: one generator or one per image. ``scale``: (B,) or scalar size of a
        render pixel relative to a full-frame pixel (blur is scaled by it); default
        the render size over the frame size.
        With any `world` element on, `jmlr.synth.environment.finish_capture` makes each
        picture instead (photo backgrounds, shadows, occluders, phone camera); it needs
        the captures' ``params`` for occluders and shadows, ``K`` (3, 3) or (B, 3, 3)
        the renders were made with (default the frames') and ``frame_from_image``
        (B, 2, 3) render px -> frame px for crops (vignetting follows the frame).
        Returns B uint8 (H, W, 3) RGB images.
        """
        if self.world.any:
            return self._finish_world(out, rng, jpeg, effects, params, K, frame_from_image)
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

    def _finish_world(self, out: RenderOutput, rng, jpeg: bool, effects: bool, params: SceneParams | None,
                      K: np.ndarray | None, frame_from_image: np.ndarray | None) -> list[np.ndarray]:
        images = out.image.detach().cpu().numpy()
        masks = out.mask.detach().cpu().numpy()
        depths = out.depth.detach().cpu().numpy()
        B = len(images)
        rngs = _world_rngs(rng, B)
        config = self.world if effects else self.world.without_camera_effects()
        lights = getattr(out, "lighting", None)
        frame_K = self.frame_intrinsics(params) if params is not None else np.repeat(self.K[None], B, 0)
        render_K = frame_K if K is None else np.broadcast_to(np.asarray(K, np.float64), (B, 3, 3))
        lm = None
        if params is not None:
            lm = self.topology_vertices_np(params.identity, params.expression)[:, self.landmarks68].astype(np.float64)
        result = []
        for b in range(B):
            ctx = CaptureContext(frame_size=self.image_size, principal_point=(frame_K[b, 0, 2], frame_K[b, 1, 2]),
                                 frame_from_image=None if frame_from_image is None else frame_from_image[b])
            if lm is not None:
                R_t = params.R_t[b].astype(np.float64)
                ctx.anchors = Anchors(lm[b], R_t[:3, :3], R_t[3, :3], render_K[b])
                ap = params.appearance[b]
                ctx.colours = {"skin": np.asarray(ap.skin), "hair": np.asarray(ap.hair)}
            if lights is not None:
                ctx.light_dir = lights.directions[b, 0].detach().cpu().numpy().astype(np.float64)
            result.append(finish_capture(images[b], masks[b], depths[b], rngs[b], config, ctx, self.photos, jpeg))
        return result



def _skin_triangles(facemodel) -> np.ndarray:
    """(T, 3) triangles of the skin materials (face and back of the head)."""
    names = list(facemodel.material_names)
    skin = [names.index(m) for m in ("M_Face", "M_BackHead") if m in names]
    quads = np.asarray(facemodel.quads)
    return facemodel.triangles(quads[np.isin(np.asarray(facemodel.face_material), skin)])


def _world_rngs(rng, batch: int) -> list[ElementRngs]:
    """One mapping of element generators per image (`jmlr.synth.world.element_rngs`), derived
    from the image's generator, or from a shared one, without advancing it."""
    if isinstance(rng, (list, tuple)):
        return [element_rngs(r, 1)[0] for r in _per_image(rng, batch)]
    return element_rngs(rng or np.random.default_rng(), batch)


def _project(V: np.ndarray, R_t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """World points (B, N, 3) -> pixels (B, N, 2) (row-vector R_t, OpenGL camera);
    K (3, 3) or one per capture (B, 3, 3)."""
    cam = transform_points(V, R_t)
    cv = cam * np.array([1.0, -1.0, -1.0])
    p = cv @ np.swapaxes(np.asarray(K), -1, -2)
    return p[..., :2] / np.maximum(p[..., 2:3], 1e-9)

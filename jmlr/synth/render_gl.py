"""OpenGL rasterization and shading of the synthetic heads on a headless EGL context.

The same code runs on Mesa's llvmpipe (CPU) and on a GPU's EGL driver (NVIDIA), through
moderngl. It keeps the conventions and outputs of the PyTorch reference
(`jmlr.synth.render`): vertices are projected with the formula of `project_to_screen`,
pixel centres are integer coordinates, faces are culled unless counter-clockwise as the
camera sees them, and the nearest face wins.

Two entry points on `GLRenderer`:

* `GLRenderer.rasterize` -> `Fragments`, a drop-in for `render.rasterize`: GL's
  depth-tested draw picks the visible triangle of each pixel, and barycentrics and depth
  are then evaluated at the pixel centres by the reference's own code
  (`render.fragments_from_faces`), so `render.interpolate`/`shade` work unchanged.
* `GLRenderer.render_mesh` -> `RenderOutput`, the fast path: the same Lambert +
  Blinn-Phong as `render.shade` runs in the fragment shader on attributes that GL
  interpolates perspective-correctly; only the image and depth come back.

Each image of a batch is drawn into a framebuffer of its own (one draw call each) and
all are read back at the end. On llvmpipe the per-triangle work (vertex fetch,
clipping, setup, binning) is single-threaded and pixel work is spread over
``LP_NUM_THREADS`` threads: scale with processes. A context belongs to one process:
`gl_renderer` makes one lazily per process, and refuses in a child forked from a
process that has one (EGL does not survive ``fork``; use the ``spawn`` start method,
or render only in the workers).
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import torch

from jmlr.geometry.camera import transform_points

from .render import NEAR_M, Fragments, Lighting, RenderOutput, face_normals, fragments_from_faces, vertex_normals

__all__ = ["GLRenderer", "GLUnavailable", "gl_renderer", "gl_available", "has_context"]

log = logging.getLogger(__name__)

MAX_LIGHTS = 4
_FRAMEBUFFER_BYTES = 128 << 20  # framebuffer memory of one pass (a batch of 800x800 frames takes several)

# Screen point (pixels, OpenCV depth) -> clip space of the image's framebuffer. Window x is
# u + 0.5 (pixel centres at integers); window row r covers y in [r, r + 1) and the
# readback returns row 0 first, so image rows come back top first with no flip.
# w = z gives GL's perspective-correct interpolation; z_ndc = a + b / z runs from -1 at
# the near plane to 1 at the far one. The clip position must stay linear in the camera
# point (h = K X, no division): GL clips a triangle that reaches behind the camera by
# interpolating its corners' clip positions, and a corner divided by a clamped depth
# would send the clipped triangle across the whole frame.
_VERTEX_HEADER = """
#version 330
uniform vec2 size;
uniform vec2 depth_ab;
vec4 clip_from_camera(vec3 h) {  // h = K X: (pixel x, pixel y) * OpenCV depth, OpenCV depth
    return vec4(2.0 * (h.xy + 0.5 * h.z) / size - h.z, depth_ab.x * h.z + depth_ab.y, h.z);
}
vec4 clip_position(vec3 screen) {  // pixel x, pixel y, OpenCV depth > 0
    return clip_from_camera(vec3(screen.xy * screen.z, screen.z));
}
"""

_IDS_VERTEX = _VERTEX_HEADER + """
in vec3 in_screen;
void main() { gl_Position = clip_position(in_screen); }
"""

_IDS_FRAGMENT = """
#version 330
out vec2 out_id;  // face index + 1 (0: empty), OpenCV depth
void main() { out_id = vec2(float(gl_PrimitiveID + 1), 1.0 / gl_FragCoord.w); }
"""

_SHADE_VERTEX = _VERTEX_HEADER + """
uniform mat3 rotation;    // R of the row-vector R_t, uploaded row-major: GLSL sees R^T
uniform vec3 translation;
uniform mat3 intrinsics;  // K, uploaded row-major: GLSL sees K^T
uniform float gamma;
in vec3 in_world;
in vec3 in_normal;  // world space
in vec3 in_albedo;  // sRGB-like, linearised here
in vec2 in_so;      // specular scale, ambient occlusion
out vec3 v_pos;     // OpenGL camera space
out vec3 v_normal;
out vec3 v_albedo;
out vec2 v_so;
void main() {
    // render.project_to_screen: V @ R + T, OpenGL -> OpenCV, K, divide.
    v_pos = rotation * in_world + translation;
    vec3 h = vec3(v_pos.x, -v_pos.y, -v_pos.z) * intrinsics;
    gl_Position = clip_from_camera(h);
    v_normal = rotation * in_normal;
    v_albedo = pow(clamp(in_albedo, 0.0, 1.0), vec3(gamma));
    v_so = in_so;
}
"""

# render.shade, term by term (keep the two in step).
_SHADE_FRAGMENT = """
#version 330
#define MAX_LIGHTS %d
uniform vec3 ambient;
uniform vec3 light_dir[MAX_LIGHTS];
uniform vec3 light_col[MAX_LIGHTS];
uniform int num_lights;
uniform float specular;
uniform float shininess;
uniform float gamma;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_albedo;
in vec2 v_so;
out vec4 out_color;  // sRGB-like rgb, OpenCV depth
vec3 unit(vec3 v) { return v / max(length(v), 1e-12); }
void main() {
    vec3 n = unit(v_normal);
    vec3 view = unit(-v_pos);
    vec3 diffuse = ambient;
    vec3 spec = vec3(0.0);
    for (int i = 0; i < num_lights; ++i) {
        float ndl = max(dot(light_dir[i], n), 0.0);
        diffuse += ndl * light_col[i];
        float ndh = max(dot(unit(light_dir[i] + view), n), 0.0);
        spec += (ndl > 0.0 ? pow(ndh, shininess) : 0.0) * light_col[i];
    }
    spec *= specular * v_so.x * v_so.y;
    diffuse *= v_so.y;
    vec3 rgb = pow(clamp(v_albedo * diffuse + spec, 0.0, 1.0), vec3(1.0 / gamma));
    out_color = vec4(rgb, 1.0 / gl_FragCoord.w);
}
""" % MAX_LIGHTS  # noqa: UP031 - the GLSL braces would all need doubling in an f-string


class GLUnavailable(RuntimeError):
    """No headless OpenGL context could be created; the message says why."""


def _depth_range(z: np.ndarray) -> tuple[float, float]:
    """Near and far planes around the depths ``z`` of one image (metres).

    Tight planes keep depth-buffer resolution far below the 0.5 mm between skin and
    the teeth or eyes behind it (about 0.1 um at 1 m).
    """
    zmin, zmax = float(z.min()), float(z.max())
    near = max(0.5 * zmin, 1e-3)
    return near, max(2.0 * zmax, near * 4.0)


def _depth_coefficients(near: float, far: float) -> tuple[float, float]:
    """(a, b) with ``a + b / z`` = -1 at ``near`` and 1 at ``far``."""
    b = 2.0 / (1.0 / far - 1.0 / near)
    return 1.0 - b / far, b


class GLRenderer:
    """A headless OpenGL context with the programs and buffers of the synthetic renderer.

    Args:
        device_index: EGL device (``None``: ``$GLCONTEXT_DEVICE_INDEX`` or the first).

    Raises:
        GLUnavailable: no context could be created (no libEGL, no driver, ...).

    Not thread-safe, and bound to the process that made it: use `gl_renderer`.
    """

    def __init__(self, device_index: int | None = None):
        try:
            import moderngl
        except ImportError as exc:  # pragma: no cover - moderngl is a dependency
            raise GLUnavailable(f"moderngl is not installed ({exc})") from exc
        kwargs = {} if device_index is None else {"device_index": int(device_index)}
        try:
            self.ctx = moderngl.create_context(standalone=True, backend="egl", require=330, **kwargs)
        except Exception as exc:  # glcontext raises bare Exceptions
            raise GLUnavailable(f"no headless EGL OpenGL 3.3 context: {exc}") from exc
        self._moderngl = moderngl
        self.pid = os.getpid()
        ctx = self.ctx
        self.renderer = ctx.info.get("GL_RENDERER", "?")
        self.max_size = min(int(ctx.info["GL_MAX_RENDERBUFFER_SIZE"]), int(ctx.info["GL_MAX_VIEWPORT_DIMS"][0]))
        self._ids = ctx.program(vertex_shader=_IDS_VERTEX, fragment_shader=_IDS_FRAGMENT)
        self._shade = ctx.program(vertex_shader=_SHADE_VERTEX, fragment_shader=_SHADE_FRAGMENT)
        self._buffers: dict[str, object] = {}
        self._replicated = None  # (faces, V, batch capacity) of the "ids_index" buffer
        self._vaos: dict[str, object] = {}
        self._fbos: dict[tuple, list] = {}
        ctx.enable(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        ctx.depth_func = "<"  # draw order is face order, so ties go to the lower face id
        # A camera-CCW face has negative signed area in pixel coordinates (y down), and
        # window coordinates keep that orientation: it is clockwise for GL.
        ctx.front_face = "cw"
        ctx.cull_face = "back"

    # ------------------------------------------------------------------ resources
    def _upload(self, name: str, data: np.ndarray):
        """Copy ``data`` into the named buffer, reallocating (and dropping the vertex
        arrays that use it) when it has grown."""
        buf = self._buffers.get(name)
        if buf is None or buf.size < data.nbytes:
            if buf is not None:
                buf.release()
            buf = self.ctx.buffer(reserve=max(data.nbytes, 4) * 5 // 4)
            self._buffers[name] = buf
            for vao in self._vaos.values():
                vao.release()
            self._vaos.clear()
        buf.write(np.ascontiguousarray(data))
        return buf

    def _replicated_faces(self, faces: torch.Tensor, batch: int, num_vertices: int) -> list[tuple[int, int]]:
        """Index buffer ``ids_index``: one copy of ``faces`` per image, offset by b * V
        (cached while faces and V stay the same). Returns the (first, count) index
        range of each image."""
        f = faces.detach().cpu()
        hit = self._replicated
        if hit is None or hit[1] != num_vertices or hit[2] < batch or not torch.equal(hit[0], f):
            if num_vertices * batch >= 1 << 31:
                raise ValueError("too many vertices in one batch for 32-bit indices")
            idx = f.numpy().astype(np.int64)[None] + (np.arange(batch) * num_vertices)[:, None, None]
            self._upload("ids_index", idx.astype(np.int32))
            self._replicated = (f.clone(), num_vertices, batch)
        n = 3 * int(faces.shape[0])
        return [(b * n, n) for b in range(batch)]

    def _vao(self, kind: str):
        vao = self._vaos.get(kind)
        if vao is None:
            b = self._buffers
            if kind == "ids":
                prog, content = self._ids, [(b["screen"], "3f", "in_screen")]
            else:
                prog = self._shade
                content = [(b["world"], "3f", "in_world"), (b["normal"], "3f", "in_normal"),
                           (b["albedo"], "3f", "in_albedo"), (b["so"], "2f", "in_so")]
            vao = self.ctx.vertex_array(prog, content, index_buffer=b[f"{kind}_index"], index_element_size=4)
            self._vaos[kind] = vao
        return vao

    def _framebuffers(self, width: int, height: int, components: int, count: int) -> list:
        """``count`` framebuffers of ``width x height`` (float colour + depth), reused."""
        key = (width, height, components)
        pool = self._fbos.setdefault(key, [])
        if len(self._fbos) > 3:  # another size came along: drop the others
            for k in [k for k in self._fbos if k != key]:
                for fbo in self._fbos.pop(k):
                    fbo.release()
        ctx = self.ctx
        while len(pool) < count:
            pool.append(ctx.framebuffer(
                color_attachments=[ctx.renderbuffer((width, height), components, dtype="f4")],
                depth_attachment=ctx.depth_renderbuffer((width, height))))
        return pool[:count]

    def _draw(self, kind: str, ranges: list[tuple[int, int]], height: int, width: int,
              depth_ab: np.ndarray, components: int, per_image=None) -> np.ndarray:
        """Draw image b's index range ``ranges[b]`` into a framebuffer of its own and
        read them all back.

        One framebuffer per image, not tiles of one atlas: GL snaps vertices to a
        sub-pixel grid in window coordinates, and a tile offset would change the
        rounding, so an image would depend on its place in the batch.
        depth_ab: (B, 2) `_depth_coefficients` per image. ``per_image(b)`` sets the
        other uniforms of image b. Returns (B, H, W, components) float32, rows top first.
        """
        mgl, ctx = self._moderngl, self.ctx
        if width > self.max_size or height > self.max_size:
            raise ValueError(f"image {width}x{height} exceeds the GL limit {self.max_size}")
        prog = self._ids if kind == "ids" else self._shade
        vao = self._vao(kind)
        batch = len(ranges)
        prog["size"].value = (float(width), float(height))
        out = np.empty((batch, height, width, components), np.float32)
        per_pass = max(1, min(batch, _FRAMEBUFFER_BYTES // (width * height * (4 * components + 4))))
        viewport = (0, 0, width, height)
        for start in range(0, batch, per_pass):
            n = min(per_pass, batch - start)
            fbos = self._framebuffers(width, height, components, n)
            for k, fbo in enumerate(fbos):
                b = start + k
                fbo.use()
                ctx.viewport = viewport
                fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                first, count = ranges[b]
                if count == 0:
                    continue
                prog["depth_ab"].value = tuple(float(x) for x in depth_ab[b])
                if per_image is not None:
                    per_image(b)
                vao.render(mgl.TRIANGLES, vertices=count, first=first)
            for k, fbo in enumerate(fbos):  # reads wait for the rasterizer threads
                fbo.read_into(out[start + k], viewport=viewport, components=components, dtype="f4")
        return out

    def _check_process(self) -> None:
        if os.getpid() != self.pid:
            raise RuntimeError("a GL context cannot be used in a forked child: call gl_renderer() there")

    # ------------------------------------------------------------------ public API
    def rasterize(self, points: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor,
                  image_size: tuple[int, int], cull_backfaces: bool = True) -> Fragments:
        """Drop-in for `jmlr.synth.render.rasterize` (same arguments and `Fragments`).

        GL picks each pixel's visible face (a depth-tested draw); barycentrics and depth
        are then evaluated at the pixel centre with the reference's code. Faces with a
        corner nearer than `NEAR_M` are dropped, as the reference drops them (a point
        behind the camera has no pixel position to rasterize).
        """
        self._check_process()
        H, W = image_size
        B, V, _ = points.shape
        pts = points.detach().float().cpu()
        z = depth.detach().float().cpu()
        self._upload("screen", torch.cat([pts, z[..., None]], -1).numpy())
        faces_c = faces.detach().cpu()
        ahead = (z[:, faces_c] > NEAR_M).all(-1)  # (B, F)
        kept = None  # (faces drawn, each image's first) when some are dropped
        if bool(ahead.all()):
            ranges = self._replicated_faces(faces, B, V)
        else:
            b_idx, f_idx = ahead.nonzero(as_tuple=True)
            self._upload("ids_index", (faces_c[f_idx] + b_idx[:, None] * V).to(torch.int32).numpy())
            self._replicated = None
            counts = ahead.sum(1).tolist()
            firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            ranges = [(3 * int(a), 3 * int(c)) for a, c in zip(firsts, counts)]
            kept = (f_idx, torch.from_numpy(firsts))
        depth_ab = np.array([_depth_coefficients(*_depth_range(zb)) for zb in z.numpy()])
        mgl = self._moderngl
        if not cull_backfaces:
            self.ctx.disable(mgl.CULL_FACE)
        try:
            ids = self._draw("ids", ranges, H, W, depth_ab, 2)[..., 0]
        finally:
            self.ctx.enable(mgl.CULL_FACE)
        flat = torch.from_numpy(ids.reshape(-1))
        pix = (flat > 0).nonzero().squeeze(1)
        face_ids = flat[pix].long() - 1  # gl_PrimitiveID: the face's place in its image's draw
        if kept is not None:
            f_idx, first = kept
            face_ids = f_idx[first[pix // (H * W)] + face_ids]
        frags = fragments_from_faces(pts[:, faces_c], z[:, faces_c], pix, face_ids, (B, H, W))
        if points.device.type != "cpu":
            frags = Fragments(*(t.to(points.device) for t in (frags.pixels, frags.faces, frags.bary, frags.zbuf)),
                              frags.shape)
        return frags

    def render_mesh(self, verts_world: torch.Tensor, faces: torch.Tensor, R_t: torch.Tensor, K: torch.Tensor,
                    image_size: tuple[int, int], albedo: torch.Tensor, lighting: Lighting,
                    specular_mask: torch.Tensor | None = None, occlusion: torch.Tensor | None = None,
                    gamma: float = 2.2) -> RenderOutput:
        """Same arguments and result as `jmlr.synth.render.render_mesh`, shaded in GL.

        The CPU computes only world-space vertex normals and which faces turn towards
        the camera (from the same face normals); the vertex shader transforms and
        projects. Outputs are moved to ``verts_world``'s device.
        """
        self._check_process()
        if lighting.directions.shape[1] > MAX_LIGHTS:
            raise ValueError(f"at most {MAX_LIGHTS} lights")
        H, W = image_size
        dev = verts_world.device
        v = verts_world.detach().float().cpu().contiguous()
        f = faces.detach().cpu()
        B, V, _ = v.shape
        R_t = R_t.detach().float().cpu()
        Kb = K.detach().double().cpu().expand(B, 3, 3)
        R, T = R_t[:, :3, :3], R_t[:, 3, :3]
        fn = face_normals(v, f)
        normals = vertex_normals(v, f, fn)
        # Faces that turn away from the eye are culled by GL anyway; leaving them out
        # here halves the per-triangle work, which is what llvmpipe spends its time on.
        # The slack (cos > -1e-3 at the farthest vertex) leaves faces seen edge-on to GL.
        eye = -(T[:, None] @ R.transpose(1, 2))  # (B, 1, 3) camera centre in the world
        reach = (v - eye).norm(dim=-1).amax(1, keepdim=True)  # (B, 1)
        facing = (fn * (eye - v.index_select(1, f[:, 0]))).sum(-1) > -1e-3 * reach * fn.norm(dim=-1)
        b_idx, f_idx = facing.nonzero(as_tuple=True)
        counts = facing.sum(1).tolist()
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]) * 3
        self._upload("shade_index", (f[f_idx] + b_idx[:, None] * V).to(torch.int32).numpy())
        ranges = [(int(a), 3 * int(c)) for a, c in zip(firsts, counts)]
        ones = torch.ones(B, V)
        spec = ones if specular_mask is None else specular_mask.detach().float().cpu().expand(B, V)
        occ = ones if occlusion is None else occlusion.detach().float().cpu().expand(B, V)
        self._upload("world", v.numpy())
        self._upload("normal", normals.numpy())
        self._upload("albedo", albedo.detach().float().cpu().expand(B, V, 3).contiguous().numpy())
        self._upload("so", torch.stack([spec, occ], -1).numpy())
        z = transform_points(v, R_t)[..., 2].neg_()
        depth_ab = np.array([_depth_coefficients(*_depth_range(zb)) for zb in z.numpy()])
        light = Lighting(*(t.detach().float().cpu() for t in (lighting.ambient, lighting.directions, lighting.colors,
                                                                lighting.specular, lighting.shininess)))
        prog = self._shade
        prog["gamma"].value = float(gamma)
        L = light.directions.shape[1]
        dirs = np.zeros((B, MAX_LIGHTS, 3), np.float32)
        cols = np.zeros((B, MAX_LIGHTS, 3), np.float32)
        dirs[:, :L] = light.directions.numpy()
        cols[:, :L] = light.colors.numpy()
        rot = R.numpy().astype(np.float32)
        intr = Kb.numpy().astype(np.float32)

        def per_image(b: int) -> None:
            prog["rotation"].write(rot[b].tobytes())
            prog["translation"].value = tuple(float(t) for t in T[b])
            prog["intrinsics"].write(intr[b].tobytes())
            prog["ambient"].value = tuple(float(c) for c in light.ambient[b])
            prog["light_dir"].write(dirs[b].tobytes())
            prog["light_col"].write(cols[b].tobytes())
            prog["num_lights"].value = L
            prog["specular"].value = float(light.specular[b])
            prog["shininess"].value = float(light.shininess[b])

        tiles = torch.from_numpy(self._draw("shade", ranges, H, W, depth_ab, 4, per_image))
        depth = tiles[..., 3]
        return RenderOutput(tiles[..., :3].to(dev), (depth > 0).to(dev), depth.to(dev))

    def release(self) -> None:
        """Free the GL objects and the context."""
        self.ctx.release()


_lock = threading.Lock()
_renderers: dict[tuple[int, int | None], GLRenderer] = {}
_failures: dict[tuple[int, int | None], str] = {}


def gl_renderer(device_index: int | None = None) -> GLRenderer:
    """This process's `GLRenderer` for an EGL device, made on first use.

    Raises:
        GLUnavailable: as `GLRenderer` (remembered: later calls fail fast).
    """
    key = (os.getpid(), device_index)
    with _lock:
        hit = _renderers.get(key)
        if hit is not None:
            return hit
        if key in _failures:
            raise GLUnavailable(_failures[key])
        if any(pid != key[0] for pid, _ in _renderers):
            # Inherited through fork: EGL and Mesa's threads do not survive it, and a new
            # context in the child hangs.
            _failures[key] = ("this process was forked from one that had made an OpenGL context; start "
                              "workers with the 'spawn' method, or render only in the workers")
            raise GLUnavailable(_failures[key])
        try:
            r = GLRenderer(device_index)
        except GLUnavailable as exc:
            _failures[key] = str(exc)
            raise
        log.info("OpenGL renderer: %s (pid %d)", r.renderer, key[0])
        _renderers[key] = r
        return r


def has_context() -> bool:
    """Whether this process has made a GL context already."""
    return any(pid == os.getpid() for pid, _ in _renderers)


def gl_available(device_index: int | None = None) -> tuple[bool, str]:
    """(True, renderer name) if this process can render with OpenGL, else (False, why)."""
    try:
        return True, gl_renderer(device_index).renderer
    except GLUnavailable as exc:
        return False, str(exc)

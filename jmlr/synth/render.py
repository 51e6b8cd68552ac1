"""A batched z-buffer rasterizer and shader in pure PyTorch (CPU and CUDA, no OpenGL).

Rasterization is vectorised over triangles: every triangle enumerates the pixel
centres inside its screen bounding box (flattened with ``repeat_interleave``), keeps
those whose barycentric coordinates are all non-negative, and writes a key
``(quantised depth << 20) | face id`` into a z-buffer with
``scatter_reduce(..., "amin")``; the nearest triangle wins without any sorting.
Barycentrics are then recomputed once per covered pixel and made perspective-correct.

Conventions (docs/design.md): pixel centres are integer coordinates (the top-left
pixel's centre is (0, 0)); ``K`` is any 3x3 matrix with last row ``(0, 0, 1)`` that
maps OpenCV camera points to homogeneous pixels, so an intrinsics matrix and a crop
folded into it (``[M; 0 0 1] @ K``) both work; vertices come in OpenGL camera space
(visible points have z < 0) or as world points with a row-vector ``R_t``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from jmlr.geometry.camera import transform_points

__all__ = [
    "Fragments",
    "RenderOutput",
    "Lighting",
    "project_to_screen",
    "rasterize",
    "fragments_from_faces",
    "interpolate",
    "face_normals",
    "vertex_normals",
    "shade",
    "render_mesh",
]

_FACE_BITS = 20
_DEPTH_SCALE = float(1 << 24)  # ~60 nm depth resolution, ample for a z-buffer in metres
_EMPTY = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    """Rasterization result, stored sparsely (covered pixels only).

    pixels: (P,) int64 flat indices ``(b * H + y) * W + x`` of covered pixels.
    faces: (P,) int64 index into the faces array of the visible triangle.
    bary: (P, 3) float perspective-correct barycentrics.
    zbuf: (P,) float camera depth (OpenCV z, metres).
    shape: (B, H, W).
    The dense properties ``face_index`` (-1 where empty), ``bary_map``, ``depth`` and
    ``mask`` expand them to (B, H, W[, 3]).
    """

    pixels: torch.Tensor
    faces: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor
    shape: tuple[int, int, int]

    def _dense(self, values: torch.Tensor, fill) -> torch.Tensor:
        B, H, W = self.shape
        out = torch.full((B * H * W, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
        out[self.pixels] = values
        return out.view(B, H, W, *values.shape[1:])

    @property
    def face_index(self) -> torch.Tensor:
        return self._dense(self.faces, -1)

    @property
    def bary_map(self) -> torch.Tensor:
        return self._dense(self.bary, 0.0)

    @property
    def depth(self) -> torch.Tensor:
        return self._dense(self.zbuf, 0.0)

    @property
    def mask(self) -> torch.Tensor:
        return self._dense(torch.ones_like(self.faces, dtype=torch.bool), False)

    @property
    def batch_index(self) -> torch.Tensor:
        _, H, W = self.shape
        return torch.div(self.pixels, H * W, rounding_mode="floor")


@dataclass
class RenderOutput:
    """image: (B, H, W, 3) float in [0, 1] (black background); mask: (B, H, W) bool;
    depth: (B, H, W) metres (z of the OpenCV camera, 0 on background); lighting: the
    `Lighting` it was shaded with, where the caller keeps it (shadows need the key light)."""

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    lighting: Lighting | None = None


@dataclass
class Lighting:
    """Light in OpenGL camera space (per batch element).

    ambient: (B, 3) RGB; directions: (B, L, 3) unit vectors pointing from the surface
    to the light; colors: (B, L, 3); specular: (B,) strength; shininess: (B,) exponent.
    """

    ambient: torch.Tensor
    directions: torch.Tensor
    colors: torch.Tensor
    specular: torch.Tensor
    shininess: torch.Tensor

    def to(self, device) -> Lighting:
        return Lighting(*(t.to(device) for t in (self.ambient, self.directions, self.colors,
                                                    self.specular, self.shininess)))


def project_to_screen(verts_cam_gl: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenGL camera points ``(B, V, 3)`` -> pixels ``(B, V, 2)`` and depth ``z_cv (B, V)``.

    K: (B, 3, 3) or (3, 3) with last row (0, 0, 1).
    """
    x, y, z = verts_cam_gl.unbind(-1)
    cv = torch.stack([x, -y, -z], -1)  # OpenGL -> OpenCV: flip y and z
    if K.dim() == 2:
        K = K.expand(cv.shape[0], 3, 3)
    h = cv @ K.transpose(1, 2).to(cv.dtype)
    zc = h[..., 2]
    return h[..., :2] / zc.clamp_min(1e-9).unsqueeze(-1), zc


def _edge_coefficients(p: torch.Tensor) -> torch.Tensor:
    """Affine barycentric functions of screen triangles ``p (T, 3, 2)``, relative to
    each triangle's first corner.

    Returns ``(T, 3, 2)`` rows ``(a, b)`` with
    ``lambda_i(x, y) = a_i (x - x_0) + b_i (y - y_0) + [i == 0]``.

    Why relative: the constant term of the absolute form, ``x1 y2 - x2 y1``, is a
    difference of products of pixel coordinates in the hundreds; in float32 it loses
    the few low bits that a small triangle's barycentrics live in (at 800x800 that put
    ~10 % of head pixels more than 1 mm off and let teeth show through lips). Corner
    differences are exact for nearby floats, so the relative form keeps them.
    """
    x0, y0 = p[:, 0, 0], p[:, 0, 1]
    dx1, dy1 = p[:, 1, 0] - x0, p[:, 1, 1] - y0
    dx2, dy2 = p[:, 2, 0] - x0, p[:, 2, 1] - y0
    inv = 1.0 / (dx1 * dy2 - dx2 * dy1)
    # lambda_1 and lambda_2 are the edge functions of (p2, p0) and (p0, p1) over the area.
    a = torch.stack([dy1 - dy2, dy2, -dy1], -1) * inv[:, None]
    b = torch.stack([dx2 - dx1, -dx2, dx1], -1) * inv[:, None]
    return torch.stack([a, b], -1)


def _barycentric(coef: torch.Tensor, origin: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentrics ``(P, 3)`` at pixels ``x, y (P,)`` of triangles with
    ``coef (P, 3, 2)`` and first corners ``origin (P, 2)`` (see `_edge_coefficients`)."""
    dx = (x.to(coef.dtype) - origin[:, 0])[:, None]
    dy = (y.to(coef.dtype) - origin[:, 1])[:, None]
    lam = coef[..., 0] * dx + coef[..., 1] * dy
    lam[:, 0] += 1.0
    return lam


NEAR_M = 1e-3  # `rasterize` drops faces with a corner nearer than this (metres)


def rasterize(points: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor,
              image_size: tuple[int, int], cull_backfaces: bool = True,
              near: float = NEAR_M, chunk: int = 1 << 23) -> Fragments:
    """Rasterize triangle meshes sharing one topology.

    Args:
        points: (B, V, 2) pixel coordinates (x right, y down, pixel centres at integers).
            float64 input is rasterized in float64 (a reference), anything else in float32.
        depth: (B, V) positive distance along the optical axis (OpenCV z), metres.
        faces: (F, 3) int64 vertex indices; with ``cull_backfaces`` a face is kept when
            its corners run counter-clockwise as seen by the camera (outward normals of
            a right-handed, CCW-wound mesh).
        image_size: (H, W).
        near: faces with a corner nearer than this are dropped (no clipping).
        chunk: maximum number of candidate pixels handled at once (bounds memory).

    Returns:
        `Fragments` of shape (B, H, W).
    """
    H, W = image_size
    B = points.shape[0]
    F = faces.shape[0]
    if F >= 1 << _FACE_BITS:
        raise ValueError(f"at most {1 << _FACE_BITS} faces")
    device = points.device
    dtype = torch.float64 if points.dtype == torch.float64 else torch.float32
    tri = points.to(dtype)[:, faces]  # (B, F, 3, 2)
    tz = depth.to(dtype)[:, faces]  # (B, F, 3)
    x0, y0 = tri[..., 0, 0], tri[..., 0, 1]
    area = (tri[..., 1, 0] - x0) * (tri[..., 2, 1] - y0) - (tri[..., 2, 0] - x0) * (tri[..., 1, 1] - y0)
    xmin = torch.ceil(tri[..., 0].amin(-1)).clamp(0, W)
    xmax = torch.floor(tri[..., 0].amax(-1)).clamp(-1, W - 1)
    ymin = torch.ceil(tri[..., 1].amin(-1)).clamp(0, H)
    ymax = torch.floor(tri[..., 1].amax(-1)).clamp(-1, H - 1)
    nx = (xmax - xmin + 1).clamp_min(0)
    ny = (ymax - ymin + 1).clamp_min(0)
    # With y pointing down, a counter-clockwise (seen from the camera) triangle has a
    # negative signed area in pixel coordinates.
    ok = (tz.amin(-1) > near) & (area.abs() > 1e-12) & (nx > 0) & (ny > 0)
    if cull_backfaces:
        ok &= area < 0
    sel = ok.reshape(-1).nonzero().squeeze(1)  # flat (b * F + f)
    tri_s = tri.reshape(B * F, 3, 2)[sel]
    coef = _edge_coefficients(tri_s)  # (T, 3, 2)
    origin = tri_s[:, 0]  # (T, 2)
    inv_z = 1.0 / tz.reshape(B * F, 3)[sel]  # (T, 3)
    nx_s = nx.reshape(-1)[sel].long()
    counts = nx_s * ny.reshape(-1)[sel].long()
    x_s = xmin.reshape(-1)[sel].long()
    y_s = ymin.reshape(-1)[sel].long()
    b_s = torch.div(sel, F, rounding_mode="floor")
    f_s = sel - b_s * F

    zbuf = torch.full((B * H * W,), _EMPTY, dtype=torch.int64, device=device)
    # Chunk over triangles so that the candidate list stays bounded.
    ends = torch.cumsum(counts, 0)
    start_t = 0
    T = len(sel)
    while start_t < T:
        base = int(ends[start_t - 1]) if start_t > 0 else 0
        stop_t = int(torch.searchsorted(ends, torch.tensor(base + chunk, device=device), right=True))
        stop_t = max(stop_t, start_t + 1)
        idx = torch.arange(start_t, min(stop_t, T), device=device)
        cnt = counts[idx]
        t = torch.repeat_interleave(idx, cnt)
        first = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(len(t), device=device) - torch.repeat_interleave(first, cnt)
        nxt = nx_s[t]
        py = y_s[t] + torch.div(local, nxt, rounding_mode="floor")
        px = x_s[t] + local % nxt
        lam = _barycentric(coef[t], origin[t], px, py)
        inside = (lam >= 0).all(-1)
        lam, t, px, py = lam[inside], t[inside], px[inside], py[inside]
        z = 1.0 / (lam * inv_z[t]).sum(-1)
        key = ((z.double() * _DEPTH_SCALE).long() << _FACE_BITS) | f_s[t]
        pix = (b_s[t] * H + py) * W + px
        zbuf.scatter_reduce_(0, pix, key, reduce="amin")
        start_t = min(stop_t, T)

    pix = (zbuf != _EMPTY).nonzero().squeeze(1)
    return fragments_from_faces(tri, tz, pix, zbuf[pix] & ((1 << _FACE_BITS) - 1), (B, H, W))


def fragments_from_faces(tri: torch.Tensor, tri_depth: torch.Tensor, pixels: torch.Tensor,
                         face_ids: torch.Tensor, shape: tuple[int, int, int]) -> Fragments:
    """`Fragments` of covered pixels whose visible triangle is known.

    Barycentrics are evaluated at each pixel centre and made perspective-correct, and
    the depth is that of the triangle there: what `rasterize` returns once its z-buffer
    has picked the faces (another rasterizer can reuse it, see `jmlr.synth.render_gl`).

    Args:
        tri: (B, F, 3, 2) screen corners of every face (pixels, see `rasterize`).
        tri_depth: (B, F, 3) their OpenCV depth.
        pixels: (P,) flat indices ``(b * H + y) * W + x``.
        face_ids: (P,) visible face of each pixel.
        shape: (B, H, W).
    """
    _, H, W = shape
    b = torch.div(pixels, H * W, rounding_mode="floor")
    rem = pixels - b * H * W
    py = torch.div(rem, W, rounding_mode="floor")
    px = rem % W
    t = tri[b, face_ids]
    lz = _barycentric(_edge_coefficients(t), t[:, 0], px, py) / tri_depth[b, face_ids]
    s = lz.sum(-1, keepdim=True)
    return Fragments(pixels, face_ids, lz / s, 1.0 / s.squeeze(-1), shape)


def interpolate(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex ``attributes (B, V, C)`` at the covered pixels -> ``(P, C)``."""
    b = fragments.batch_index
    vidx = faces[fragments.faces]  # (P, 3)
    a = attributes[b[:, None], vidx]  # (P, 3, C)
    return torch.einsum("pkc,pk->pc", a, fragments.bary.to(a.dtype))


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted face normals ``(B, F, 3)`` (length = twice the area) of CCW faces."""
    v0, v1, v2 = (verts.index_select(1, faces[:, i]) for i in range(3))  # faster than verts[:, idx]
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


_ADJACENCY: list[tuple[torch.Tensor, int, torch.dtype, torch.Tensor]] = []  # (faces, V, dtype, CSR)


def _vertex_face_adjacency(faces: torch.Tensor, num_vertices: int, dtype: torch.dtype) -> torch.Tensor:
    """Sparse CSR ``(V, F)`` incidence of vertices and faces (the last few are cached).

    Summing face normals into vertices is a sparse product: several times faster than
    three ``index_add_`` scatters, and deterministic.
    """
    for f, v, dt, adj in _ADJACENCY:
        if v == num_vertices and dt == dtype and f.device == faces.device and f.shape == faces.shape \
                and torch.equal(f, faces):
            return adj
    F = faces.shape[0]
    rows = faces.t().reshape(-1)
    cols = torch.arange(F, device=faces.device).repeat(3)
    ones = torch.ones(3 * F, dtype=dtype, device=faces.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), ones, (num_vertices, F)).coalesce().to_sparse_csr()
    if len(_ADJACENCY) >= 4:
        _ADJACENCY.pop(0)
    _ADJACENCY.append((faces.clone(), num_vertices, dtype, adj))
    return adj


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor,
                   normals_of_faces: torch.Tensor | None = None) -> torch.Tensor:
    """Area-weighted unit vertex normals ``(B, V, 3)`` of ``verts (B, V, 3)``, CCW faces.

    ``normals_of_faces``: `face_normals` of the same mesh, when already at hand.
    """
    B, V, _ = verts.shape
    fn = face_normals(verts, faces) if normals_of_faces is None else normals_of_faces
    F = faces.shape[0]
    adj = _vertex_face_adjacency(faces, V, fn.dtype)
    n = (adj @ fn.transpose(0, 1).reshape(F, B * 3)).view(V, B, 3).transpose(0, 1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12)


def shade(albedo: torch.Tensor, normals: torch.Tensor, positions: torch.Tensor,
          lighting: Lighting, batch_index: torch.Tensor, specular_mask: torch.Tensor | None = None,
          occlusion: torch.Tensor | None = None) -> torch.Tensor:
    """Lambert + Blinn-Phong shading of P points.

    Args:
        albedo: (P, 3) linear RGB reflectance.
        normals: (P, 3) normals (need not be unit), OpenGL camera space.
        positions: (P, 3) OpenGL camera points (the eye is at the origin).
        lighting: `Lighting` with batch B.
        batch_index: (P,) image of each point, into the lighting batch.
        specular_mask: (P,) specular scale (wet lips, eyes), default 1.
        occlusion: (P,) ambient occlusion in [0, 1] (mouth interior), default 1.

    Returns:
        (P, 3) linear radiance.
    """
    n = torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
    view = torch.nn.functional.normalize(-positions, dim=-1, eps=1e-12)
    dirs = lighting.directions[batch_index]  # (P, L, 3)
    cols = lighting.colors[batch_index]  # (P, L, 3)
    ndl = (dirs * n[:, None]).sum(-1).clamp_min(0)  # (P, L)
    diffuse = lighting.ambient[batch_index] + (ndl[..., None] * cols).sum(1)
    half = torch.nn.functional.normalize(dirs + view[:, None], dim=-1)
    ndh = (half * n[:, None]).sum(-1).clamp_min(0)
    spec = ndh ** lighting.shininess[batch_index, None] * (ndl > 0)
    spec = (spec[..., None] * cols).sum(1) * lighting.specular[batch_index, None]
    if specular_mask is not None:
        spec = spec * specular_mask[:, None]
    if occlusion is not None:
        diffuse = diffuse * occlusion[:, None]
        spec = spec * occlusion[:, None]
    return albedo * diffuse + spec


def render_mesh(verts_world: torch.Tensor, faces: torch.Tensor, R_t: torch.Tensor, K: torch.Tensor,
                image_size: tuple[int, int], albedo: torch.Tensor, lighting: Lighting,
                specular_mask: torch.Tensor | None = None, occlusion: torch.Tensor | None = None,
                gamma: float = 2.2) -> RenderOutput:
    """Render shaded meshes.

    Args:
        verts_world: (B, V, 3) world vertices, metres.
        faces: (F, 3) int64, counter-clockwise seen from outside.
        R_t: (B, 4, 4) row-vector world -> OpenGL camera.
        K: (B, 3, 3) or (3, 3) pixel projection (intrinsics, possibly with a crop folded in).
        image_size: (H, W).
        albedo: (B, V, 3) sRGB-like reflectance in [0, 1] (linearised with ``gamma``).
        lighting: `Lighting`.
        specular_mask, occlusion: optional (B, V) per-vertex scales, see `shade`.

    Returns:
        `RenderOutput` with the sRGB-like image in [0, 1].
    """
    cam = transform_points(verts_world, R_t)
    points, z = project_to_screen(cam, K)
    frags = rasterize(points, z, faces, image_size)
    normals = vertex_normals(cam, faces)
    B = cam.shape[0]
    ones = torch.ones_like(cam[..., :1])
    attrs = torch.cat([albedo.clamp(0, 1) ** gamma, normals, cam,
                       ones if specular_mask is None else specular_mask[..., None],
                       ones if occlusion is None else occlusion[..., None]], -1)
    pix = interpolate(frags, faces, attrs)  # (P, 11)
    rgb = shade(pix[:, 0:3], pix[:, 3:6], pix[:, 6:9], lighting, frags.batch_index, pix[:, 9], pix[:, 10])
    rgb = rgb.clamp(0, 1) ** (1.0 / gamma)
    H, W = image_size
    image = torch.zeros(B * H * W, 3, device=cam.device)
    image[frags.pixels] = rgb
    return RenderOutput(image.view(B, H, W, 3), frags.mask, frags.depth)

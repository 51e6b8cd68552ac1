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

from dataclasses import dataclass

import torch

__all__ = [
    "Fragments",
    "RenderOutput",
    "Lighting",
    "project_to_screen",
    "rasterize",
    "interpolate",
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
        B, H, W = self.shape
        return torch.div(self.pixels, H * W, rounding_mode="floor")


@dataclass
class RenderOutput:
    """image: (B, H, W, 3) float in [0, 1] (black background); mask: (B, H, W) bool;
    depth: (B, H, W) metres (z of the OpenCV camera, 0 on background)."""

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor


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

    def to(self, device) -> "Lighting":
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
    """Affine barycentric functions of screen triangles ``p (T, 3, 2)``.

    Returns ``(T, 3, 3)`` rows ``(a, b, c)`` with ``lambda_i(x, y) = a x + b y + c``.
    """
    x0, y0 = p[:, 0, 0], p[:, 0, 1]
    x1, y1 = p[:, 1, 0], p[:, 1, 1]
    x2, y2 = p[:, 2, 0], p[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    inv = 1.0 / area
    # lambda_0 is the edge function of (p1, p2), normalised by the signed area.
    a = torch.stack([y1 - y2, y2 - y0, y0 - y1], -1) * inv[:, None]
    b = torch.stack([x2 - x1, x0 - x2, x1 - x0], -1) * inv[:, None]
    c = torch.stack([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], -1) * inv[:, None]
    return torch.stack([a, b, c], -1)


def rasterize(points: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor,
              image_size: tuple[int, int], cull_backfaces: bool = True,
              near: float = 1e-3, chunk: int = 1 << 23) -> Fragments:
    """Rasterize triangle meshes sharing one topology.

    Args:
        points: (B, V, 2) pixel coordinates (x right, y down, pixel centres at integers).
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
    B, V, _ = points.shape
    F = faces.shape[0]
    if F >= 1 << _FACE_BITS:
        raise ValueError(f"at most {1 << _FACE_BITS} faces")
    device = points.device
    pts = points.float()
    tri = pts[:, faces]  # (B, F, 3, 2)
    tz = depth.float()[:, faces]  # (B, F, 3)
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
    coef = _edge_coefficients(tri.reshape(B * F, 3, 2)[sel])  # (T, 3, 3)
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
        c = coef[t]  # (P, 3, 3)
        lam = c[..., 0] * px[:, None].float() + c[..., 1] * py[:, None].float() + c[..., 2]
        inside = (lam >= 0).all(-1)
        lam, t, px, py = lam[inside], t[inside], px[inside], py[inside]
        z = 1.0 / (lam * inv_z[t]).sum(-1)
        key = ((z.double() * _DEPTH_SCALE).long() << _FACE_BITS) | f_s[t]
        pix = (b_s[t] * H + py) * W + px
        zbuf.scatter_reduce_(0, pix, key, reduce="amin")
        start_t = min(stop_t, T)

    pix = (zbuf != _EMPTY).nonzero().squeeze(1)
    f = zbuf[pix] & ((1 << _FACE_BITS) - 1)
    b = torch.div(pix, H * W, rounding_mode="floor")
    rem = pix - b * H * W
    py = torch.div(rem, W, rounding_mode="floor").float()
    px = (rem % W).float()
    c = _edge_coefficients(tri[b, f])
    lam = c[..., 0] * px[:, None] + c[..., 1] * py[:, None] + c[..., 2]
    lz = lam / tz[b, f]
    s = lz.sum(-1, keepdim=True)
    return Fragments(pix, f, lz / s, 1.0 / s.squeeze(-1), (B, H, W))


def interpolate(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex ``attributes (B, V, C)`` at the covered pixels -> ``(P, C)``."""
    b = fragments.batch_index
    vidx = faces[fragments.faces]  # (P, 3)
    a = attributes[b[:, None], vidx]  # (P, 3, C)
    return torch.einsum("pkc,pk->pc", a, fragments.bary.to(a.dtype))


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``(B, V, 3)`` of ``verts (B, V, 3)``, CCW faces."""
    v0, v1, v2 = (verts[:, faces[:, i]] for i in range(3))
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)
    n = torch.zeros_like(verts)
    for i in range(3):
        n.index_add_(1, faces[:, i], fn)
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
    R = R_t[:, :3, :3]
    T = R_t[:, 3:4, :3]
    cam = verts_world @ R + T
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

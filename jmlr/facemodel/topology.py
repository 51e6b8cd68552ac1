"""The face topology the networks predict: an ARKit-like mesh over the model's narrow face.

A :class:`Topology` is a subset of the morphable model's vertices (``ict_index``) with
its own triangles: ~1,220 vertices and ~2,300 triangles, left/right symmetric, with the
eyes and the mouth open (holes), like ARKit's face mesh and the WCPA challenge's meshes.

Conventions
-----------
- ``ict_index`` (N,) int64: model vertex index of each topology vertex (ascending).
- ``triangles`` (F, 3) int64: counter-clockwise seen from outside, so that normals
  ``cross(v1 - v0, v2 - v0)`` point out of the face (+z at the nose). Edge-manifold;
  the boundary is 4 loops (outer rim, two eyes, mouth).
- ``flip_index`` (N,) int64: mirror permutation. The x-mirrored mesh
  ``V[flip_index] * (-1, 1, 1)`` equals ``V`` up to the model's asymmetry (< 0.06 mm),
  and ``triangles`` mirrored through ``flip_index`` (winding reversed) is the same set.
  Midline vertices (x = 0) are their own mirror. An involution.
- ``landmarks68`` (68,) int64: iBUG-68 landmarks as indices into the N topology vertices
  (the model's landmark vertices are always in ``ict_index``, so the mapping is exact).
- ``mean_shape`` (N, 3) float32 metres: the model's neutral head at ``ict_index``.

How :func:`build_topology` works (deterministic; no randomness anywhere):

1. The narrow face has a seamless UV chart symmetric about ``u = 0.5``; vertex mirror
   pairs come from nearest neighbours of x-negated neutral positions.
2. On each boundary loop (outer rim, eyes, mouth) vertices are kept at an even arc-length
   spacing (the 68 landmarks and midline crossings always kept); interior vertices are
   added by farthest-point sampling in 3D on the left half + midline, each pick counting
   its mirror too, until ``2 * left + midline == num_vertices``.
3. The left half plus midline is Delaunay-triangulated in UV. The midline is a straight
   hull line there, so it becomes a chain of edges. Triangles whose centroid lies outside
   the sampled rim polygon or inside a sampled hole polygon are dropped; rim chords that
   Delaunay missed get the rim vertex between their ends, until every chord is an edge
   (then every triangle is wholly inside or outside the domain).
4. The right half is the mirror image (winding reversed) of the left.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jmlr.facemodel.contour import JawContour, jaw_contour
from jmlr.facemodel.model import FaceModel
from jmlr.facemodel.npz import write_npz

__all__ = [
    "Topology",
    "build_topology",
    "default_topology_path",
    "boundary_loops",
    "mirror_pairs",
    "IBUG68_FLIP",
]

# Mirror permutation of the iBUG-68 landmark order: landmark i of a mirrored face is
# landmark IBUG68_FLIP[i] of the original.
IBUG68_FLIP = np.array(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65],
    dtype=np.int64,
)

_ARRAY_KEYS = ("ict_index", "triangles", "flip_index", "landmarks68", "mean_shape")


def default_topology_path() -> Path:
    """The committed topology, ``jmlr/facemodel/data/arkit_like_topology.npz``."""
    return Path(__file__).resolve().parent / "data" / "arkit_like_topology.npz"


@dataclass(eq=False)
class Topology:
    """Face topology over the morphable model (fields as in the module docstring)."""

    ict_index: np.ndarray
    triangles: np.ndarray
    flip_index: np.ndarray
    landmarks68: np.ndarray
    mean_shape: np.ndarray

    @property
    def num_vertices(self) -> int:
        return int(self.ict_index.shape[0])

    @property
    def num_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @functools.cached_property
    def jaw_contour(self) -> JawContour:
        """Where each of the 17 jaw points may slide to follow a face's visible outline
        (`jmlr.facemodel.contour`); computed once from ``mean_shape`` and ``landmarks68``."""
        return jaw_contour(self.mean_shape, self.landmarks68)

    # ------------------------------------------------------------------ npz
    @classmethod
    def load(cls, path: str | Path | None = None) -> Topology:
        """Load a topology npz (default :func:`default_topology_path`)."""
        path = Path(path) if path is not None else default_topology_path()
        with np.load(path, allow_pickle=False) as data:
            return cls(
                ict_index=data["ict_index"].astype(np.int64),
                triangles=data["triangles"].astype(np.int64),
                flip_index=data["flip_index"].astype(np.int64),
                landmarks68=data["landmarks68"].astype(np.int64),
                mean_shape=data["mean_shape"].astype(np.float32),
            )

    def save(self, path: str | Path) -> Path:
        """Write the npz (int32 indices, float32 mean shape; byte-identical for equal inputs)."""
        return write_npz(
            path,
            ict_index=self.ict_index.astype(np.int32),
            triangles=self.triangles.astype(np.int32),
            flip_index=self.flip_index.astype(np.int32),
            landmarks68=self.landmarks68.astype(np.int32),
            mean_shape=self.mean_shape.astype(np.float32),
        )

    # ------------------------------------------------------------------ OBJ
    def to_obj(self, path: str | Path, vertices: np.ndarray | None = None) -> Path:
        """Write a Wavefront OBJ (1-based faces) of ``vertices`` (N, 3) (default ``mean_shape``).

        The index arrays go into ``# jmlr-topology`` comment lines so that
        :meth:`from_obj` reads the file back exactly; other OBJ readers ignore them.
        """
        v = self.mean_shape if vertices is None else np.asarray(vertices)
        if v.shape != (self.num_vertices, 3):
            raise ValueError(f"vertices must be ({self.num_vertices}, 3), got {v.shape}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"# face topology: {self.num_vertices} vertices, {self.num_triangles} triangles, metres"]
        for key in ("ict_index", "flip_index", "landmarks68"):
            lines.append(f"# jmlr-topology {key} " + " ".join(str(int(i)) for i in getattr(self, key)))
        lines += [f"v {x:.8g} {y:.8g} {z:.8g}" for x, y, z in v.astype(np.float64)]
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in self.triangles]
        path.write_text("\n".join(lines) + "\n")
        return path

    @classmethod
    def from_obj(cls, path: str | Path, model: FaceModel | None = None, mirror_tol: float = 1e-3) -> Topology:
        """Read a topology from an OBJ (e.g. the challenge's ``resources/example.obj``).

        The OBJ's vertices become ``mean_shape`` (its units are kept: give metres) and
        its faces the triangles (polygons are fanned). Index arrays come from the
        ``# jmlr-topology`` lines :meth:`to_obj` writes. Without them:

        - ``flip_index``: nearest neighbour of each x-negated vertex; raises
          ``ValueError`` if any pair is farther apart than ``mirror_tol`` (units of the file).
        - ``ict_index``: nearest ``model`` vertex of each OBJ vertex when a model is
          given (the OBJ must be in the model's head frame), else all -1.
        - ``landmarks68``: the OBJ vertex nearest each model landmark when a model is
          given, else all -1.
        """
        verts: list[list[float]] = []
        faces: list[list[int]] = []
        meta: dict[str, np.ndarray] = {}
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                verts.append([float(t) for t in parts[1:4]])
            elif parts[0] == "f":
                idx = [int(t.split("/")[0]) for t in parts[1:]]
                idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                faces += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
            elif parts[0] == "#" and len(parts) >= 3 and parts[1] == "jmlr-topology":
                meta[parts[2]] = np.array([int(t) for t in parts[3:]], np.int64)
        v = np.asarray(verts, np.float32).reshape(-1, 3)
        tri = np.asarray(faces, np.int64).reshape(-1, 3)
        n = v.shape[0]
        if "flip_index" in meta:
            flip = meta["flip_index"]
        else:
            flip, dist = mirror_pairs(v)
            if dist.max() > mirror_tol:
                raise ValueError(f"{path}: mesh is not mirror-symmetric (worst pair {dist.max():.3g} > {mirror_tol})")
        if "ict_index" in meta:
            ict = meta["ict_index"]
        elif model is not None:
            ict = _nearest(model.neutral, v)
        else:
            ict = np.full(n, -1, np.int64)
        if "landmarks68" in meta:
            lm = meta["landmarks68"]
        elif model is not None:
            lm = _nearest(v, model.neutral[model.landmarks68])
        else:
            lm = np.full(68, -1, np.int64)
        return cls(ict_index=ict, triangles=tri, flip_index=flip, landmarks68=lm, mean_shape=v)

    def mirror_vertices(self, vertices: np.ndarray) -> np.ndarray:
        """(..., N, 3) vertices of the mirrored face (x negated, vertices re-indexed)."""
        v = np.asarray(vertices)[..., self.flip_index, :].copy()
        v[..., 0] *= -1
        return v


# ---------------------------------------------------------------------------- mesh helpers
def _nearest(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(np.asarray(points, np.float64)).query(np.asarray(queries, np.float64))[1].astype(np.int64)


def mirror_pairs(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror partner of each point: nearest neighbour of the x-negated point.

    Returns ``(flip (N,) int64, distance (N,))``. Not forced to be an involution; callers
    check.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, np.float64)
    dist, flip = cKDTree(p).query(p * np.array([-1.0, 1.0, 1.0]))
    return flip.astype(np.int64), dist


def _edges(triangles: np.ndarray) -> np.ndarray:
    """(3F, 2) directed edges (a -> b) of counter-clockwise triangles."""
    t = np.asarray(triangles)
    return np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]], axis=0)


def boundary_loops(polygons: np.ndarray) -> list[np.ndarray]:
    """Boundary loops of an oriented manifold mesh, each an ordered (L,) vertex array.

    ``polygons`` (F, 3) triangles or (F, 4) quads (a 4th index of -1 marks a triangle).
    Loops follow the boundary edges' own direction; they are sorted by length, longest
    first, and each starts at its smallest vertex index (deterministic).
    """
    p = np.asarray(polygons)
    directed = []
    for k in range(p.shape[1]):
        a, b = p[:, k], p[:, (k + 1) % p.shape[1]]
        if p.shape[1] == 4 and k >= 2:
            tri = p[:, 3] < 0  # triangle: 2 -> 0 closes it, 3 -> 0 does not exist
            if k == 2:
                b = np.where(tri, p[:, 0], b)
            else:
                a, b = a[~tri], b[~tri]
        directed.append(np.stack([a, b], 1))
    e = np.concatenate(directed, 0)
    key = np.sort(e, 1)
    _, inv, count = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    b = e[count[inv.ravel()] == 1]
    nxt = {int(x): int(y) for x, y in b}
    if len(nxt) != len(b):
        raise ValueError("boundary is not a set of simple loops (a vertex starts two boundary edges)")
    loops, seen = [], set()
    for s in sorted(nxt):
        if s in seen:
            continue
        loop, x = [], s
        while x not in seen:
            seen.add(x)
            loop.append(x)
            x = nxt[x]
        loops.append(np.array(loop, np.int64))
    loops.sort(key=lambda loop: (-len(loop), int(loop.min())))
    return loops


def _points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: (P,) bool, whether each 2D point lies inside the closed polygon (L, 2)."""
    x, y = points[:, 0:1], points[:, 1:2]
    a = polygon
    b = np.roll(polygon, -1, axis=0)
    ay, by = a[None, :, 1], b[None, :, 1]
    crosses = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = a[None, :, 0] + (y - ay) * (b[None, :, 0] - a[None, :, 0]) / (by - ay)
    return np.count_nonzero(crosses & (x < xint), axis=1) % 2 == 1


# ---------------------------------------------------------------------------- the builder
def _sample_path(path: np.ndarray, pos: np.ndarray, required: set[int], spacing: float, closed: bool) -> list[int]:
    """Keep vertices of a rim path at about ``spacing`` arc length, all ``required`` kept.

    ``path`` (L,) vertex ids in order (a cycle if ``closed``); returns the kept ids in order.
    """
    ids = list(path) + ([path[0]] if closed else [])
    seg = np.linalg.norm(np.diff(pos[ids], axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    anchors = [i for i, v in enumerate(path) if int(v) in required]
    if closed:
        anchors = (anchors or [0]) + [(anchors or [0])[0] + len(path)]
        ids = ids[:-1] * 2 + [ids[0]]
        arc = np.concatenate([arc[:-1], arc[:-1] + arc[-1], [2 * arc[-1]]])
    else:
        anchors = sorted(set(anchors) | {0, len(ids) - 1})
    keep: list[int] = []
    for a, b in itertools.pairwise(anchors):
        keep.append(a)
        n_int = int(round((arc[b] - arc[a]) / spacing))
        for k in range(1, n_int):
            target = arc[a] + (arc[b] - arc[a]) * k / n_int
            j = a + int(np.argmin(np.abs(arc[a:b + 1] - target)))
            if keep[-1] < j < b:
                keep.append(j)
    if not closed:
        keep.append(anchors[-1])
    out = []
    for j in keep:
        v = int(ids[j])
        if v not in out:
            out.append(v)
    return out


@dataclass
class _Chart:
    """The region in its symmetric UV chart: positions, mirror map, halves."""

    pos: np.ndarray        # (V, 3) neutral positions of all model vertices, float64
    uv: np.ndarray         # (V, 2) the chart, the right half mirrored from the left exactly
    flip: np.ndarray       # (V,) mirror partner (-1 outside the region)
    left: np.ndarray       # region vertices with x > 0 and a distinct partner
    midline: np.ndarray    # region vertices that are their own partner
    is_left: np.ndarray    # (V,) bool
    is_mid: np.ndarray     # (V,) bool
    polys: np.ndarray      # (P, 4) the region's quads/triangles (4th index -1)


@dataclass
class _Rims:
    """The region's boundary: loops, the left-half paths on them and their spacing."""

    landmarks: np.ndarray          # (68,) model vertex of each landmark
    required: set[int]             # vertices always kept (landmarks, as left representatives)
    loops: list[np.ndarray]        # boundary loops, longest (outer rim) first
    paths: list[tuple[np.ndarray, bool]]  # left-half rim paths, closed or not
    path_spacing: list[float]
    spacing: float                 # outer-rim vertex spacing
    on_rim: np.ndarray             # (V,) bool
    rim_required: set[int]
    path_pos: dict[int, tuple[int, int]]  # vertex -> (path, index on it)


def build_topology(
    model: FaceModel,
    num_vertices: int = 1220,
    region: str = "narrow_face",
    boundary_density: float = 4.12,
    feature_scale: float = 0.6,
    feature_radius: float = 3.0,
    max_iterations: int = 50,
) -> Topology:
    """Build the symmetric open-eyes/open-mouth face topology over ``model``'s ``region``.

    Args:
        model: the morphable model (its region must have a seamless UV chart symmetric
            about ``u = 0.5`` with the midline on it, as ICT-FaceKit's narrow face has).
        num_vertices: N, the topology size (exact when a midline vertex is free to pick).
        region: the vertex region to cover.
        boundary_density: boundary vertices ~= ``boundary_density * sqrt(N)``
            (ARKit's face mesh: about 144 boundary vertices out of 1,220).
        feature_scale: vertex spacing on and near the eye and mouth rims relative to
            the rest (ARKit's mesh is denser there); 1 for uniform.
        feature_radius: how far that refinement reaches, in outer-rim spacings.
        max_iterations: rim-refinement rounds before giving up.

    Returns:
        A :class:`Topology`. Deterministic: the same model gives the same arrays.
    """
    chart = _symmetric_chart(model, region)
    rims = _rim_paths(model, chart, region, num_vertices, boundary_density, feature_scale)
    extra_rim: set[int] = set()
    banned: set[int] = set()
    for _ in range(max_iterations):
        rim_keep = [
            _sample_path(p, chart.pos, rims.rim_required | (extra_rim & set(map(int, p))), h, closed)
            for (p, closed), h in zip(rims.paths, rims.path_spacing)
        ]
        half = _sample_interior(chart, rims, rim_keep, banned, num_vertices, feature_scale, feature_radius)
        tri = _triangulate_half(chart, rims, rim_keep, half)
        if _refine_rims(chart, rims, rim_keep, half, tri, extra_rim, banned):
            break
    else:
        raise RuntimeError("build_topology: rim refinement did not converge")
    return _mirrored_topology(model, chart, tri, half, rims.landmarks)


def _symmetric_chart(model: FaceModel, region: str) -> _Chart:
    """Step 1: per-vertex UV, mirror pairs and midline; the chart made exactly symmetric."""
    sl = model.region(region)
    first, stop = sl.start, sl.stop
    in_region = (model.quads >= first) & ((model.quads < stop) | (model.quads == -1))
    poly_mask = in_region.all(1) & (model.quads[:, :3] >= first).all(1)
    polys = model.quads[poly_mask]
    polys_uv = model.quads_uv[poly_mask]
    pos = model.neutral.astype(np.float64)

    uv = np.full((model.num_vertices, 2), np.nan)
    valid = polys >= 0
    vid, uid = polys[valid], polys_uv[valid]
    uv[vid] = model.uv[uid]
    if np.any(np.abs(uv[vid] - model.uv[uid]) > 1e-6):
        raise ValueError(f"region {region!r} has UV seams; build_topology needs one seamless chart")
    verts = np.unique(vid)
    flip_local, _ = mirror_pairs(pos[verts])
    flip = np.full(model.num_vertices, -1, np.int64)
    flip[verts] = verts[flip_local]
    if not np.array_equal(flip[flip[verts]], verts):
        raise ValueError(f"region {region!r} is not mirror-symmetric (nearest mirror partners are not an involution)")
    midline = verts[flip[verts] == verts]
    u_mid = float(np.mean(uv[midline, 0])) if len(midline) else 0.5
    left = verts[(pos[verts, 0] > 0) & (flip[verts] != verts)]
    is_left = np.zeros(model.num_vertices, bool)
    is_left[left] = True
    is_mid = np.zeros(model.num_vertices, bool)
    is_mid[midline] = True
    # symmetric chart: the left half's UV, the midline on u = u_mid exactly
    uv2 = uv.copy()
    uv2[midline, 0] = u_mid
    right = flip[left]
    uv2[right, 0] = 2 * u_mid - uv2[left, 0]
    uv2[right, 1] = uv2[left, 1]
    if np.nanmin(uv2[left, 0]) <= u_mid:
        raise ValueError("UV chart is not laid out with the subject's left at u > 0.5")
    return _Chart(pos, uv2, flip, left, midline, is_left, is_mid, polys)


def _rim_paths(model: FaceModel, chart: _Chart, region: str, num_vertices: int, boundary_density: float,
               feature_scale: float) -> _Rims:
    """Step 2: landmarks (left representatives), boundary loops and the left-half rim paths."""
    pos, flip, is_left, is_mid = chart.pos, chart.flip, chart.is_left, chart.is_mid
    lm = model.landmarks68.astype(np.int64)
    if not np.all(is_left[lm] | is_mid[lm] | is_left[flip[lm]]):
        raise ValueError("landmarks68 are not all in the region")
    required = {int(v) if not is_left[flip[v]] else int(flip[v]) for v in lm}
    loops = boundary_loops(chart.polys)
    if len(loops) != 4:
        raise ValueError(f"region {region!r} has {len(loops)} boundary loops, expected 4 (rim, eyes, mouth)")
    # holes get a finer rim than the outer edge (as ARKit's mesh has): the total rim
    # count stays ~boundary_density * sqrt(N), the holes taking 1 / feature_scale more
    loop_len = [np.linalg.norm(pos[loop] - pos[np.roll(loop, -1)], axis=1).sum() for loop in loops]
    weighted = loop_len[0] + sum(loop_len[1:]) / feature_scale
    spacing = weighted / (boundary_density * np.sqrt(num_vertices))
    # left-half rim paths: closed eye loop, open rim/mouth arcs between midline crossings
    paths: list[tuple[np.ndarray, bool]] = []
    for loop in loops:
        mids = np.flatnonzero(is_mid[loop])
        if len(mids) == 0:
            if is_left[loop[0]]:
                paths.append((loop, True))
            continue
        if len(mids) != 2:
            raise ValueError("a boundary loop crosses the midline more than twice")
        rolled = np.roll(loop, -mids[0])
        j = int(np.flatnonzero(is_mid[rolled])[1])
        a, b = rolled[: j + 1], np.concatenate([rolled[j:], rolled[:1]])
        paths.append((a, False) if is_left[a[1:-1]].all() else (b, False))
    # loops[0] is the longest loop: the outer rim (ICT's and the procedural head's)
    path_spacing = [spacing * (1.0 if np.isin(p, loops[0]).all() else feature_scale) for p, _ in paths]
    rim_vertices = np.unique(np.concatenate(loops))
    on_rim = np.zeros(model.num_vertices, bool)
    on_rim[rim_vertices] = True
    rim_required = set(required) | {int(v) for v in chart.midline if on_rim[v]}
    # full-resolution rim position of each vertex, to refine chords Delaunay misses
    path_pos = {}
    for pi, (p, _closed) in enumerate(paths):
        for k, v in enumerate(p):
            path_pos[int(v)] = (pi, k)
    return _Rims(lm, required, loops, paths, path_spacing, spacing, on_rim, rim_required, path_pos)


def _sample_interior(chart: _Chart, rims: _Rims, rim_keep: list[list[int]], banned: set[int], num_vertices: int,
                     feature_scale: float, feature_radius: float) -> np.ndarray:
    """Step 3: farthest-point sampling of the interior (left + midline), mirrors counted,
    denser near the eyes and mouth. Returns the kept half (sorted vertex ids)."""
    pos, flip, is_mid, on_rim = chart.pos, chart.flip, chart.is_mid, rims.on_rim
    seeds = sorted({v for r in rim_keep for v in r} | rims.required)
    cand = np.array(
        [v for v in np.concatenate([chart.left, chart.midline])
         if not on_rim[v] and int(v) not in banned and int(v) not in seeds],
        np.int64,
    )
    cand.sort()
    chosen = list(seeds)
    count = sum(1 if is_mid[v] else 2 for v in chosen)
    src = np.concatenate([pos[seeds], pos[flip[seeds]]])
    cp = pos[cand]
    # sizing field: points near the eyes and mouth count as farther, so they get denser
    hole_rim = np.concatenate([p for (p, _), h in zip(rims.paths, rims.path_spacing) if h != rims.spacing])
    hole_rim = np.concatenate([hole_rim, flip[hole_rim]])
    d_feat2 = np.full(len(cand), np.inf)
    for chunk in np.array_split(pos[hole_rim], max(1, len(hole_rim) // 256)):
        d_feat2 = np.minimum(d_feat2, ((pos[cand][:, None, :] - chunk[None]) ** 2).sum(-1).min(1))
    size = 1.0 - (1.0 - feature_scale) * np.exp(-d_feat2 / (feature_radius * rims.spacing) ** 2)
    inv_size2 = 1.0 / size**2
    d2 = np.full(len(cand), np.inf)
    for chunk in np.array_split(src, max(1, len(src) // 256)):
        d2 = np.minimum(d2, ((cp[:, None, :] - chunk[None]) ** 2).sum(-1).min(1))
    free = np.ones(len(cand), bool)
    mid_c = is_mid[cand]
    while count < num_vertices and free.any():
        score = np.where(free, d2 * inv_size2, -1.0)
        if num_vertices - count == 1 and (free & mid_c).any():
            score = np.where(mid_c, score, -1.0)
        i = int(np.argmax(score))
        v = int(cand[i])
        free[i] = False
        chosen.append(v)
        count += 1 if is_mid[v] else 2
        for q in (pos[v], pos[flip[v]]):
            d2 = np.minimum(d2, ((cp - q) ** 2).sum(-1))
    return np.array(sorted(chosen), np.int64)


def _triangulate_half(chart: _Chart, rims: _Rims, rim_keep: list[list[int]], half: np.ndarray) -> np.ndarray:
    """Step 4: Delaunay of the half in the symmetric chart, keeping the triangles inside
    the sampled rim polygon and outside the sampled holes. Returns (F, 3) model ids."""
    from scipy.spatial import Delaunay

    uv2, flip = chart.uv, chart.flip
    tri = half[Delaunay(uv2[half]).simplices]
    cen = uv2[tri].mean(1)
    keep = np.ones(len(tri), bool)
    polys2d = []
    for (_, closed), kept in zip(rims.paths, rim_keep):
        if closed:  # an eye: the hole is the loop itself (its mirror is the other eye)
            polys2d.append(("hole", uv2[kept]))
        else:  # open arc from midline to midline; close it with its mirror image
            arc = np.array(kept)
            ring = np.concatenate([arc, flip[arc[::-1][1:-1]]])
            polys2d.append(("arc", uv2[ring]))
    # the longest arc (by its UV polygon area) is the outer rim, the other the mouth
    arcs = [p for kind, p in polys2d if kind == "arc"]
    areas = [abs(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])) for p in arcs]
    outer_poly = arcs[int(np.argmax(areas))]
    outer = int(np.argmax(areas))
    hole_polys = [p for kind, p in polys2d if kind == "hole"] + [a for k, a in enumerate(arcs) if k != outer]
    keep &= _points_in_polygon(cen, outer_poly)
    for h in hole_polys:
        keep &= ~_points_in_polygon(cen, h)
    return tri[keep]


def _refine_rims(chart: _Chart, rims: _Rims, rim_keep: list[list[int]], half: np.ndarray, tri: np.ndarray,
                 extra_rim: set[int], banned: set[int]) -> bool:
    """Step 5: True when every sampled rim chord is a triangle edge and every kept vertex
    is used; else add rim vertices between chords' ends (``extra_rim``) or ban interior
    points crowding a chord (``banned``) for the next round and return False."""
    uv2, on_rim = chart.uv, rims.on_rim
    have = {(int(a), int(b)) for a, b in np.sort(_edges(tri), 1)}
    missing = []
    for (_, closed), kept in zip(rims.paths, rim_keep):
        ring = kept + ([kept[0]] if closed else [])
        for a, b in itertools.pairwise(ring):
            if (min(a, b), max(a, b)) not in have:
                missing.append((a, b))
    unused = set(map(int, half)) - set(map(int, np.unique(tri)))
    if not missing and not unused:
        return True
    for a, b in missing:
        pi, ka = rims.path_pos[a]
        _, kb = rims.path_pos[b]
        p, closed = rims.paths[pi]
        if closed and kb < ka:
            kb += len(p)
        if kb - ka >= 2:
            extra_rim.add(int(p[((ka + kb) // 2) % len(p)]))
        else:  # adjacent rim vertices: push away the interior points crowding the chord
            c = 0.5 * (uv2[a] + uv2[b])
            r2 = ((uv2[a] - c) ** 2).sum()
            for v in half:
                if not on_rim[v] and ((uv2[v] - c) ** 2).sum() < r2 and int(v) not in rims.required:
                    banned.add(int(v))
    for v in unused:
        if int(v) not in rims.required and not on_rim[v]:
            banned.add(int(v))
    return False


def _mirrored_topology(model: FaceModel, chart: _Chart, tri: np.ndarray, half: np.ndarray,
                       lm: np.ndarray) -> Topology:
    """Step 6: orient (positive UV area = outward, as the model's quads), mirror the half,
    renumber to topology ids and put the triangles in a canonical order."""
    uv2, flip = chart.uv, chart.flip
    a, b, c = uv2[tri[:, 0]], uv2[tri[:, 1]], uv2[tri[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri = np.where((area < 0)[:, None], tri[:, [0, 2, 1]], tri)
    tri_full = np.concatenate([tri, flip[tri][:, [0, 2, 1]]], axis=0)
    ict_index = np.unique(np.concatenate([half, flip[half]]))
    local = np.full(model.num_vertices, -1, np.int64)
    local[ict_index] = np.arange(len(ict_index))
    triangles = local[tri_full]
    # canonical order: rotate each triangle to start at its smallest index, then sort rows
    r = np.argmin(triangles, axis=1)
    triangles = np.stack([triangles[np.arange(len(r)), (r + k) % 3] for k in range(3)], 1)
    triangles = triangles[np.lexsort(triangles.T[::-1])]
    return Topology(
        ict_index=ict_index,
        triangles=triangles,
        flip_index=local[flip[ict_index]],
        landmarks68=local[lm],
        mean_shape=model.neutral[ict_index].astype(np.float32),
    )

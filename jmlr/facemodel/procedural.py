"""A tiny procedural head in the face model npz format, for tests without ``../shared``.

:func:`make_procedural_head` writes every key of the real model's npz with the same
meaning and layout: the same 14 regions in the same order (a narrow face first, with
eye and mouth holes, inside a slightly larger face; small patches for the head, mouth
and eye sockets, gums and teeth; two eyeball spheres whose front caps are the irises),
the 53 ARKit expression names (jawOpen, eyeBlink_L/R, mouthSmile_L/R move vertices,
the others are zero), a few smooth identity modes, a seamless UV chart of the narrow
face symmetric about ``u = 0.5`` and mirror-consistent ``landmarks68``. It is exactly
left/right symmetric, so :func:`jmlr.facemodel.build_topology` works on it.

Not a face anyone would recognise: a height field over a grid, about 1,500 vertices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmlr.facemodel.build import EXPRESSION_NAMES, REGIONS
from jmlr.facemodel.npz import write_npz

__all__ = ["make_procedural_head", "MATERIAL_NAMES"]

MATERIAL_NAMES = (
    "M_Face", "M_BackHead", "M_GumsTongue", "M_Teeth", "M_ScleraLeft", "M_IrisLeft",
    "M_ScleraRight", "M_IrisRight", "M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion",
    "M_EyeLashes",
)

_HALF_W, _HALF_H = 0.075, 0.10  # narrow-face half width / height, metres
_EYE = (0.032, 0.035)  # left eye centre (x, y)
_MOUTH_Y = -0.035


def _surface_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth of the face height field (metres, +z out of the face)."""
    base = 0.11 * np.sqrt(np.clip(1.0 - 0.55 * (x / _HALF_W) ** 2 - 0.25 * (y / _HALF_H) ** 2, 0.05, None))
    nose = 0.022 * np.exp(-((x / 0.012) ** 2) - ((y + 0.005) / 0.03) ** 2)
    sockets = -0.008 * sum(np.exp(-(((x - s * _EYE[0]) / 0.018) ** 2) - ((y - _EYE[1]) / 0.012) ** 2) for s in (1, -1))
    return base + nose + sockets


def _grid_quads(nx: int, ny: int) -> np.ndarray:
    """(nx-1)*(ny-1) counter-clockwise quads of an nx-by-ny vertex grid (row-major, x fastest)."""
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(ny - 1))
    a = (j * nx + i).ravel()
    return np.stack([a, a + 1, a + 1 + nx, a + nx], 1)


def _face(n_half_x: int, n_half_y: int):
    """Narrow face + one ring of outer face: vertices (V, 3), quads (P, 4), uv (V, 2), n_narrow."""
    nx, ny = 2 * n_half_x + 3, 2 * n_half_y + 3  # +1 ring each side beyond the narrow face
    gx = np.linspace(-1, 1, 2 * n_half_x + 1) * _HALF_W
    gy = np.linspace(-1, 1, 2 * n_half_y + 1) * _HALF_H
    dx, dy = gx[1] - gx[0], gy[1] - gy[0]
    xs = np.concatenate([[gx[0] - dx], gx, [gx[-1] + dx]])
    ys = np.concatenate([[gy[0] - dy], gy, [gy[-1] + dy]])
    X, Y = np.meshgrid(xs, ys)
    quads = _grid_quads(nx, ny)
    # holes: whole grid cells inside axis-aligned boxes (manifold by construction)
    cx = 0.5 * (X.ravel()[quads[:, 0]] + X.ravel()[quads[:, 1]])
    cy = 0.5 * (Y.ravel()[quads[:, 0]] + Y.ravel()[quads[:, 3]])
    hole = np.zeros(len(quads), bool)
    for ex in (_EYE[0], -_EYE[0]):
        hole |= (np.abs(cx - ex) < 0.012) & (np.abs(cy - _EYE[1]) < 0.005)
    hole |= (np.abs(cx) < 0.022) & (np.abs(cy - _MOUTH_Y) < 0.004)
    quads = quads[~hole]
    ring = (xs[0] == X) | (xs[-1] == X) | (ys[0] == Y) | (ys[-1] == Y)
    used = np.zeros(X.size, bool)
    used[quads.ravel()] = True
    # narrow-face vertices first, the outer ring after them (as ICT orders its regions)
    order = np.concatenate([np.flatnonzero(used & ~ring.ravel()), np.flatnonzero(used & ring.ravel())])
    remap = np.full(X.size, -1, np.int64)
    remap[order] = np.arange(len(order))
    x, y = X.ravel()[order], Y.ravel()[order]
    verts = np.stack([x, y, _surface_z(x, y)], 1)
    uv = np.stack([0.5 + 0.4 * x / (_HALF_W + dx), 0.5 + 0.4 * y / (_HALF_H + dy)], 1)
    n_narrow = int(np.count_nonzero(used & ~ring.ravel()))
    return verts, remap[quads], uv, n_narrow


def _patch(centre, size, n: int = 4):
    """A small flat n-by-n grid patch facing +z: vertices (n*n, 3), quads."""
    s = np.linspace(-0.5, 0.5, n)
    X, Y = np.meshgrid(s * size[0], s * size[1])
    v = np.stack([X.ravel(), Y.ravel(), np.zeros(n * n)], 1) + np.asarray(centre)
    return v, _grid_quads(n, n)


def _eyeball(centre, radius: float, n_lat: int = 8, n_lon: int = 12, n_iris_rings: int = 2):
    """UV sphere from the back pole to the front (+z) pole; the front rings are the iris.

    Returns vertices (V, 3), polygons (P, 4) with triangle fans at the poles (-1 padded),
    and n_sclera (the iris vertices are the last V - n_sclera).
    """
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]  # polar angle from the back (-z) pole
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    T, P = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), -np.cos(T)], -1).reshape(-1, 3)
    v = np.concatenate([[[0, 0, -1.0]], ring, [[0, 0, 1.0]]]) * radius + np.asarray(centre)
    back, front = 0, len(v) - 1
    polys = []
    for k in range(n_lon):
        a, b = 1 + k, 1 + (k + 1) % n_lon
        polys.append([back, b, a, -1])
    for r in range(n_lat - 2):
        for k in range(n_lon):
            a = 1 + r * n_lon + k
            b = 1 + r * n_lon + (k + 1) % n_lon
            polys.append([a, b, b + n_lon, a + n_lon])
    last = 1 + (n_lat - 2) * n_lon
    for k in range(n_lon):
        a, b = last + k, last + (k + 1) % n_lon
        polys.append([a, b, front, -1])
    n_sclera = len(v) - 1 - n_iris_rings * n_lon
    return v, np.asarray(polys, np.int64), n_sclera


def _landmarks(verts: np.ndarray, n_narrow: int) -> np.ndarray:
    """iBUG-68 landmarks snapped to narrow-face vertices, mirror-consistent by construction."""
    from jmlr.facemodel.topology import IBUG68_FLIP, mirror_pairs

    ex, ey = _EYE
    pts = np.zeros((68, 2))
    t = np.linspace(-1, 1, 17)  # jaw 0-16, from the subject's right (x < 0) to left
    pts[:17] = np.stack([0.07 * np.sin(t * 1.4) / np.sin(1.4), 0.01 - 0.085 * np.cos(t * 1.2) ** 0.7], 1)
    pts[17:22] = np.stack([np.linspace(-0.058, -0.012, 5), 0.055 + 0.006 * np.sin(np.linspace(0.3, 2.8, 5))], 1)
    pts[27:31] = np.stack([np.zeros(4), np.linspace(0.03, -0.005, 4)], 1)
    pts[31:33] = [[-0.012, -0.015], [-0.006, -0.017]]
    pts[33] = [0, -0.018]
    pts[36:42] = [[-ex - 0.012, ey], [-ex - 0.005, ey + 0.005], [-ex + 0.005, ey + 0.005],
                  [-ex + 0.012, ey], [-ex + 0.005, ey - 0.005], [-ex - 0.005, ey - 0.005]]
    my = _MOUTH_Y
    pts[48:51] = [[-0.026, my], [-0.017, my + 0.009], [-0.007, my + 0.011]]
    pts[51] = [0, my + 0.010]
    pts[57] = [0, my - 0.012]
    pts[58:60] = [[-0.008, my - 0.011], [-0.018, my - 0.008]]
    pts[60:62] = [[-0.022, my], [-0.01, my + 0.004]]
    pts[62] = [0, my + 0.004]
    pts[66] = [0, my - 0.004]
    pts[67] = [-0.01, my - 0.004]
    narrow = verts[:n_narrow]
    flip, _ = mirror_pairs(narrow)
    lm = np.full(68, -1, np.int64)
    for i in range(68):
        j = int(IBUG68_FLIP[i])
        if i == j:
            d = ((narrow[:, :2] - pts[i]) ** 2).sum(1) + 1.0 * (flip != np.arange(n_narrow))
            lm[i] = int(np.argmin(d))
        elif pts[i, 0] < 0:  # right-side template point: snap it, mirror it
            lm[i] = int(np.argmin(((narrow[:, :2] - pts[i]) ** 2).sum(1)))
            lm[j] = int(flip[lm[i]])
    return lm


def make_procedural_head(
    path: str | Path,
    num_identity: int = 8,
    resolution: tuple[int, int] = (15, 20),
) -> Path:
    """Write a tiny symmetric head npz (same keys, dtypes, regions as the real model).

    Args:
        path: the npz to write.
        num_identity: identity modes (smooth, ~1-4 mm, falling off with the index).
        resolution: narrow-face grid half-size (columns, rows) each side of the midline;
            the default gives ~1,300 face vertices.

    Returns:
        ``path``. Deterministic (no randomness).
    """
    face_v, face_q, face_uv, n_narrow = _face(*resolution)
    parts_v = [face_v]
    parts_q = [face_q]
    mats = [np.zeros(len(face_q), np.int64)]
    ranges = {"face": (0, len(face_v) - 1), "narrow_face": (0, n_narrow - 1)}
    start = len(face_v)

    def add(name, v, q, material):
        nonlocal start
        parts_v.append(v)
        parts_q.append(np.where(q >= 0, q + start, -1))
        mats.append(np.full(len(q), material, np.int64))
        ranges[name] = (start, start + len(v) - 1)
        start += len(v)

    add("head_neck", *_patch((0, 0.02, -0.02), (0.15, 0.2)), 1)
    add("mouth_socket", *_patch((0, _MOUTH_Y, 0.07), (0.04, 0.02)), 0)
    add("eye_socket_left", *_patch((_EYE[0], _EYE[1], 0.075), (0.025, 0.012)), 0)
    add("eye_socket_right", *_patch((-_EYE[0], _EYE[1], 0.075), (0.025, 0.012)), 0)
    add("gums_tongue", *_patch((0, _MOUTH_Y - 0.005, 0.065), (0.03, 0.01)), 2)
    add("teeth", *_patch((0, _MOUTH_Y, 0.075), (0.035, 0.008)), 3)
    for side, name, (sclera_mat, iris_mat) in ((1, "left", (4, 5)), (-1, "right", (6, 7))):
        v, q, n_sclera = _eyeball((side * _EYE[0], _EYE[1], 0.072), 0.012)
        first = start
        ranges[f"sclera_{name}"] = (first, first + n_sclera - 1)
        ranges[f"iris_{name}"] = (first + n_sclera, first + len(v) - 1)
        iris = (q[:, :3] >= n_sclera).any(1)
        add(f"eyeball_{name}", v, q, sclera_mat)
        mats[-1][iris] = iris_mat
    neutral = np.concatenate(parts_v).astype(np.float64)
    quads = np.concatenate(parts_q)
    face_material = np.concatenate(mats)
    V = len(neutral)

    # UV: the face chart (symmetric about u = 0.5), then one (0, 0) entry shared by all
    # other polygons (they need no texture here)
    uv = np.concatenate([face_uv, [[0.0, 0.0]]]).astype(np.float32)
    quads_uv = np.where(quads >= 0, np.where(quads < len(face_v), quads, len(face_v)), -1)

    x, y, _ = neutral.T
    xn, yn = x / _HALF_W, y / _HALF_H
    identity = np.zeros((num_identity, V, 3))
    for k in range(num_identity):
        amp = 0.004 / (1 + k)
        f = k // 3 + 1
        pattern = (np.cos(f * np.pi * yn / 2), np.cos(f * np.pi * xn / 2) * np.sin(f * yn + k),
                   np.cos(f * xn) * np.cos(f * yn))
        identity[k, :, k % 3] = amp * pattern[k % 3] * (xn if k % 3 == 0 else 1.0)

    expression = np.zeros((len(EXPRESSION_NAMES), V, 3))
    lower = np.clip((_MOUTH_Y + 0.002 - y) / 0.06, 0, 1) * (np.abs(xn) < 1.2) * (y < _MOUTH_Y + 0.002)
    expression[EXPRESSION_NAMES.index("jawOpen"), :, 1] = -0.03 * lower
    expression[EXPRESSION_NAMES.index("jawOpen"), :, 2] = -0.015 * lower
    for side, suffix in ((1, "L"), (-1, "R")):
        ex = side * _EYE[0]
        upper = np.exp(-(((x - ex) / 0.012) ** 2) - ((y - _EYE[1] - 0.005) / 0.006) ** 2) * (y > _EYE[1])
        expression[EXPRESSION_NAMES.index(f"eyeBlink_{suffix}"), :, 1] = -0.009 * upper
        corner = np.exp(-(((x - side * 0.022) / 0.012) ** 2) - ((y - _MOUTH_Y) / 0.012) ** 2)
        smile = EXPRESSION_NAMES.index(f"mouthSmile_{suffix}")
        expression[smile, :, 0] = side * 0.006 * corner
        expression[smile, :, 1] = 0.008 * corner
        expression[smile, :, 2] = -0.004 * corner
    # only the face moves with expressions (eyeballs and sockets stay put)
    expression[:, ranges["face"][1] + 1 :] = 0

    lm = _landmarks(neutral, n_narrow)
    return write_npz(
        path,
        neutral=neutral.astype(np.float32),
        identity_basis=identity.astype(np.float16),
        expression_basis=expression.astype(np.float16),
        expression_names=np.array(EXPRESSION_NAMES),
        quads=quads.astype(np.int32),
        quads_uv=quads_uv.astype(np.int32),
        uv=uv,
        face_material=face_material.astype(np.int16),
        material_names=np.array(MATERIAL_NAMES),
        landmarks68=lm.astype(np.int32),
        region_names=np.array([r[0] for r in REGIONS]),
        region_ranges=np.array([ranges[r[0]] for r in REGIONS], np.int32),
    )

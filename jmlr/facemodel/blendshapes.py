"""ARKit blendshape weights of a predicted face mesh, by a bounded linear least-squares fit.

A topology vertex ``i`` is face-model vertex ``ict_index[i]``, so the morphable model
restricted to those rows explains every mesh the networks predict:

    V ≈ similarity( neutral + sum_k a_k * identity_k + sum_e w_e * expression_e )

with identity weights ``a`` in standard deviations (prior ``N(0, 1)``) and expression
weights ``w`` in [0, 1] (ARKit semantics). :class:`BlendshapeSolver` finds ``w`` (and
``a`` and a small similarity correction) minimising, per mesh,

    ||r||^2 + noise_m^2 * ||a||^2 + l2 * ||w||^2 + l1 * sum(w) + 1e-9 * ||rigid||^2

where ``r`` is the (N*3,) residual in metres. The similarity is linearised about the
neutral head (translation, rotation about the neutral's centroid, scale: 7 numbers), which
is enough because predicted vertices are already in the head frame. Identity and rigid
terms are eliminated in closed form once per basis, leaving a 53-variable box QP per mesh
(:func:`jmlr.facemodel.boxqp.box_qp`). All matrices depend only on the basis and the
options, so :class:`BlendshapeSolver` builds them once and fits a batch in one go.

With the network's 2D points as well (:meth:`BlendshapeSolver.fit_with_points`), the
same weights also explain where those points are in the image: the residual of the
model's projection (the identity and alignment of the 3D fit, posed by PnP, linearised in
the expression weights and a small pose correction) joins the objective with the weight
``points_weight``, in metres at the face (normalised image coordinates times depth), so
faces near and far count alike. The networks learn the 2D points long before the shape,
and an open jaw or a closed eye moves them visibly: the 2D term carries most of what the
expression can be read from (docs/blendshapes.md).

Serving needs no face model: the basis restricted to the shipped topology is
``jmlr/facemodel/data/arkit_like_blendshapes.npz`` (built by ``jmlr facemodel
blendshapes``), and :meth:`BlendshapeBasis.for_topology` matches it to a model's topology
by face-model vertex index.

Names: ICT-FaceKit's 53 expressions are ARKit's 52 blendshapes except that it splits
``browInnerUp`` and ``cheekPuff`` into ``_L``/``_R`` halves and has no ``tongueOut``.
:func:`arkit_mapping` renames ``eyeBlink_L`` to ``eyeBlinkLeft`` and so on, and reports
the two split shapes as the mean of their halves, giving 51 ARKit weights; ``tongueOut``
cannot be estimated from a face surface without a tongue and is left out.

Attribution: the shipped basis is derived from ICT-FaceKit, MIT License, Copyright (c)
2020 USC Institute for Creative Technologies (see NOTICE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jmlr.facemodel.boxqp import box_qp
from jmlr.facemodel.npz import write_npz

__all__ = [
    "ARKIT_BLENDSHAPE_NAMES",
    "ARKIT_GROUPS",
    "BlendshapeBasis",
    "BlendshapeFit",
    "BlendshapeSolver",
    "arkit_group",
    "arkit_mapping",
    "default_blendshape_basis_path",
    "expression_flip_index",
    "fit_blendshapes",
    "soft_threshold",
    "threshold_per_name",
]

# Apple's ARFaceAnchor.BlendShapeLocation names, in Apple's documentation order.
ARKIT_BLENDSHAPE_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight",
    "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)
assert len(ARKIT_BLENDSHAPE_NAMES) == 52

# The groups errors are reported in (docs/blendshapes.md) and thresholds set per: name prefixes.
ARKIT_GROUPS: dict[str, tuple[str, ...]] = {
    "brows": ("brow",), "eyes": ("eye",), "jaw": ("jaw",), "mouth": ("mouth",), "cheeks/nose": ("cheek", "nose"),
}

_SIDES = {"_L": "Left", "_R": "Right"}
_RIGID = 7  # translation (3), rotation (3), scale (1)


def default_blendshape_basis_path() -> Path:
    """The shipped basis for the default topology, ``jmlr/facemodel/data/arkit_like_blendshapes.npz``."""
    return Path(__file__).resolve().parent / "data" / "arkit_like_blendshapes.npz"


def arkit_mapping(model_names: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """ARKit names and the (A, E) matrix taking face-model expression weights to them.

    ``eyeBlink_L`` -> ``eyeBlinkLeft``; a name ARKit has only unsided (``browInnerUp``,
    ``cheekPuff``) is the mean of the model's ``_L`` and ``_R`` halves. Model names ARKit
    lacks are dropped; ARKit names the model lacks (``tongueOut`` for ICT-FaceKit) are
    absent. Rows follow :data:`ARKIT_BLENDSHAPE_NAMES` order.
    """
    sources: dict[str, list[int]] = {}
    for e, name in enumerate(model_names):
        name = str(name)
        base, side = (name[:-2], _SIDES[name[-2:]]) if name[-2:] in _SIDES else (name, "")
        if base + side in ARKIT_BLENDSHAPE_NAMES:
            sources.setdefault(base + side, []).append(e)
        elif base in ARKIT_BLENDSHAPE_NAMES:
            sources.setdefault(base, []).append(e)
    names = tuple(n for n in ARKIT_BLENDSHAPE_NAMES if n in sources)
    matrix = np.zeros((len(names), len(model_names)))
    for a, n in enumerate(names):
        matrix[a, sources[n]] = 1.0 / len(sources[n])
    return names, matrix


def arkit_group(name: str) -> str | None:
    """The :data:`ARKIT_GROUPS` group of an ARKit name (``None`` for ``tongueOut``)."""
    return next((g for g, prefixes in ARKIT_GROUPS.items() if name.startswith(prefixes)), None)


def soft_threshold(weights: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Weights in [0, 1] with everything up to ``threshold`` taken as 0 and the rest
    stretched back onto [0, 1]: ``clip((w - t) / (1 - t), 0, 1)``.

    ``threshold`` is one number or one per weight (broadcast over the last axis, as from
    :func:`threshold_per_name`).

    Why: a learned head trained to miss no active shape answers small weights for shapes
    it is unsure of; most of those are in fact at rest. The thresholds are chosen on
    held-out faces (bench/bench_blendshapes.py)."""
    t = np.asarray(threshold, np.float64)
    if not ((t >= 0.0) & (t < 1.0)).all():
        raise ValueError(f"thresholds must be in [0, 1), got {threshold}")
    return np.clip((np.asarray(weights, np.float64) - t) / (1.0 - t), 0.0, 1.0)


def threshold_per_name(names: Sequence[str], per_group: Mapping[str, float], default: float) -> np.ndarray:
    """(A,) thresholds for ARKit ``names``: their group's in ``per_group``, else ``default``."""
    unknown = set(per_group) - set(ARKIT_GROUPS)
    if unknown:
        raise ValueError(f"unknown blendshape groups {sorted(unknown)} (known: {list(ARKIT_GROUPS)})")
    return np.array([per_group.get(arkit_group(n) or "", default) for n in names], np.float64)


_MIRRORED = (("_L", "_R"), ("Left", "Right"))


def expression_flip_index(model_names: Sequence[str]) -> np.ndarray:
    """(E,) int64: the weight index of each expression's mirror image, an involution.

    Mirroring a face swaps its sides: ``eyeBlink_L`` <-> ``eyeBlink_R``, ``jawLeft`` <->
    ``jawRight``; an unsided shape (``jawOpen``) is its own mirror. So a flipped training
    image takes ``weights[:, expression_flip_index(names)]``. A sided name whose mirror is
    missing raises ``ValueError``.
    """
    names = [str(n) for n in model_names]
    where = {n: i for i, n in enumerate(names)}
    index = np.arange(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        for a, b in _MIRRORED:
            for this, other in ((a, b), (b, a)):
                if name.endswith(this):
                    mirror = name[: -len(this)] + other
                    if mirror not in where:
                        raise ValueError(f"expression {name!r} has no mirror {mirror!r} among the names")
                    index[i] = where[mirror]
    return index


@dataclass(eq=False)
class BlendshapeBasis:
    """The morphable model restricted to a vertex subset, everything a fit needs.

    Attributes:
        ict_index: (N,) int64 face-model vertex of each row.
        neutral: (N, 3) float32 metres.
        identity: (K, N, 3) float32 metres per standard deviation.
        expression: (E, N, 3) float32 metres at weight 1.
        expression_names: (E,) the model's names (ICT-FaceKit style, ``eyeBlink_L``).
    """

    ict_index: np.ndarray
    neutral: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    expression_names: tuple[str, ...]

    @property
    def num_vertices(self) -> int:
        return int(self.ict_index.shape[0])

    @classmethod
    def from_facemodel(cls, model, topology, num_identity: int | None = None) -> BlendshapeBasis:
        """Restrict a `FaceModel` to a `Topology`'s vertices (its first ``num_identity`` modes)."""
        idx = np.asarray(topology.ict_index, np.int64)
        k = model.num_identity if num_identity is None else min(int(num_identity), model.num_identity)
        return cls(
            ict_index=idx,
            neutral=model.neutral[idx].astype(np.float32),
            identity=model.identity_basis[:k][:, idx].astype(np.float32),
            expression=model.expression_basis[:, idx].astype(np.float32),
            expression_names=tuple(model.expression_names),
        )

    def save(self, path: str | Path) -> Path:
        """Write an npz: bases as float16 (as the face model stores them), the rest exact."""
        return write_npz(
            path,
            ict_index=self.ict_index.astype(np.int32),
            neutral=self.neutral.astype(np.float32),
            identity=self.identity.astype(np.float16),
            expression=self.expression.astype(np.float16),
            expression_names=np.array(self.expression_names),
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> BlendshapeBasis:
        """Load an npz written by :meth:`save` (default :func:`default_blendshape_basis_path`)."""
        path = Path(path) if path is not None else default_blendshape_basis_path()
        with np.load(path, allow_pickle=False) as d:
            return cls(
                ict_index=d["ict_index"].astype(np.int64),
                neutral=d["neutral"].astype(np.float32),
                identity=d["identity"].astype(np.float32),
                expression=d["expression"].astype(np.float32),
                expression_names=tuple(str(s) for s in d["expression_names"]),
            )

    def for_topology(self, topology, atol_m: float = 1e-5) -> BlendshapeBasis:
        """This basis reordered to ``topology``'s vertices.

        Raises:
            ValueError: a topology vertex is not in the basis, or the topology's mean
                shape is not this basis' neutral (a topology of another face model).
        """
        topo_idx = np.asarray(topology.ict_index, np.int64)
        pos = {int(v): i for i, v in enumerate(self.ict_index)}
        missing = [int(v) for v in topo_idx if int(v) not in pos]
        if missing:
            raise ValueError(
                f"{len(missing)} of the topology's {len(topo_idx)} vertices are not in the blendshape basis")
        rows = np.array([pos[int(v)] for v in topo_idx], np.int64)
        neutral = self.neutral[rows]
        mean = np.asarray(topology.mean_shape, np.float32)
        if mean.shape != neutral.shape or not np.allclose(mean, neutral, atol=atol_m):
            raise ValueError(
                "the topology's mean shape is not the blendshape basis' neutral head (another face model?)")
        return BlendshapeBasis(topo_idx, neutral, self.identity[:, rows], self.expression[:, rows],
                               self.expression_names)


@dataclass
class BlendshapeFit:
    """Result of a fit of B meshes.

    Attributes:
        expression: (B, E) weights in [0, 1], face-model order (``BlendshapeSolver.expression_names``).
        arkit: (B, A) the same as ARKit weights (``BlendshapeSolver.arkit_names``), in [0, 1].
        identity: (B, K) identity weights, standard deviations.
        rigid: (B, 7) the linearised similarity: translation (m), rotation vector (rad), log-scale.
        rms_m: (B,) RMS per-coordinate residual, metres.

    The last three are None for a fit called with ``details=False``; a single (N, 3)
    mesh gives unbatched arrays.
    """

    expression: np.ndarray
    arkit: np.ndarray
    identity: np.ndarray | None = None
    rigid: np.ndarray | None = None
    rms_m: np.ndarray | None = None


class BlendshapeSolver:
    """Fits expression weights to meshes of one topology; build once, call per batch.

    Args:
        basis: a :class:`BlendshapeBasis` in the meshes' vertex order.
        noise_m: expected per-coordinate error of the meshes (metres); the identity
            prior's strength (a mesh that noisy cannot tell a small identity change from
            noise). About the network's vertex error.
        l2: ridge on the expression weights (m^2).
        l1: penalty on the sum of the expression weights (m^2): most are 0 in any frame.
        rigid: also fit the small similarity (set False for meshes known to be aligned).
        num_identity: use only the first identity modes (None: all in the basis).
        points_vertices: how many vertices (those the expressions move most) the 2D term
            of :meth:`fit_with_points` reads (None: all).

    Call with vertices (B, N, 3) or (N, 3) metres in the head frame; see :class:`BlendshapeFit`.
    """

    def __init__(self, basis: BlendshapeBasis, noise_m: float = 1e-3, l2: float = 1e-6, l1: float = 1e-6,
                 rigid: bool = True, num_identity: int | None = None, points_vertices: int | None = 400) -> None:
        self.basis = basis
        self.expression_names = basis.expression_names
        self.arkit_names, self._to_arkit = arkit_mapping(basis.expression_names)
        n = basis.num_vertices
        self._neutral = basis.neutral.astype(np.float64).reshape(-1)
        E = basis.expression.reshape(len(basis.expression), -1).astype(np.float64).T  # (3N, E)
        ident = basis.identity[:num_identity] if num_identity is not None else basis.identity
        cols = [ident.reshape(len(ident), -1).astype(np.float64).T]
        prior = [np.full(len(ident), float(noise_m) ** 2)]
        if rigid:
            cols.append(_similarity_columns(basis.neutral.astype(np.float64)))
            prior.append(np.full(_RIGID, 1e-9))
        U = np.concatenate(cols, axis=1)  # (3N, K[+7]) unbounded, ridge-regularised terms
        self.num_identity = len(ident)
        self._rigid = rigid
        # Eliminating u: argmin_u ||d - E w - U u||^2 + u^T D u = S (d - E w) with
        # S = (U^T U + D)^-1 U^T; what is left is (d - E w)^T Q (d - E w), Q = I - U S.
        S = np.linalg.solve(U.T @ U + np.diag(np.concatenate(prior)), U.T)
        QE = E - U @ (S @ E)  # Q E, without forming the 3N x 3N Q
        self._H = E.T @ QE + float(l2) * np.eye(E.shape[1])
        self._G = QE.T  # g = E^T Q d = (Q E)^T d since Q is symmetric
        self._l1 = float(l1)
        self._S, self._E, self._U = S, E, U
        self._n = n
        # The 2D term of `fit_with_points` reads the vertices the expressions move most.
        self._E3 = E.reshape(n, 3, E.shape[1])
        if points_vertices is None or points_vertices >= n:
            self._pts = np.arange(n)
        else:  # each expression's most moved vertices, in turn, until there are enough
            order = np.argsort(-np.linalg.norm(self._E3, axis=1), axis=0)  # (n, E)
            self._pts = np.sort(np.asarray(list(dict.fromkeys(order.reshape(-1).tolist()))[: int(points_vertices)]))
        rows = (3 * self._pts[:, None] + np.arange(3)).reshape(-1)
        self._E3_pts = np.ascontiguousarray(self._E3[self._pts])
        self._neutral_pts, self._U_pts = self._neutral[rows], np.ascontiguousarray(U[rows])

    def __call__(self, vertices: np.ndarray, details: bool = True) -> BlendshapeFit:
        """Fit (B, N, 3) or (N, 3) head-frame vertices (metres).

        ``details=False`` skips ``identity``, ``rigid`` and ``rms_m`` (left None): two
        (N*3 x K) products, a third of the cost of a single-mesh call.
        """
        V = np.asarray(vertices, np.float64)
        single = V.ndim == 2
        if V.shape[-2:] != (self._n, 3) or V.ndim not in (2, 3):
            raise ValueError(f"vertices must be (B, {self._n}, 3) or ({self._n}, 3), got {V.shape}")
        d = V.reshape(-1, self._n * 3) - self._neutral
        w = box_qp(self._H, d @ self._G.T - 0.5 * self._l1, 0.0, 1.0)
        fit = BlendshapeFit(expression=w, arkit=np.clip(w @ self._to_arkit.T, 0.0, 1.0))
        if details:
            rest = d - w @ self._E.T
            u = rest @ self._S.T
            r = rest - u @ self._U.T
            fit.identity = u[:, : self.num_identity]
            fit.rigid = u[:, self.num_identity:] if self._rigid else np.zeros((len(w), _RIGID))
            fit.rms_m = np.sqrt((r**2).mean(1))
        if single:
            fit = BlendshapeFit(*(None if a is None else a[0] for a in
                                  (fit.expression, fit.arkit, fit.identity, fit.rigid, fit.rms_m)))
        return fit

    def fit_with_points(self, vertices: np.ndarray, points: np.ndarray, R_cv: np.ndarray, t_cv: np.ndarray,
                        K: np.ndarray, points_weight: float = 1.0) -> BlendshapeFit:
        """Fit (B, N, 3) head-frame vertices (metres) and the network's (B, N, 2) image
        points (px) of the same faces, posed by PnP: ``R_cv`` (B, 3, 3), ``t_cv`` (B, 3)
        world -> OpenCV camera, ``K`` (3, 3) or (B, 3, 3) intrinsics.

        Objective: the 3D fit's (``__call__``) plus ``points_weight`` times the squared
        2D residual in metres at the face (normalised image coordinates times depth) of
        the most expressive vertices (``points_vertices``), for the model with the 3D fit's
        identity and alignment, posed by ``R_cv``, ``t_cv`` and a small pose correction
        (eliminated), linearised in the expression weights. ``points_weight`` 0 is the 3D
        fit. Returns expression and ARKit weights (``identity``, ``rigid``, ``rms_m`` of
        the 3D part are None).
        """
        V = np.asarray(vertices, np.float64)
        single = V.ndim == 2
        if single:
            V, points = V[None], np.asarray(points)[None]
            R_cv, t_cv = np.asarray(R_cv)[None], np.asarray(t_cv)[None]
            K = np.asarray(K) if np.ndim(K) == 2 else np.asarray(K)[None]
        if V.shape[-2:] != (self._n, 3) or V.ndim != 3:
            raise ValueError(f"vertices must be (B, {self._n}, 3) or ({self._n}, 3), got {V.shape}")
        B = len(V)
        P2 = np.asarray(points, np.float64).reshape(B, self._n, 2)
        R = np.asarray(R_cv, np.float64).reshape(B, 3, 3)
        t = np.asarray(t_cv, np.float64).reshape(B, 3)
        Ks = np.broadcast_to(np.asarray(K, np.float64), (B, 3, 3))
        d = V.reshape(B, self._n * 3) - self._neutral
        g3 = d @ self._G.T
        w3 = box_qp(self._H, g3 - 0.5 * self._l1, 0.0, 1.0)
        # The 3D fit's identity and alignment (its expression left out): where the 2D
        # residual is linearised.
        u = (d - w3 @ self._E.T) @ self._S.T
        X0 = (self._neutral_pts + u @ self._U_pts.T).reshape(B, len(self._pts), 3)
        E3 = self._E3_pts  # (n, 3, E)
        w = np.empty_like(w3)
        lam = float(points_weight)
        for b in range(B):
            if lam <= 0:
                w[b] = w3[b]
                continue
            Xc = X0[b] @ R[b].T + t[b]  # (n, 3) OpenCV camera, metres
            z = np.maximum(Xc[:, 2], 1e-6)
            q = Xc[:, :2] / z[:, None]
            obs = np.concatenate([P2[b, self._pts], np.ones((len(q), 1))], 1) @ np.linalg.inv(Ks[b]).T
            e = ((obs[:, :2] - q) * z[:, None]).reshape(-1)  # (2n,) metres at the face
            # d(normalised point) * depth = P dXc, P = [[1, 0, -qx], [0, 1, -qy]].
            P = np.zeros((len(q), 2, 3))
            P[:, 0, 0] = P[:, 1, 1] = 1.0
            P[:, :, 2] = -q
            A_w = (P @ (R[b] @ E3)).reshape(-1, E3.shape[2])
            # omega x Xc + tau = [-[Xc]x | I] (omega, tau): the pose correction's columns.
            rigid = np.zeros((len(q), 3, 6))
            rigid[:, 0, 1], rigid[:, 0, 2], rigid[:, 1, 2] = Xc[:, 2], -Xc[:, 1], Xc[:, 0]
            rigid[:, 1, 0], rigid[:, 2, 0], rigid[:, 2, 1] = -Xc[:, 2], Xc[:, 1], -Xc[:, 0]
            rigid[:, 0, 3] = rigid[:, 1, 4] = rigid[:, 2, 5] = 1.0
            A_d = (P @ rigid).reshape(-1, 6)
            # Eliminate the pose correction: project A_w and e off A_d's columns.
            coef = np.linalg.solve(A_d.T @ A_d + 1e-12 * np.eye(6), A_d.T @ np.column_stack([A_w, e]))
            rest = np.column_stack([A_w, e]) - A_d @ coef
            H2 = A_w.T @ rest[:, :-1]
            g2 = A_w.T @ rest[:, -1]
            w[b] = box_qp(self._H + lam * H2, g3[b] + lam * g2 - 0.5 * self._l1, 0.0, 1.0, x0=w3[b][None])
        fit = BlendshapeFit(expression=w, arkit=np.clip(w @ self._to_arkit.T, 0.0, 1.0))
        if single:
            fit = BlendshapeFit(fit.expression[0], fit.arkit[0])
        return fit

    def arkit_dict(self, arkit_row: np.ndarray, decimals: int = 4) -> dict[str, float]:
        """``{arkitName: weight}`` for one row of :attr:`BlendshapeFit.arkit`."""
        return {n: round(float(v), decimals) for n, v in zip(self.arkit_names, arkit_row)}


def _similarity_columns(neutral: np.ndarray) -> np.ndarray:
    """(3N, 7) derivatives of a similarity at the identity, applied to ``neutral`` (N, 3):
    translation x/y/z, rotation about x/y/z through the centroid, log-scale about it."""
    c = neutral - neutral.mean(0)
    n = len(neutral)
    cols = np.zeros((n, 3, _RIGID))
    cols[:, 0, 0] = cols[:, 1, 1] = cols[:, 2, 2] = 1.0
    for k in range(3):
        axis = np.zeros(3)
        axis[k] = 1.0
        cols[:, :, 3 + k] = np.cross(axis, c)
    cols[:, :, 6] = c
    return cols.reshape(n * 3, _RIGID)


def fit_blendshapes(vertices: np.ndarray, basis: BlendshapeBasis, **options) -> BlendshapeFit:
    """One-off fit (builds a :class:`BlendshapeSolver`; keep one to fit repeatedly)."""
    return BlendshapeSolver(basis, **options)(vertices)

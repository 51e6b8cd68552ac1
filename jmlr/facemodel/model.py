"""The ICT-FaceKit morphable head, loaded from its npz (see ``../shared/facemodel/README.md``).

A head is ``neutral + identity @ identity_basis + expression @ expression_basis``, in
metres, in the model's head frame (x to the subject's left, y up, z out of the face).
Identity weights are in standard deviations (``N(0, 1)`` per mode); expression weights
are ARKit blendshape weights in [0, 1].

The bases stay float16 in memory (as stored) and are cast to float32 per use, on the
vertex subset asked for: a renderer that needs only the 1,220 topology vertices never
pays for the other 23,000.

Attribution: ICT-FaceKit, MIT License, Copyright (c) 2020 USC Institute for Creative
Technologies. Anything made from the model carries this attribution (see NOTICE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jmlr.paths import FACEMODEL_ENV, default_facemodel_path

__all__ = ["FaceModel", "FaceModelNotFound", "FaceModelBases", "NPZ_KEYS"]

# Every key of the npz format (``jmlr facemodel build`` and make_procedural_head write them all).
NPZ_KEYS = (
    "neutral",
    "identity_basis",
    "expression_basis",
    "expression_names",
    "quads",
    "quads_uv",
    "uv",
    "face_material",
    "material_names",
    "landmarks68",
    "region_names",
    "region_ranges",
)


class FaceModelNotFound(FileNotFoundError):
    """The face model npz is missing; the message says how to get one."""


@dataclass(frozen=True)
class FaceModelBases:
    """Float tensors of the model on one device, ready for batched evaluation.

    ``neutral`` (V, 3), ``identity`` (K, V*3), ``expression`` (E, V*3), where V is the
    number of vertices asked for (all, or a subset such as ``Topology.ict_index``).
    """

    neutral: Any
    identity: Any
    expression: Any


@dataclass(eq=False)
class FaceModel:
    """Morphable head: neutral (V, 3) float32 m, bases (K|E, V, 3) float16 m (deltas).

    Build with :meth:`load`; the other fields mirror the npz keys.
    """

    neutral: np.ndarray
    identity_basis: np.ndarray
    expression_basis: np.ndarray
    expression_names: tuple[str, ...]
    quads: np.ndarray
    quads_uv: np.ndarray
    uv: np.ndarray
    face_material: np.ndarray
    material_names: tuple[str, ...]
    landmarks68: np.ndarray
    region_names: tuple[str, ...]
    region_ranges: np.ndarray
    path: Path | None = None
    _torch_cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None) -> FaceModel:
        """Load the npz at ``path`` (default :func:`jmlr.paths.default_facemodel_path`).

        Raises:
            FaceModelNotFound: the file does not exist.
            KeyError: the file lacks one of :data:`NPZ_KEYS`.
        """
        path = Path(path).expanduser() if path is not None else default_facemodel_path()
        if not path.is_file():
            raise FaceModelNotFound(
                f"face model not found at {path}. Point ${FACEMODEL_ENV} at an ICT-FaceKit npz, "
                "or build one from a clone of https://github.com/ICT-VGL/ICT-FaceKit with "
                "`jmlr facemodel build ICT_FACEKIT_DIR --out FILE.npz`."
            )
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in NPZ_KEYS if k not in data.files]
            if missing:
                raise KeyError(f"{path} is not a face model npz: missing keys {missing}")
            arrays = {k: data[k] for k in NPZ_KEYS}
        return cls(
            neutral=arrays["neutral"].astype(np.float32, copy=False),
            identity_basis=arrays["identity_basis"],
            expression_basis=arrays["expression_basis"],
            expression_names=tuple(str(s) for s in arrays["expression_names"]),
            quads=arrays["quads"].astype(np.int32, copy=False),
            quads_uv=arrays["quads_uv"].astype(np.int32, copy=False),
            uv=arrays["uv"].astype(np.float32, copy=False),
            face_material=arrays["face_material"],
            material_names=tuple(str(s) for s in arrays["material_names"]),
            landmarks68=arrays["landmarks68"].astype(np.int64),
            region_names=tuple(str(s) for s in arrays["region_names"]),
            region_ranges=arrays["region_ranges"].astype(np.int64),
            path=path,
        )

    # ------------------------------------------------------------------ sizes, lookups
    @property
    def num_vertices(self) -> int:
        return int(self.neutral.shape[0])

    @property
    def num_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def num_expressions(self) -> int:
        return int(self.expression_basis.shape[0])

    def region(self, name: str) -> slice:
        """Vertex slice of a region (``region_ranges`` are inclusive; the slice is not)."""
        try:
            i = self.region_names.index(name)
        except ValueError:
            raise KeyError(f"unknown region {name!r}; known: {', '.join(self.region_names)}") from None
        first, last = (int(v) for v in self.region_ranges[i])
        return slice(first, last + 1)

    def expression_index(self, name: str) -> int:
        """Row of ``expression_basis`` for an ARKit blendshape name such as ``"jawOpen"``."""
        try:
            return self.expression_names.index(name)
        except ValueError:
            raise KeyError(f"unknown expression {name!r}; known: {', '.join(self.expression_names)}") from None

    def expression_vector(self, weights: dict[str, float]) -> np.ndarray:
        """(E,) float32 expression weights from ``{name: weight}`` (others zero)."""
        out = np.zeros(self.num_expressions, np.float32)
        for name, w in weights.items():
            out[self.expression_index(name)] = w
        return out

    def triangles(self, polygons: np.ndarray | None = None) -> np.ndarray:
        """(T, 3) int64 triangles of the quad mesh (each quad split along its 0-2 diagonal).

        Winding is kept, so normals point out of the head like the quads'.
        """
        q = self.quads if polygons is None else polygons
        tri = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]][q[:, 3] >= 0]], axis=0)
        return tri.astype(np.int64)

    # ------------------------------------------------------------------ numpy evaluation
    def vertices(
        self,
        identity: np.ndarray | None = None,
        expression: np.ndarray | None = None,
        index: np.ndarray | slice | None = None,
    ) -> np.ndarray:
        """Head vertices (..., V', 3) float32 metres.

        Args:
            identity: (..., k) weights of the first k <= K identity modes (None: zeros).
            expression: (..., k) weights of the first k <= E expressions (None: zeros).
            index: vertex subset (e.g. ``Topology.ict_index``); None for all V vertices.
        """
        idx = slice(None) if index is None else index
        neutral = self.neutral[idx]
        batch: tuple[int, ...] = ()
        terms = []
        for w, basis in ((identity, self.identity_basis), (expression, self.expression_basis)):
            if w is None:
                continue
            w = np.asarray(w, np.float32)
            k = w.shape[-1]
            if k > basis.shape[0]:
                raise ValueError(f"{k} weights for a basis of {basis.shape[0]} modes")
            b = basis[:k][:, idx].astype(np.float32).reshape(k, -1)
            terms.append(w @ b)
            batch = np.broadcast_shapes(batch, w.shape[:-1])
        out = np.broadcast_to(neutral.reshape(-1), batch + (neutral.size,)).astype(np.float32)
        for t in terms:
            out = out + t
        return out.reshape(batch + neutral.shape)

    # ------------------------------------------------------------------ torch evaluation
    def torch_bases(self, device: Any = "cpu", dtype: Any = None, index: np.ndarray | None = None) -> FaceModelBases:
        """Float tensors of the model on ``device`` (cached per device, dtype and index).

        ``index`` picks a vertex subset (e.g. ``Topology.ict_index``): the cache then
        holds only those rows, which is what a batched renderer wants.
        """
        import torch

        dtype = torch.float32 if dtype is None else dtype
        key = (str(torch.device(device)), str(dtype), None if index is None else np.asarray(index).tobytes())
        hit = self._torch_cache.get(key)
        if hit is not None:
            return hit
        idx = slice(None) if index is None else np.asarray(index)
        k, e = self.num_identity, self.num_expressions
        bases = FaceModelBases(
            neutral=torch.as_tensor(self.neutral[idx], dtype=dtype, device=device),
            identity=torch.as_tensor(self.identity_basis[:, idx].reshape(k, -1), device=device).to(dtype),
            expression=torch.as_tensor(self.expression_basis[:, idx].reshape(e, -1), device=device).to(dtype),
        )
        self._torch_cache[key] = bases
        return bases

    def vertices_torch(self, identity: Any = None, expression: Any = None, index: np.ndarray | None = None):
        """Batched heads (B, V', 3) as a torch tensor on the weights' device.

        Args:
            identity: (B, k) tensor, k <= K identity weights (None: zeros).
            expression: (B, k) tensor, k <= E expression weights (None: zeros).
            index: vertex subset as in :meth:`torch_bases`.
        Differentiable in the weights.
        """

        ref = identity if identity is not None else expression
        if ref is None:
            raise ValueError("give identity or expression weights (a batch size is needed)")
        bases = self.torch_bases(ref.device, ref.dtype if ref.is_floating_point() else None, index)
        out = bases.neutral.reshape(1, -1).expand(ref.shape[0], -1)
        if identity is not None:
            out = out + identity @ bases.identity[: identity.shape[-1]]
        if expression is not None:
            out = out + expression @ bases.expression[: expression.shape[-1]]
        return out.reshape(ref.shape[0], -1, 3)

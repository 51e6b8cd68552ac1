"""ARKit blendshape weights for the faces of a response (``include=blendshapes``).

Two sources, chosen per model at load:

- ``head``: the network has an expression head (`jmlr.models.JMLRHead`) and predicts the
  face model's expression weights from the image; they are renamed to ARKit's
  (`jmlr.facemodel.blendshapes.arkit_mapping`). The head reads the expression from the
  image's pixels, which the predicted mesh carries only in part (docs/blendshapes.md).
- ``fit``: the weights are fitted to the predicted mesh (`jmlr.facemodel.blendshapes`),
  which needs the face model's bases at the topology's vertices; they ship with the
  package for the default topology.

A model with neither still serves everything else: asking it for blendshapes adds a
warning instead of failing the request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from jmlr.facemodel.blendshapes import (
    BlendshapeBasis,
    BlendshapeSolver,
    arkit_mapping,
    soft_threshold,
    threshold_per_name,
)
from jmlr.inference.poses import FaceReconstruction

from .schemas import FaceOut

log = logging.getLogger("service.blendshapes")

# Per-coordinate vertex noise and sparsity chosen on held-out synthetic faces for the
# shipped model's predictions (bench/bench_blendshapes.py, docs/blendshapes.md; re-chosen
# for jmlr_mnv2_96_cpu on 2026-12-05: its meshes carry more expression, so less smoothing).
NOISE_M = 4e-3
L1 = 1e-6
# The head's ARKit weights go through soft_threshold with one threshold per group, the least
# active error with the group's inactive error <= 0.05 on held-out synthetic faces
# (bench/bench_blendshapes.py case (d)). They belong to the weights, so they travel in the
# model's manifest (`jmlr.store.head_thresholds`, written by the bench's --write-thresholds).
# These are for a head model stored without its own: the values chosen for the shipped
# jmlr_mnv2_128_cpu of the twenty-fourth session (the same as the twenty-third's). One
# threshold for all left the brows at 0.11 inactive error: phantom brow raises.
DEFAULT_HEAD_THRESHOLDS = {"brows": 0.35, "eyes": 0.0, "jaw": 0.075, "mouth": 0.0, "cheeks/nose": 0.1}


class BlendshapeEstimator:
    """ARKit weights for the faces of one model: from its expression head when it has
    one (``source`` 'head'), else fitted to its meshes ('fit'); 'none' with ``error``
    saying why neither is possible.

    Args:
        topology: the model's topology (for the fit).
        expression_names: the face-model expressions the model's head predicts (empty:
            no head).
        head_thresholds: the head's soft thresholds per ARKit group, as stored with the
            model (`jmlr.store.head_thresholds`); None: :data:`DEFAULT_HEAD_THRESHOLDS`.
            A group left out gets the largest given (the most cautious).
        basis_path: the fit's basis (default: the shipped one).
    """

    def __init__(self, topology, expression_names: Sequence[str] = (),
                 head_thresholds: Mapping[str, float] | None = None, basis_path=None) -> None:
        self.solver: BlendshapeSolver | None = None
        self.error: str | None = None
        self._head: tuple[tuple[str, ...], np.ndarray, np.ndarray] | None = None
        self.head_thresholds: dict[str, float] | None = None
        if expression_names:
            names, matrix = arkit_mapping(expression_names)
            if names:
                if head_thresholds is None:
                    log.warning("the model stores no blendshape thresholds for its expression head; using the "
                                "defaults chosen for jmlr_mnv2_128_cpu (choose its own: python "
                                "bench/bench_blendshapes.py --model MODEL --write-thresholds)")
                per_group = dict(DEFAULT_HEAD_THRESHOLDS if head_thresholds is None else head_thresholds)
                self.head_thresholds = per_group
                self._head = (names, matrix, threshold_per_name(names, per_group, max(per_group.values())))
                return
        try:
            basis = BlendshapeBasis.load(basis_path).for_topology(topology)
        except (OSError, KeyError, ValueError) as exc:
            self.error = f"the model's topology has no blendshape basis ({exc})"
            log.warning("blendshapes unavailable: %s", self.error)
            return
        self.solver = BlendshapeSolver(basis, noise_m=NOISE_M, l1=L1)

    @property
    def source(self) -> Literal["head", "fit", "none"]:
        return "head" if self._head is not None else "fit" if self.solver is not None else "none"

    @property
    def names(self) -> tuple[str, ...]:
        if self._head is not None:
            return self._head[0]
        return self.solver.arkit_names if self.solver is not None else ()

    def annotate(self, faces: list[FaceOut], recs: Sequence[FaceReconstruction]) -> list[str]:
        """Set ``face.blendshapes`` of each face from its reconstruction (the head's
        weights, or a fit to its head-frame vertices); returns warnings for the response."""
        if self._head is not None:
            names, matrix, thresholds = self._head
            if all(rec.expression is not None for rec in recs):
                for face, rec in zip(faces, recs):
                    weights = soft_threshold(matrix @ np.asarray(rec.expression, np.float64), thresholds)
                    face.blendshapes = {n: round(float(w), 4) for n, w in zip(names, weights)}
                return []
            return ["blendshapes were not computed: the model's expression head gave no weights"]
        if self.solver is None:
            return [f"blendshapes were not computed: {self.error}"]
        fit = self.solver(np.stack([np.asarray(rec.vertices, np.float64) for rec in recs]), details=False)
        for face, row in zip(faces, fit.arkit):
            face.blendshapes = self.solver.arkit_dict(row)
        return []

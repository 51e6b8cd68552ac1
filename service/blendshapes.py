"""ARKit blendshape weights for the faces of a response (``include=blendshapes``).

The fit (``jmlr.facemodel.blendshapes``) needs the face model's bases at the topology's
vertices; they ship with the package for the default topology. A model whose topology
they do not cover still serves everything else: asking it for blendshapes adds a warning
instead of failing the request.
"""

from __future__ import annotations

import logging

import numpy as np

from jmlr.facemodel.blendshapes import BlendshapeBasis, BlendshapeSolver

from .schemas import FaceOut

log = logging.getLogger("service.blendshapes")

# Per-coordinate vertex noise and sparsity chosen on held-out synthetic faces for the
# shipped model's predictions (bench/bench_blendshapes.py, docs/blendshapes.md; re-chosen
# for jmlr_mnv2_96_cpu on 2026-12-05: its meshes carry more expression, so less smoothing).
NOISE_M = 4e-3
L1 = 1e-6


class BlendshapeEstimator:
    """Fits ARKit weights to predicted meshes of one topology; ``error`` says why not."""

    def __init__(self, topology, basis_path=None) -> None:
        self.solver: BlendshapeSolver | None = None
        self.error: str | None = None
        try:
            basis = BlendshapeBasis.load(basis_path).for_topology(topology)
        except (OSError, KeyError, ValueError) as exc:
            self.error = f"the model's topology has no blendshape basis ({exc})"
            log.warning("blendshapes unavailable: %s", self.error)
            return
        self.solver = BlendshapeSolver(basis, noise_m=NOISE_M, l1=L1)

    @property
    def names(self) -> tuple[str, ...]:
        return self.solver.arkit_names if self.solver is not None else ()

    def annotate(self, faces: list[FaceOut], verts: np.ndarray) -> list[str]:
        """Set ``face.blendshapes`` from each face's head-frame vertices (B, N, 3);
        returns warnings for the response."""
        if self.solver is None:
            return [f"blendshapes were not computed: {self.error}"]
        fit = self.solver(np.asarray(verts, np.float64), details=False)
        for face, row in zip(faces, fit.arkit):
            face.blendshapes = self.solver.arkit_dict(row)
        return []

"""The ICT-FaceKit morphable head and the ARKit-like face topology over it.

Attribution: ICT-FaceKit, MIT License, Copyright (c) 2020 USC Institute for Creative
Technologies (see NOTICE).
"""

from jmlr.facemodel.model import FaceModel, FaceModelBases, FaceModelNotFound
from jmlr.facemodel.procedural import make_procedural_head
from jmlr.facemodel.topology import (
    IBUG68_FLIP,
    Topology,
    boundary_loops,
    build_topology,
    default_topology_path,
    mirror_pairs,
)

__all__ = [
    "FaceModel",
    "FaceModelBases",
    "FaceModelNotFound",
    "IBUG68_FLIP",
    "Topology",
    "boundary_loops",
    "build_topology",
    "default_topology_path",
    "make_procedural_head",
    "mirror_pairs",
]

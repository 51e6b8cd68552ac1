"""Inference: where an image, its faces and its camera become reconstructions.

The one path every caller takes (the service, ``jmlr eval``, Python users)::

    locate (detector, or the caller's boxes / five points)  -> faces.py
    crop (similarity onto the JMLR template)                -> crops.py
    predict (a backend, flip-TTA, an ensemble)              -> backends.py
        (PyTorch, or ONNX Runtime fp32/int8: ort_backend.py, onnx_export.py)
    uncrop + PnP with the intrinsics                        -> crops.py, poses.py

`FaceReconstructor` chains them (api.py)::

    from jmlr.inference import FaceReconstructor, Intrinsics

    reconstructor = FaceReconstructor.from_store()
    faces = reconstructor.reconstruct("photo.jpg", Intrinsics(1480, 1480, 960, 540, 1920, 1080))

Importing this package does not import torch; loading a PyTorch backend does.
"""

from jmlr.geometry.intrinsics import Intrinsics

from .api import DEFAULT_FOV_DEG, FaceReconstructor, intrinsics_for_image, read_image
from .backends import AUTO_BACKENDS, BACKENDS, Backend, Ensemble, infer_crops, load_backend, resolve_backend
from .crops import FaceCrops, InvalidFacesError, crop_faces, max_reduction, uncrop_points
from .faces import Face, FaceHint, FaceSource, bbox_around_landmarks, locate_faces
from .poses import FaceReconstruction, reconstruct_faces, solve_poses

__all__ = [
    "FaceReconstructor", "FaceReconstruction", "Intrinsics", "DEFAULT_FOV_DEG", "intrinsics_for_image", "read_image",
    "Backend", "BACKENDS", "AUTO_BACKENDS", "Ensemble", "infer_crops", "load_backend",
    "resolve_backend",
    "FaceCrops", "InvalidFacesError", "crop_faces", "max_reduction", "uncrop_points",
    "Face", "FaceHint", "FaceSource", "bbox_around_landmarks", "locate_faces",
    "reconstruct_faces", "solve_poses",
]

"""The one-call Python API: a photo and its camera in, a posed mesh per face out.

::

    from jmlr.inference import FaceReconstructor, Intrinsics

    reconstructor = FaceReconstructor.from_store()  # the store's default model + CenterFace
    for face in reconstructor.reconstruct("photo.jpg", Intrinsics(1480, 1480, 960, 540, 1920, 1080)):
        print(face.pose.R_cv, face.pose.t_cv, face.vertices.shape)

A :class:`FaceReconstructor` holds a model (or an ensemble) and a detector and keeps no
state between calls: per-session state (a video's face tracks, smoothed poses) stays with
the caller, which passes the faces it tracked as ``faces=`` and reads the results. The
steps it chains (`locate_faces`, `crop_faces`, `Ensemble.predict`, `reconstruct_faces`)
are public for callers that schedule them apart (the service batches the prediction of
many requests).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jmlr.detect import Detector, NoDetector, create_detector
from jmlr.facemodel.topology import Topology
from jmlr.geometry.intrinsics import Intrinsics

from .backends import Backend, Ensemble, load_backend
from .crops import crop_faces
from .faces import Face, FaceHintLike, locate_faces
from .poses import FaceReconstruction, reconstruct_faces

__all__ = ["FaceReconstructor", "DEFAULT_FOV_DEG", "intrinsics_for_image", "read_image"]

#: Horizontal field of view assumed when no intrinsics are given (a phone's main camera
#: is 65-75 degrees; distance and scale are then approximate).
DEFAULT_FOV_DEG = 60.0


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, EXIF orientation applied (as the service does)."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"), dtype=np.uint8)


def intrinsics_for_image(intrinsics: Intrinsics | None, width: int, height: int) -> Intrinsics:
    """The intrinsics in pixels of a ``width`` x ``height`` image: rescaled from their own
    image size when they have one, taken as they are without, or
    :data:`DEFAULT_FOV_DEG` horizontally when None."""
    if intrinsics is None:
        return Intrinsics.from_fov(DEFAULT_FOV_DEG, width, height)
    if intrinsics.size is None:
        return intrinsics.with_size(width, height)
    return intrinsics.rescaled(width, height)


class FaceReconstructor:
    """Image + intrinsics -> a metric 6DoF pose and a dense mesh per face.

    Args:
        models: a backend (`load_backend`), several (averaged as an :class:`Ensemble`), or
            an ensemble.
        detector: finds faces when none are given (default: none; give faces then).
    """

    def __init__(self, models: Backend | Sequence[Backend] | Ensemble, detector: Detector | None = None) -> None:
        if isinstance(models, Ensemble):
            self.ensemble = models
        else:
            self.ensemble = Ensemble(list(models) if isinstance(models, Sequence) else [models])
        self.detector: Detector = detector if detector is not None else NoDetector()

    @classmethod
    def from_store(cls, *models: str | Path, backend: str = "torch", device: str = "cpu",
                   detector: str = "centerface", store_dir: str | Path | None = None) -> FaceReconstructor:
        """Load ``models`` (model-store folders or names; several make an ensemble; none:
        the store's default for ``device``) and a detector (`jmlr.detect.create_detector`)."""
        if not models:
            from jmlr.store import default_model_name

            models = (default_model_name(device, store_dir),)
        store = Path(store_dir) if store_dir is not None else None
        paths = [store / str(m) if store is not None and not Path(m).is_dir() else m for m in models]
        return cls([load_backend(p, backend, device) for p in paths], create_detector(detector))

    @property
    def topology(self) -> Topology:
        """The mesh topology every reconstruction's vertices follow."""
        return self.ensemble.topology

    @property
    def expression_names(self) -> tuple[str, ...]:
        """The face-model expressions whose weights each reconstruction's ``expression``
        holds (a model with an expression head); empty when the model predicts none.
        `jmlr.facemodel.blendshapes.arkit_mapping` turns them into ARKit's names."""
        return self.ensemble.expression_names

    def locate(self, image: np.ndarray, faces: Sequence[FaceHintLike] | None = None,
               max_faces: int | None = None) -> list[Face]:
        """The faces :meth:`reconstruct` would reconstruct (see `locate_faces`)."""
        return locate_faces(image, self.detector, faces, max_faces)

    def reconstruct(self, image: np.ndarray | str | Path, intrinsics: Intrinsics | None = None,
                    faces: Sequence[FaceHintLike] | None = None, max_faces: int | None = None,
                    flip_tta: bool = False) -> list[FaceReconstruction]:
        """Reconstruct the faces of one image.

        Args:
            image: (H, W, 3) uint8 RGB, or an image file.
            intrinsics: the camera's, in pixels of this image or of their own
                ``width``/``height`` (then rescaled); None assumes :data:`DEFAULT_FOV_DEG`.
            faces: the faces to use instead of detection (`FaceHint`: box and/or five points).
            max_faces: at most this many (the detector's best first).
            flip_tta: also predict the mirrored crops and average (about 2x the cost).

        Returns:
            One `FaceReconstruction` per face, in order; faces whose numbers are not all
            finite are kept (check ``.finite``) and ``pose.success`` says whether PnP
            found a pose in front of the camera.
        """
        rgb = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        height, width = rgb.shape[:2]
        camera = intrinsics_for_image(intrinsics, width, height)
        found = self.locate(rgb, faces, max_faces)
        if not found:
            return []
        crops = {S: crop_faces(rgb, [f.landmarks5 for f in found], S) for S in self.ensemble.sizes}
        pred = self.ensemble.infer(crops, flip_tta)
        return reconstruct_faces(found, pred.verts, pred.points, camera, pred.expression)

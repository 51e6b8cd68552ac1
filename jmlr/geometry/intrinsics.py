"""Camera intrinsics as one value: focal lengths, principal point, image size, distortion.

One :class:`Intrinsics` travels from wherever the camera is known (a request's JSON, a
registered device, EXIF, a default field of view, a dataset's projection matrix) to PnP
and back out into a response or a stored mesh, so its size, field of view and distortion
are computed in one place. Conventions as in ``docs/design.md``: pixels of the image the
intrinsics apply to, the centre of the top-left pixel at (0, 0), OpenCV's
(k1, k2, p1, p2, k3) distortion model. Numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from .camera import intrinsics_from_focal_35mm, intrinsics_from_fov, make_intrinsics, rescale_intrinsics

__all__ = ["DISTORTION_TERMS", "Intrinsics"]

#: Names of OpenCV's radial-tangential distortion coefficients, in OpenCV's order.
DISTORTION_TERMS = ("k1", "k2", "p1", "p2", "k3")


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels of one image size.

    Attributes:
        fx, fy: focal lengths, px.
        cx, cy: principal point, px (centre of the top-left pixel = (0, 0)).
        width, height: size in px of the image they apply to; both None when unknown
            (then :attr:`fov` and :meth:`rescaled` cannot be used).
        distortion: OpenCV ``(k1, k2, p1, p2, k3)``, or None for none given. Kept as
            given (all zeros stay zeros); :attr:`dist_coeffs` is what OpenCV takes.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None
    distortion: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height (the image size) or neither")
        if self.distortion is not None:
            d = tuple(float(v) for v in self.distortion)
            if len(d) != len(DISTORTION_TERMS):
                raise ValueError(f"distortion needs {len(DISTORTION_TERMS)} values {DISTORTION_TERMS}, got {len(d)}")
            object.__setattr__(self, "distortion", d)

    # ------------------------------------------------------------------ views
    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (a new array each time)."""
        return make_intrinsics(self.fx, self.fy, self.cx, self.cy)

    @property
    def dist_coeffs(self) -> np.ndarray | None:
        """(5,) float64 for OpenCV, or None when no distortion or all coefficients are 0."""
        if self.distortion is None or not any(self.distortion):
            return None
        return np.array(self.distortion, dtype=np.float64)

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) px, or None when unknown."""
        return None if self.width is None or self.height is None else (self.width, self.height)

    @property
    def fov(self) -> tuple[float, float]:
        """(horizontal, vertical) full field of view in degrees across the image size."""
        w, h = self._require_size("fov")
        return math.degrees(2 * math.atan2(w / 2, self.fx)), math.degrees(2 * math.atan2(h / 2, self.fy))

    # ------------------------------------------------------------------ changes
    def with_size(self, width: int, height: int) -> Intrinsics:
        """The same values, declared to be in pixels of a ``width`` x ``height`` image."""
        return replace(self, width=int(width), height=int(height))

    def rescaled(self, width: int, height: int) -> Intrinsics:
        """For the image resized to ``width`` x ``height`` (per axis, pixel centres kept as
        ``cv2.resize`` samples them; see :func:`jmlr.geometry.camera.rescale_intrinsics`)."""
        size = self._require_size("rescaled")
        if size == (width, height):
            return self
        K = rescale_intrinsics(self.K, size, (int(width), int(height)))
        return Intrinsics.from_K(K, width, height, self.distortion)

    def aspect_differs(self, width: int, height: int, rel_tol: float = 0.01) -> bool:
        """Whether ``width / height`` differs from the calibrated aspect ratio by more than
        ``rel_tol`` (the image was cropped or rotated, not just resized)."""
        w, h = self._require_size("aspect_differs")
        return abs(w / h - width / height) > rel_tol * (width / height)

    def _require_size(self, what: str) -> tuple[int, int]:
        size = self.size
        if size is None:
            raise ValueError(f"Intrinsics.{what} needs the image size (width, height)")
        return size

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_K(cls, K: np.ndarray, width: int | None = None, height: int | None = None,
               distortion: Sequence[float] | None = None) -> Intrinsics:
        """From a (3, 3) matrix (skew ignored)."""
        K = np.asarray(K, dtype=np.float64)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                   None if width is None else int(width), None if height is None else int(height),
                   None if distortion is None else tuple(distortion))

    @classmethod
    def from_fov(cls, fov_deg: float, width: int, height: int,
                 axis: Literal["horizontal", "vertical", "diagonal"] = "horizontal") -> Intrinsics:
        """Square pixels, centred principal point, ``fov_deg`` across ``axis``."""
        return cls.from_K(intrinsics_from_fov(fov_deg, width, height, axis), width, height)

    @classmethod
    def from_focal_35mm(cls, f35_mm: float, width: int, height: int) -> Intrinsics:
        """From EXIF ``FocalLengthIn35mmFilm`` (see :func:`jmlr.geometry.camera.intrinsics_from_focal_35mm`)."""
        return cls.from_K(intrinsics_from_focal_35mm(f35_mm, width, height), width, height)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Intrinsics:
        """From the JSON shape of :meth:`to_dict` (the service's ``camera`` field and device
        records): ``fx, fy, cx, cy``, optional ``width, height``, optional ``distortion``
        mapping of ``k1 .. k3`` (missing terms 0). Other keys are ignored."""
        dist = d.get("distortion")
        if isinstance(dist, Mapping):
            dist = tuple(float(dist.get(k, 0.0) or 0.0) for k in DISTORTION_TERMS)
        width, height = d.get("width"), d.get("height")
        return cls(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]),
                   None if width is None else int(width), None if height is None else int(height),
                   None if dist is None else tuple(dist))

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible ``{fx, fy, cx, cy, width, height, distortion: {k1..k3} | None}``."""
        return {
            "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
            "width": self.width, "height": self.height,
            "distortion": None if self.distortion is None else dict(zip(DISTORTION_TERMS, self.distortion)),
        }

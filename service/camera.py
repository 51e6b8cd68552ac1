"""Which intrinsics a photo gets: the request's, a registered device's, EXIF's, or a default.

Every source becomes one `jmlr.geometry.intrinsics.Intrinsics` in pixels of the uploaded
(EXIF-rotated) image; that value goes to PnP, into the response and into the stored mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

from jmlr.geometry.intrinsics import Intrinsics

from .schemas import CameraSource


@dataclass(frozen=True)
class CameraChoice:
    """The intrinsics used for one image, where they came from, and what to warn about."""

    intrinsics: Intrinsics
    source: CameraSource
    warnings: list[str]


def _for_image(given: Intrinsics, width: int, height: int, warnings: list[str]) -> Intrinsics:
    # Without a calibration size the values are taken to be in this image's pixels.
    if given.size is None:
        return given.with_size(width, height)
    if given.size != (width, height) and given.aspect_differs(width, height):
        cw, ch = given.size
        warnings.append(
            f"camera calibrated at {cw}x{ch} but the image is {width}x{height} (different aspect "
            "ratio: cropped or rotated?); intrinsics were rescaled per axis anyway"
        )
    return given.rescaled(width, height)


def resolve_camera(
    width: int,
    height: int,
    camera: Intrinsics | None,
    device: Intrinsics | None,
    focal_35mm: float | None,
    default_fov_deg: float,
) -> CameraChoice:
    """Intrinsics for a ``width`` x ``height`` image: request > registered device > EXIF >
    default horizontal field of view (with a warning)."""
    warnings: list[str] = []
    if camera is not None:
        return CameraChoice(_for_image(camera, width, height, warnings), "request", warnings)
    if device is not None:
        return CameraChoice(_for_image(device, width, height, warnings), "device", warnings)
    if focal_35mm is not None:
        return CameraChoice(Intrinsics.from_focal_35mm(focal_35mm, width, height), "exif", warnings)
    warnings.append(
        f"no intrinsics given (camera, device_id or EXIF FocalLengthIn35mmFilm): assumed a "
        f"{default_fov_deg:g} degree horizontal field of view, so distance and scale are approximate"
    )
    return CameraChoice(Intrinsics.from_fov(default_fov_deg, width, height, "horizontal"), "default_fov", warnings)

"""Phone cameras: intrinsics and distances like phones', and their image pipeline.

`PhoneCameraModel` draws a 35 mm-equivalent focal length (13 mm ultra-wide to 80 mm
tele) and a camera-to-face distance (0.2-2 m) together, so that the head fits the
800x800 frame and is not a speck in it: close selfies come with wide lenses, portraits
with long ones. K follows the EXIF convention (`jmlr.geometry.camera.intrinsics_from_focal_35mm`).

`apply_phone_effects` is what a phone does to the light, in the order it happens: lens
defocus or motion blur, vignetting, face-priority auto exposure, exposure and white-balance
errors and the tone curve (one per-channel look-up table), signal-dependent sensor noise
(shot noise grows with the signal, read noise does not), and JPEG at a quality drawn from
what cameras and apps write. Images are uint8 RGB (docs/design.md); each effect draws
from its own generator (`jmlr.synth.world.element_rngs`) and is skipped when its
probability is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from jmlr.geometry.camera import intrinsics_from_focal_35mm

from .appearance import encode_jpeg
from .sampler import PoseSampler
from .world import WorldConfig

__all__ = ["PhoneCameraModel", "apply_phone_effects", "auto_exposure_gain", "motion_kernel", "disc_kernel",
           "srgb_to_linear", "linear_to_srgb", "vignetting_gain", "jpeg_roundtrip", "AE_TARGET", "AE_GAIN_RANGE"]

_GAMMA = 2.2

#: Linear luminance a phone's auto exposure brings the metered area to, and the range of
#: gains its ISO and shutter give it. 0.16 puts the median face level of the renders where
#: the annotated real photos have it (113; docs/synthetic_data.md); 0.25 gave 138.
AE_TARGET = 0.16
AE_GAIN_RANGE = (1.0 / 8.0, 8.0)
#: Side the auto exposure meters at, about (metering is a mean; a sample gives the same one).
_AE_METER_PX = 96


@dataclass(frozen=True)
class PhoneCameraModel:
    """Joint distribution of a phone's 35 mm-equivalent focal length and its distance.

    focal_mm: range of the focal length (log-uniform); distance_m: camera-to-face
    distance (log-uniform); face_px: the head's radius in the frame, in pixels, must lie
    in this range (pairs outside are redrawn; after ``max_tries`` the focal length is
    clamped into it).
    """

    focal_mm: tuple[float, float] = (13.0, 80.0)
    distance_m: tuple[float, float] = (0.2, 2.0)
    face_px: tuple[float, float] = (45.0, 330.0)
    head_radius: float = 0.11
    face_depth: float = 0.09
    max_tries: int = 50

    def sample(self, rng: np.random.Generator, image_size: tuple[int, int]) -> tuple[np.ndarray, float, float]:
        """(K (3, 3) of the frame, focal length mm, distance m) of one capture."""
        w, h = image_size
        diag_px = float(np.hypot(w, h))
        lo, hi = np.log(self.focal_mm), np.log(self.distance_m)
        for _ in range(self.max_tries):
            f35 = float(np.exp(rng.uniform(*lo)))
            dist = float(np.exp(rng.uniform(*hi)))
            radius = f35 * diag_px / 43.2666 * self.head_radius / (dist + self.face_depth)
            if self.face_px[0] <= radius <= self.face_px[1]:
                break
        else:  # keep the distance, bring the focal length into range
            fx_range = np.array(self.face_px) * (dist + self.face_depth) / self.head_radius
            f35 = float(np.clip(f35, *(fx_range * 43.2666 / diag_px)))
        return intrinsics_from_focal_35mm(f35, w, h), f35, dist

    def pose_sampler(self, base: PoseSampler, distance: float) -> PoseSampler:
        """``base`` with its distance fixed to ``distance`` (angles and framing unchanged)."""
        return PoseSampler(**{**base.__dict__, "distance": (distance, distance)})


# ---------------------------------------------------------------------------- kernels
def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line kernel (k, k) of odd size ``length`` at ``angle_deg``."""
    k = max(3, int(length) | 1)
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2] = 1.0 / k
    rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(angle_deg), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    return kernel / max(float(kernel.sum()), 1e-6)


def disc_kernel(radius: float) -> np.ndarray:
    """A normalised, anti-aliased disc (the defocus blur of a round aperture) of ``radius`` px."""
    r = max(float(radius), 0.5)
    n = int(np.ceil(r)) * 2 + 1
    yy, xx = np.mgrid[:n, :n].astype(np.float32) - n // 2
    k = np.clip(r + 0.5 - np.sqrt(xx * xx + yy * yy), 0, 1)
    return k / k.sum()


def srgb_to_linear(x):
    return np.power(np.clip(x, 0, 1), _GAMMA)


def linear_to_srgb(x):
    return np.power(np.clip(x, 0, 1), 1.0 / _GAMMA)


_LEVELS = np.arange(256, dtype=np.float64) / 255.0
# The sRGB curve (its linear toe keeps the slope finite at black): linear value of each
# 8-bit level, and d sRGB / d linear there, which maps linear-light noise to levels.
_SRGB_LINEAR = np.where(_LEVELS <= 0.04045, _LEVELS / 12.92, ((_LEVELS + 0.055) / 1.055) ** 2.4)
_SRGB_SLOPE = np.where(_SRGB_LINEAR <= 0.0031308, 12.92,
                       1.055 / 2.4 * np.maximum(_SRGB_LINEAR, 1e-12) ** (1 / 2.4 - 1))
# Linear value of each level in the tone LUT's gamma, and the Rec. 709 luma weights.
_LINEAR_LUT = (_LEVELS ** _GAMMA).astype(np.float32)
_LUMA_709 = np.array([0.2126, 0.7152, 0.0722], np.float32)


def vignetting_gain(shape: tuple[int, int], strength: float, frame_from_image: np.ndarray | None,
                    centre: tuple[float, float], half_diagonal: float) -> np.ndarray:
    """Multiplicative gain (H, W) float32 of a lens's fall-off, ``1 - strength * r^2 ...``.

    ``r`` is the distance from the optical centre ``centre`` in frame pixels over
    ``half_diagonal``; ``frame_from_image`` (2, 3) maps image pixels to frame pixels (a
    crop's inverse similarity), so a crop near the frame's corner is darker on that side.
    The gain is the cos^4-like ``1 / (1 + a r^2)^2`` with ``a`` from ``strength`` (the
    darkening in the corner, 0-1).
    """
    h, w = shape
    A = np.eye(2, 3) if frame_from_image is None else np.asarray(frame_from_image, np.float64)
    # The gain is smooth: evaluate it on a coarse grid and resize.
    gh, gw = max(h // 8, 2), max(w // 8, 2)
    ys = np.linspace(0, h - 1, gh)
    xs = np.linspace(0, w - 1, gw)
    X, Y = np.meshgrid(xs, ys)
    fx = A[0, 0] * X + A[0, 1] * Y + A[0, 2] - centre[0]
    fy = A[1, 0] * X + A[1, 1] * Y + A[1, 2] - centre[1]
    r2 = (fx * fx + fy * fy) / (half_diagonal ** 2)
    a = (1.0 / np.sqrt(max(1.0 - strength, 1e-3)) - 1.0)  # gain 1 - strength at r = 1
    g = (1.0 / (1.0 + a * r2) ** 2).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR)


def auto_exposure_gain(image: np.ndarray, face_points: np.ndarray | None, face_weight: float,
                       target: float = AE_TARGET, gain_range: tuple[float, float] = AE_GAIN_RANGE) -> float:
    """The gain (linear light) of a phone's face-priority auto exposure.

    Phones meter the face they detect and expose it to mid-grey whatever the light and the
    skin, so faces in phone photos are rarely very dark or burnt out (measured on the
    annotated real photos of `bench/real_faces.py`: the median face level lies in 80-192 for
    90 % of them; see docs/synthetic_data.md). The metered luminance is
    ``face ** face_weight * whole ** (1 - face_weight)``, of the mean linear luma (Rec. 709)
    inside the convex hull of ``face_points`` and over the whole image: blended in log
    luminance, as exposure is reckoned in stops, so that a bright window behind a dark face
    does not outweigh the face it is meant to yield to.

    Args:
        image: (H, W, 3) uint8 sRGB.
        face_points: (P, 2) image px of the face's landmarks (None, or fewer than 3 points
            or a hull outside the image: the whole image is metered).
        face_weight: the face's share of the meter, in [0, 1].
        target, gain_range: the luminance aimed at, and the clip of the gain.
    Returns:
        ``target / metered`` clipped into ``gain_range``.
    """
    # Every k-th pixel: a mean needs no more, and an area resize of a frame costs 10+ ms.
    k = max(1, max(image.shape[:2]) // _AE_METER_PX)
    s = 1.0 / k
    luma = _LINEAR_LUT[image[::k, ::k]] @ _LUMA_709
    metered = float(luma.mean())
    if face_points is not None and len(face_points) >= 3 and face_weight > 0.0:
        mask = np.zeros(luma.shape, np.uint8)
        hull = cv2.convexHull(np.round(np.asarray(face_points, np.float64) * s).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
        if mask.any():
            face = max(float(luma[mask > 0].mean()), 1e-6)
            metered = face ** face_weight * max(metered, 1e-6) ** (1.0 - face_weight)
    return float(np.clip(target / max(metered, 1e-6), *gain_range))


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode an RGB uint8 image as JPEG at ``quality``."""
    buf = encode_jpeg(image, int(quality))
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _tone_lut(gains: np.ndarray, contrast: float) -> np.ndarray:
    """(256, 1, 3) uint8 LUT: sRGB -> linear, per-channel gain (exposure x white balance),
    highlight clipping, a filmic S-curve of strength ``contrast`` about mid-grey, -> sRGB."""
    lin = _LEVELS[:, None] ** _GAMMA * gains[None]
    s = linear_to_srgb(lin)
    if contrast != 0.0:
        s = np.clip(s + 2.0 * contrast * s * (1 - s) * (2 * s - 1), 0, 1)
    return np.round(np.clip(s, 0, 1) * 255).astype(np.uint8).reshape(256, 1, 3)


def apply_phone_effects(image: np.ndarray, rngs: Mapping[str, np.random.Generator], config: WorldConfig,
                        scale: float = 1.0, jpeg: bool = True, frame_from_image: np.ndarray | None = None,
                        frame_size: tuple[int, int] = (800, 800), principal_point=None,
                        face_points: np.ndarray | None = None) -> np.ndarray:
    """A phone camera's image pipeline on a uint8 RGB image; returns a new uint8 image.

    Args:
        image: (H, W, 3) uint8 RGB, the composited scene.
        rngs: one generator per element name (`jmlr.synth.world.element_rngs`).
        config: the probabilities of the effects.
        scale: the face's size in the image over 100 px (blur radii are drawn per
            100 px of face, so a crop and a full frame of one capture look alike).
        jpeg: whether the JPEG round trip runs (the layout writer encodes itself).
        frame_from_image: (2, 3) image px -> frame px (None: the image is the frame).
        frame_size: (W, H) of the frame; principal_point: (cx, cy), default its centre.
        face_points: (P, 2) image px of the face's landmarks, what the auto exposure
            meters (None: it meters the whole image).
    """
    r = rngs
    img = image
    h, w = img.shape[:2]
    # Lens: defocus (a disc), else motion blur, else the slight softness of every phone lens+ISP.
    rd, rm = r["defocus"], r["motion_blur"]
    if rd.random() < config.defocus:
        img = cv2.filter2D(img, -1, disc_kernel(rd.uniform(1.0, 5.0) * scale))
    elif rm.random() < config.motion_blur:
        img = cv2.filter2D(img, -1, motion_kernel(int(round(rm.uniform(3, 16) * scale)), rm.uniform(0, 180)))
    elif config.defocus > 0 and rd.random() < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), max(rd.uniform(0.3, 1.2) * scale, 0.1))
    # Vignetting (multiplicative in linear light, approximately so in sRGB with gamma).
    if r["vignetting"].random() < config.vignetting:
        W, H = frame_size
        c = principal_point if principal_point is not None else (W / 2.0, H / 2.0)
        g = vignetting_gain((h, w), r["vignetting"].uniform(0.15, 0.55), frame_from_image, c, 0.5 * np.hypot(W, H))
        img = np.clip(img.astype(np.float32) * (g ** (1.0 / _GAMMA))[..., None] + 0.5, 0, 255).astype(np.uint8)
    # Auto exposure (metered on the face, after the lens), its error (EV), white balance
    # (temperature and tint gains) and tone: one LUT.
    gains = np.ones(3)
    contrast = 0.0
    if r["auto_exposure"].random() < config.auto_exposure:
        face_weight = r["auto_exposure"].uniform(0.6, 1.0) if face_points is not None else 0.0
        gains *= auto_exposure_gain(img, face_points, face_weight)
    if r["exposure"].random() < config.exposure:
        ev = float(np.clip(r["exposure"].normal(0.0, 0.55), -1.5, 1.5))
        gains *= 2.0 ** ev
        contrast = float(r["exposure"].uniform(-0.4, 0.8))
    if r["white_balance"].random() < config.white_balance:
        temp = r["white_balance"].normal(0.0, 0.12)  # > 0: too warm (orange), < 0: too cool (blue)
        tint = r["white_balance"].normal(0.0, 0.04)  # > 0: green, < 0: magenta
        gains *= np.exp(np.array([temp, tint, -temp]))
    if not (np.allclose(gains, 1.0) and contrast == 0.0):
        img = cv2.LUT(img, _tone_lut(gains, contrast))
    # Sensor noise: variance a * signal + b in linear light, mapped to sRGB by the curve's slope.
    if r["noise"].random() < config.noise:
        rn = r["noise"]
        shot = np.exp(rn.uniform(np.log(2e-4), np.log(5e-3)))
        read = np.exp(rn.uniform(np.log(1e-6), np.log(2e-5)))
        std = np.clip(np.sqrt(shot * _SRGB_LINEAR + read) * _SRGB_SLOPE * 255.0, 0, 20).astype(np.float32)
        sd = std[img]  # (H, W, 3) per-pixel standard deviation in sRGB levels
        noise = np.empty(img.shape, np.float32)
        cv2.setRNGSeed(int(rn.integers(1 << 31)))
        cv2.randn(noise, 0.0, 1.0)
        # Part of the noise is shared by the channels (luminance), the rest is chroma noise.
        lum = noise[..., :1]
        mix = np.float32(rn.uniform(0.3, 0.8))
        noise = mix * lum + (1 - mix) * noise
        img = np.clip(img.astype(np.float32) + noise * sd + 0.5, 0, 255).astype(np.uint8)
    if jpeg and r["jpeg"].random() < config.jpeg:
        rj = r["jpeg"]
        # Cameras write 85-97; messaging apps and web uploads recompress at 40-85.
        quality = int(rj.integers(85, 98)) if rj.random() < 0.5 else int(rj.integers(30, 86))
        img = jpeg_roundtrip(img, quality)
        if rj.random() < 0.2:  # shared again: a second, lower-quality pass
            img = jpeg_roundtrip(img, int(rj.integers(30, quality + 1)))
    return img

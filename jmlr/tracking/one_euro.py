"""The One Euro filter (Casiez, Roussel and Vogel, CHI 2012), as pure batched steps.

A first-order low-pass whose cutoff rises with the signal's speed: slow motion (where
jitter shows) is smoothed hard, fast motion (where lag shows) is followed closely::

    dx_hat = dx_hat' + a(d_cutoff) * (dx - dx_hat')           # the filtered speed
    cutoff = min_cutoff + beta * |dx_hat| * speed_scale       # Hz
    x_hat  = x_hat' + a(cutoff) * (x - x_hat')                # a(f) = 1 / (1 + 1 / (2 pi f dt))

(primes: the previous frame's values). With ``predict`` the last line starts from where
the previous estimate would be now at its filtered speed, ``x_pred = x_hat' + dx_hat' dt``,
and moves by ``a(cutoff) * (x - x_pred)``: a first-order low-pass trails a moving value by
about ``speed / (2 pi cutoff)``, the predicted one follows a constant speed without lag,
so a head turning slowly can be smoothed as hard as a still one (docs/sessions.md
measures both). When a motion stops, the speed estimate decays at ``d_cutoff`` and the
estimate overshoots a little; a fast motion raises the cutoff, so it overshoots least
where it moves most.

The step is written on the *difference*
``x - x_hat'`` so that a caller can take it in a tangent space: a rotation filters the
rotation vector of ``R_hat'^T R`` and moves ``R_hat'`` along it (`one_euro_rotation`).

Speeds are the norm over the last axis (a point's or a vector's speed, not each
coordinate's), so the filter does not depend on the frame the vectors are written in.
``speed_scale`` converts that speed into the unit ``beta`` is tuned in (for example
degrees per second for radians), which lets one ``beta`` serve quantities of different
units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jmlr.geometry.rotation import matrix_to_rotvec, rotvec_to_matrix

__all__ = [
    "OneEuroParams",
    "OneEuroFilter",
    "smoothing_factor",
    "one_euro_step",
    "one_euro_vector",
    "one_euro_rotation",
]


@dataclass(frozen=True)
class OneEuroParams:
    """Filter settings.

    Attributes:
        min_cutoff: cutoff frequency at rest, Hz (lower: smoother when still, more lag).
        beta: cutoff increase per unit of speed, Hz per (speed unit), the speed measured
            in the caller's ``speed_scale`` units (higher: less lag when moving).
        d_cutoff: cutoff of the speed estimate itself, Hz.
        predict: blend the new sample with the previous estimate carried forward at its
            filtered speed, not with the previous estimate itself (no lag at a constant
            speed; see the module docstring).
    """

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0
    predict: bool = False

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "beta", "d_cutoff"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def smoothing_factor(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray:
    """The exponential smoothing factor in [0, 1) of a first-order low-pass with cutoff
    ``cutoff_hz`` sampled every ``dt_s`` seconds (1: follow the input, 0: hold)."""
    r = 2.0 * np.pi * np.asarray(cutoff_hz, np.float64) * float(dt_s)
    return r / (r + 1.0)


def one_euro_step(
    delta: np.ndarray, prev_speed: np.ndarray, dt_s: float, params: OneEuroParams, speed_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One filter step on a difference.

    Args:
        delta: (..., D) ``x - x_hat'``, the new sample minus the previous filtered value.
        prev_speed: (..., D) the previous filtered derivative (zeros on the first step after
            the initial one).
        dt_s: seconds since the previous sample, > 0.
        params: the filter's settings.
        speed_scale: multiplies the speed's norm before ``beta`` applies.

    Returns:
        ``(alpha (..., 1), speed (..., D))``: move the previous filtered value by
        ``alpha * delta``; ``speed`` is the new filtered derivative to keep.
    """
    if not dt_s > 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s!r}")
    delta = np.asarray(delta, np.float64)
    speed = prev_speed + smoothing_factor(params.d_cutoff, dt_s) * (delta / dt_s - prev_speed)
    magnitude = np.linalg.norm(speed, axis=-1, keepdims=True) * speed_scale
    alpha = smoothing_factor(params.min_cutoff + params.beta * magnitude, dt_s)
    return alpha, speed


def one_euro_vector(
    x: np.ndarray,
    prev_x: np.ndarray,
    prev_speed: np.ndarray,
    dt_s: float,
    params: OneEuroParams,
    speed_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Filter vectors (..., D) (translations, points): returns ``(x_hat, speed)``."""
    prev_x = np.asarray(prev_x, np.float64)
    x = np.asarray(x, np.float64)
    alpha, speed = one_euro_step(x - prev_x, prev_speed, dt_s, params, speed_scale)
    base = prev_x + np.asarray(prev_speed, np.float64) * dt_s if params.predict else prev_x
    return base + alpha * (x - base), speed


def one_euro_rotation(
    R: np.ndarray,
    prev_R: np.ndarray,
    prev_omega: np.ndarray,
    dt_s: float,
    params: OneEuroParams,
    speed_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Filter rotations (..., 3, 3) in the tangent space of the previous filtered one.

    The difference is the rotation vector of ``prev_R^T R`` (radians, the shortest way,
    at most pi), so the filtered rotation moves along the geodesic towards the new one and
    never leaves SO(3). ``prev_omega`` (..., 3) is the filtered angular velocity (rad/s,
    in the rotated frame); with ``params.predict`` the step starts from
    ``prev_R exp(prev_omega dt)``. Returns ``(R_hat, omega)``.
    """
    prev_R = np.asarray(prev_R, np.float64)
    R = np.asarray(R, np.float64)
    delta = matrix_to_rotvec(np.swapaxes(prev_R, -1, -2) @ R)
    alpha, omega = one_euro_step(delta, prev_omega, dt_s, params, speed_scale)
    if not params.predict:
        return prev_R @ rotvec_to_matrix(alpha * delta), omega
    base = prev_R @ rotvec_to_matrix(np.asarray(prev_omega, np.float64) * dt_s)
    residual = matrix_to_rotvec(np.swapaxes(base, -1, -2) @ R)
    return base @ rotvec_to_matrix(alpha * residual), omega


class OneEuroFilter:
    """A stateful One Euro filter of vectors (..., D), for scripts and tests::

        f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=0.01))
        smooth = [f(x, t) for t, x in zip(times_s, samples)]

    The first sample passes unchanged; times must increase.
    """

    def __init__(self, params: OneEuroParams, speed_scale: float = 1.0) -> None:
        self.params = params
        self.speed_scale = speed_scale
        self.x: np.ndarray | None = None
        self.speed: np.ndarray | None = None
        self.t: float | None = None

    def __call__(self, x: np.ndarray, t_s: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None or self.t is None or self.speed is None:
            self.x, self.speed = x.copy(), np.zeros_like(x)
        else:
            self.x, self.speed = one_euro_vector(x, self.x, self.speed, t_s - self.t, self.params, self.speed_scale)
        self.t = float(t_s)
        return self.x

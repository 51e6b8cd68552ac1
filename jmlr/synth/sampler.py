"""Random identities, expressions and head poses in the WCPA / ARKitFace style.

The challenge data (ARKitFace) was captured with a phone held 0.3-0.9 m from the
subject, who performed 33 facial actions while turning the head. These samplers mimic
that protocol: identity weights are standard normal over the morphable model's modes,
expressions are documented presets of ARKit-named blendshape weights (plus random
mixes), and poses put the head anywhere in the 800x800 frame, close enough to the
camera that perspective distortion is strong.

All samplers take a ``numpy.random.Generator`` so that a seed fixes every draw.
Poses follow docs/design.md: ``R_t`` is 4x4 row-vector world -> OpenGL camera
(``V_cam = V @ R + T`` with ``R = R_t[:3, :3]``, ``T = R_t[3, :3]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EXPRESSION_PRESETS",
    "FACIAL_ACTIONS",
    "PoseSampler",
    "sample_identity",
    "sample_expression",
    "sample_pose",
    "euler_to_rotation",
    "expression_vector",
]

# The 33 facial actions, one per capture "facial_action" folder (1-based index in the
# layout). Weights are ARKit blendshape values in [0, 1]; "random_mix" has none and is
# drawn by `sample_expression`. _L/_R are the subject's left/right (ARKit semantics).
EXPRESSION_PRESETS: dict[str, dict[str, float]] = {
    "neutral": {},
    "blink": {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
    "blink_left": {"eyeBlink_L": 1.0},
    "blink_right": {"eyeBlink_R": 1.0},
    "squint": {"eyeSquint_L": 0.9, "eyeSquint_R": 0.9, "cheekSquint_L": 0.6, "cheekSquint_R": 0.6},
    "eyes_wide": {"eyeWide_L": 1.0, "eyeWide_R": 1.0, "browOuterUp_L": 0.3, "browOuterUp_R": 0.3},
    "brows_raise": {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0, "browOuterUp_L": 1.0, "browOuterUp_R": 1.0},
    "brows_down": {"browDown_L": 1.0, "browDown_R": 1.0},
    "brows_inner_up": {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0},
    "brow_raise_left": {"browOuterUp_L": 1.0, "browInnerUp_L": 0.5},
    "jaw_open": {"jawOpen": 0.6},
    "jaw_open_wide": {"jawOpen": 1.0, "mouthStretch_L": 0.3, "mouthStretch_R": 0.3},
    "jaw_left": {"jawLeft": 1.0},
    "jaw_right": {"jawRight": 1.0},
    "jaw_forward": {"jawForward": 1.0, "jawOpen": 0.1},
    "smile": {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0, "cheekSquint_L": 0.4, "cheekSquint_R": 0.4},
    "smile_open": {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0, "jawOpen": 0.3,
                   "mouthUpperUp_L": 0.5, "mouthUpperUp_R": 0.5, "mouthLowerDown_L": 0.4,
                   "mouthLowerDown_R": 0.4},
    "smile_left": {"mouthSmile_L": 1.0, "cheekSquint_L": 0.3},
    "smile_right": {"mouthSmile_R": 1.0, "cheekSquint_R": 0.3},
    "pucker": {"mouthPucker": 1.0},
    "funnel": {"mouthFunnel": 1.0, "jawOpen": 0.2},
    "mouth_left": {"mouthLeft": 1.0},
    "mouth_right": {"mouthRight": 1.0},
    "frown": {"mouthFrown_L": 1.0, "mouthFrown_R": 1.0, "browDown_L": 0.5, "browDown_R": 0.5},
    "lips_press": {"mouthPress_L": 1.0, "mouthPress_R": 1.0, "mouthClose": 0.3},
    "lips_roll": {"mouthRollLower": 1.0, "mouthRollUpper": 1.0},
    "mouth_shrug": {"mouthShrugLower": 1.0, "mouthShrugUpper": 0.6},
    "cheek_puff": {"cheekPuff_L": 1.0, "cheekPuff_R": 1.0, "mouthClose": 0.3},
    "nose_sneer": {"noseSneer_L": 1.0, "noseSneer_R": 1.0, "mouthUpperUp_L": 0.4, "mouthUpperUp_R": 0.4},
    "mouth_stretch": {"mouthStretch_L": 1.0, "mouthStretch_R": 1.0, "mouthDimple_L": 0.5,
                      "mouthDimple_R": 0.5, "jawOpen": 0.15},
    "surprise": {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0, "browOuterUp_L": 1.0,
                 "browOuterUp_R": 1.0, "eyeWide_L": 0.8, "eyeWide_R": 0.8, "jawOpen": 0.5},
    "disgust": {"noseSneer_L": 0.8, "noseSneer_R": 0.8, "browDown_L": 0.7, "browDown_R": 0.7,
                "mouthUpperUp_L": 0.6, "mouthUpperUp_R": 0.6, "eyeSquint_L": 0.4, "eyeSquint_R": 0.4},
    "random_mix": {},
}

FACIAL_ACTIONS: tuple[str, ...] = tuple(EXPRESSION_PRESETS)
assert len(FACIAL_ACTIONS) == 33


def sample_identity(rng: np.random.Generator, batch: int, num_modes: int = 100,
                    scale: float = 1.0) -> np.ndarray:
    """Identity weights ``(batch, num_modes)`` float32, ``a_k ~ N(0, scale^2)``.

    Each identity mode of the face model is one standard deviation, so ``scale=1``
    samples the population the model was built from; smaller values stay nearer the
    mean head.
    """
    return (rng.standard_normal((batch, num_modes)) * scale).astype(np.float32)


def expression_vector(weights: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """``(E,)`` float32 weight vector in the model's expression order from a name->weight map."""
    index = {str(n): i for i, n in enumerate(names)}
    out = np.zeros(len(names), np.float32)
    for name, w in weights.items():
        if name not in index:
            raise KeyError(f"expression {name!r} is not in the face model")
        out[index[name]] = w
    return out


def sample_expression(rng: np.random.Generator, names: Sequence[str], action: str | None = None,
                      intensity: tuple[float, float] = (0.6, 1.0), mix_scale: float = 0.08,
                      mix_count: int = 6) -> np.ndarray:
    """Expression weights ``(E,)`` float32 in [0, 1] for one facial action.

    The preset of ``action`` (a key of `EXPRESSION_PRESETS`; a random one if None) is
    scaled by an intensity drawn from ``intensity``, and a few random blendshapes get
    small weights (at most ``mix_scale``) so that no two captures of an action are the
    same. ``"random_mix"`` draws 3-8 blendshapes with weights up to 0.8.
    """
    if action is None:
        action = FACIAL_ACTIONS[int(rng.integers(len(FACIAL_ACTIONS)))]
    w = expression_vector(EXPRESSION_PRESETS[action], names) * rng.uniform(*intensity)
    n = len(names)
    if action == "random_mix":
        k = int(rng.integers(3, 9))
        idx = rng.choice(n, size=k, replace=False)
        w[idx] += rng.uniform(0.1, 0.8, size=k)
    elif mix_count > 0 and mix_scale > 0:
        idx = rng.choice(n, size=min(mix_count, n), replace=False)
        w[idx] += rng.uniform(0.0, mix_scale, size=len(idx))
    return np.clip(w, 0.0, 1.0).astype(np.float32)


def euler_to_rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Column-vector head rotations ``(..., 3, 3)`` from angles in degrees.

    ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``: pitch about the head x axis (positive
    tilts the face up), then yaw about y (positive turns the face to the subject's
    left), then roll about the viewing axis z.
    """
    y, p, r = (np.deg2rad(np.asarray(a, np.float64)) for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    one, zero = np.ones_like(y), np.zeros_like(y)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(*y.shape, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*y.shape, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(*y.shape, 3, 3)
    return rz @ ry @ rx


@dataclass(frozen=True)
class PoseSampler:
    """Distribution of head poses relative to the camera.

    Angles mix a normal around frontal (most of the mass) with a uniform over the full
    range (the profiles); ``distance`` is the camera-to-face distance in metres (the
    head origin sits ``face_depth`` behind the face surface); the head origin projects
    anywhere in the frame where a head of radius ``head_radius`` still fits.
    """

    yaw_max: float = 90.0
    pitch_max: float = 60.0
    roll_max: float = 30.0
    yaw_sigma: float = 30.0
    pitch_sigma: float = 18.0
    roll_sigma: float = 10.0
    uniform_fraction: float = 0.2
    distance: tuple[float, float] = (0.3, 0.9)
    face_depth: float = 0.09
    head_radius: float = 0.11
    margin_px: float = 8.0

    def angles(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        out = np.empty((batch, 3))
        for j, (amax, sigma) in enumerate(((self.yaw_max, self.yaw_sigma),
                                           (self.pitch_max, self.pitch_sigma),
                                           (self.roll_max, self.roll_sigma))):
            normal = np.clip(rng.standard_normal(batch) * sigma, -amax, amax)
            uniform = rng.uniform(-amax, amax, batch)
            out[:, j] = np.where(rng.random(batch) < self.uniform_fraction, uniform, normal)
        return out

    def sample(self, rng: np.random.Generator, batch: int, K: np.ndarray,
               image_size: tuple[int, int] = (800, 800)) -> tuple[np.ndarray, np.ndarray]:
        """``(R_t (B,4,4) float32, angles (B,3) degrees yaw/pitch/roll)``."""
        width, height = image_size
        K = np.asarray(K, np.float64)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        ang = self.angles(rng, batch)
        rot = euler_to_rotation(ang[:, 0], ang[:, 1], ang[:, 2])
        depth = rng.uniform(*self.distance, batch) + self.face_depth
        # Allowed offset of the head centre so that a head of head_radius fits.
        rx = np.maximum(cx - self.head_radius * fx / depth - self.margin_px, 0.0)
        ry = np.maximum(cy - self.head_radius * fy / depth - self.margin_px, 0.0)
        u = cx + rng.uniform(-1, 1, batch) * np.minimum(rx, width - cx)
        v = cy + rng.uniform(-1, 1, batch) * np.minimum(ry, height - cy)
        x_cv = (u - cx) / fx * depth
        y_cv = (v - cy) / fy * depth
        R_t = np.zeros((batch, 4, 4), np.float64)
        R_t[:, :3, :3] = np.transpose(rot, (0, 2, 1))  # row-vector convention
        R_t[:, 3, :3] = np.stack([x_cv, -y_cv, -depth], -1)  # OpenCV -> OpenGL: flip y, z
        R_t[:, 3, 3] = 1.0
        return R_t.astype(np.float32), ang.astype(np.float32)


def sample_pose(rng: np.random.Generator, batch: int, K: np.ndarray,
                image_size: tuple[int, int] = (800, 800),
                sampler: PoseSampler | None = None) -> np.ndarray:
    """Head poses ``R_t (batch, 4, 4)`` float32 (row-vector, world -> OpenGL camera)."""
    return (sampler or PoseSampler()).sample(rng, batch, K, image_size)[0]

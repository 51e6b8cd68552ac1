"""Drawing a reconstruction over a photo: mesh wireframe, 68 landmarks, pose axes, labels.

All functions take and return RGB uint8 images (H, W, 3) and image pixels with x right and
y down; poses are OpenCV camera poses (``X_cam = R @ X_head + t``, metres).
"""

from __future__ import annotations

import cv2
import numpy as np

from .geometry.camera import project_camera_points, world_to_opencv

__all__ = ["draw_wireframe", "draw_landmarks_68", "draw_axes", "draw_label", "IBUG68_CURVES"]

_SHIFT = 4  # sub-pixel bits for cv2 drawing

#: The 68 iBUG points as curves (first, last, closed): jaw, brows, nose bridge, nostrils,
#: eyes, outer and inner lips.
IBUG68_CURVES = ((0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
                 (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True))


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * (1 << _SHIFT)).astype(np.int32)


def draw_wireframe(image: np.ndarray, points: np.ndarray, triangles: np.ndarray,
                   landmarks: np.ndarray | None = None, color=(80, 255, 120), thickness: int = 1,
                   alpha: float = 0.4) -> np.ndarray:
    """A copy of ``image`` with the mesh edges of ``points (N, 2)`` px and ``triangles (F, 3)``
    blended in at ``alpha`` (so the face under a dense mesh stays visible), and optional
    landmark dots ``(L, 2)``."""
    out = image.copy()
    pts = _fixed(points)
    tri = np.asarray(triangles)
    # Each edge once: shared edges drawn twice would look twice as heavy.
    edges = np.unique(np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1), axis=0)
    overlay = out.copy()
    cv2.polylines(overlay, list(pts[edges]), False, color, thickness, cv2.LINE_AA, _SHIFT)
    out = cv2.addWeighted(overlay, alpha, out, 1 - alpha, 0)
    if landmarks is not None:
        for p in _fixed(landmarks):
            cv2.circle(out, tuple(int(v) for v in p), int(1.5 * (1 << _SHIFT)), (255, 60, 60), -1, cv2.LINE_AA,
                       _SHIFT)
    return out


def draw_landmarks_68(image: np.ndarray, points: np.ndarray, color=(255, 220, 60), thickness: int = 1) -> np.ndarray:
    """A copy of ``image`` with the 68 iBUG points ``(68, 2)`` px joined as the face's curves
    (`IBUG68_CURVES`): readable at any face size, where a dense wireframe is not."""
    out = image.copy()
    pts = _fixed(points)
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68, 2) points, got {pts.shape}")
    curves = [pts[a:b + 1] for a, b, _ in IBUG68_CURVES]
    for (_, _, closed), curve in zip(IBUG68_CURVES, curves):
        cv2.polylines(out, [curve], closed, color, thickness, cv2.LINE_AA, _SHIFT)
    return out


def draw_axes(image: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray, length: float = 0.06,
              thickness: int = 3) -> np.ndarray:
    """A copy of ``image`` with the head frame's axes (x red, y green, z blue, ``length``
    metres from its origin) posed by ``R (3, 3)``, ``t (3,)`` and projected with ``K (3, 3)``.
    Nothing is drawn when the origin is not in front of the camera."""
    out = image.copy()
    ends = np.array([[0, 0, 0], [length, 0, 0], [0, length, 0], [0, 0, length]], np.float64)
    cam = world_to_opencv(ends, np.asarray(R, np.float64), np.asarray(t, np.float64).reshape(3))
    if np.any(cam[:, 2] <= 1e-6):
        return out
    pts = _fixed(project_camera_points(cam, np.asarray(K, np.float64)))
    for k, colour in zip((1, 2, 3), ((230, 40, 40), (40, 210, 40), (40, 110, 255))):
        cv2.line(out, tuple(int(v) for v in pts[0]), tuple(int(v) for v in pts[k]), colour, thickness,
                 cv2.LINE_AA, _SHIFT)
    return out


def draw_label(image: np.ndarray, text: str, origin: tuple[float, float], scale: float = 0.5) -> np.ndarray:
    """A copy of ``image`` with ``text`` in white on a dark band whose bottom-left corner is
    ``origin`` px (moved inside the image when it would leave it)."""
    out = image.copy()
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(2 * scale))
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(2, round(4 * scale))
    H, W = out.shape[:2]
    x = int(min(max(origin[0], 0), max(W - w - 2 * pad, 0)))
    y = int(min(max(origin[1], h + base + 2 * pad), H))
    top = y - h - base - 2 * pad
    band = out[top:y, x:x + w + 2 * pad]
    band[:] = (band * 0.35).astype(out.dtype)
    cv2.putText(out, text, (x + pad, y - base - pad), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out

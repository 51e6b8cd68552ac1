"""jmlr.viz: what is drawn lands where the geometry says, and nothing else changes."""

from __future__ import annotations

import numpy as np
import pytest

from jmlr.geometry.camera import make_intrinsics
from jmlr.viz import IBUG68_CURVES, draw_axes, draw_label, draw_landmarks_68, draw_wireframe


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b).sum(-1) > 0


def test_the_68_curves_cover_every_point_once():
    covered = sorted(i for a, b, _ in IBUG68_CURVES for i in range(a, b + 1))
    assert covered == list(range(68))


def test_landmark_curves_stay_near_their_points_and_copy_the_image():
    img = np.zeros((200, 200, 3), np.uint8)
    rng = np.random.default_rng(0)
    pts = rng.uniform(80, 120, (68, 2))
    out = draw_landmarks_68(img, pts)
    assert not img.any() and out is not img  # a copy: the input is left alone
    ys, xs = np.nonzero(_changed(out, img))
    assert len(xs) > 100 and xs.min() >= 78 and xs.max() <= 122 and ys.min() >= 78 and ys.max() <= 122
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        draw_landmarks_68(img, pts[:5])


def test_axes_point_where_the_pose_says_and_vanish_behind_the_camera():
    img = np.zeros((200, 200, 3), np.uint8)
    K = make_intrinsics(200, 200, 100, 100)
    out = draw_axes(img, np.eye(3), np.array([0.0, 0.0, 0.5]), K, length=0.1, thickness=1)
    # x (red) runs right from the centre by 200 * 0.1 / 0.5 = 40 px, y (green) down (OpenCV y is down).
    assert out[100, 130, 0] > 150 and out[100, 130, 1] < 100
    assert out[130, 100, 1] > 150 and out[130, 100, 0] < 100
    assert not _changed(out, img)[:, :95].any()  # nothing to the left of the origin
    behind = draw_axes(img, np.eye(3), np.array([0.0, 0.0, -0.5]), K)
    assert not behind.any()


def test_a_label_stays_inside_the_image():
    img = np.full((60, 120, 3), 200, np.uint8)
    out = draw_label(img, "0: 0.80 m", (100, -30))  # asked for above and beyond the right edge
    ys, xs = np.nonzero(_changed(out, img))
    assert ys.min() == 0 and xs.max() >= 115  # moved down to the top row and left to the right edge
    assert xs.min() > 0  # the text fits, so it is not squeezed against the left edge


def test_the_wireframe_is_blended_over_the_edges_only():
    img = np.full((100, 100, 3), 128, np.uint8)
    pts = np.array([[20.0, 20.0], [80.0, 20.0], [50.0, 80.0]])
    out = draw_wireframe(img, pts, np.array([[0, 1, 2]]), landmarks=pts[1:2])
    changed = _changed(out, img)
    assert changed[20, 50] and changed[50, 65]  # on two of the edges
    assert not changed[40, 50]  # inside the triangle: edges, no fill
    assert out[20, 80, 0] > 200 and out[20, 80, 2] < 128  # the landmark's red dot
    assert not changed[90:, :].any() and not changed[:, 90:].any()

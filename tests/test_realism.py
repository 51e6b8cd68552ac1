"""bench/realism.py: the crop box, the MediaPipe <-> iBUG-68 correspondence, the metric,
and (where its virtualenv exists) the MediaPipe worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import realism  # noqa: E402
from jmlr.geometry.crop import apply_affine, landmarks5_from_68  # noqa: E402


def _face68(centre=(300.0, 200.0), width=100.0, height=120.0) -> np.ndarray:
    """68 points filling a width x height box about centre, with the points the tests read placed on purpose."""
    rng = np.random.default_rng(0)
    pts = np.asarray(centre) + (rng.uniform(-0.5, 0.5, (68, 2)) * (width, height))
    pts[0] = np.asarray(centre) - (width / 2, height / 2)
    pts[1] = np.asarray(centre) + (width / 2, height / 2)
    return pts


def test_crop_transform_maps_the_scaled_landmark_square_onto_the_crop():
    lm = _face68(width=100.0, height=120.0)
    M = realism.crop_transform(lm, size=256, scale=1.6)
    side = 192.0  # 1.6 x the longer side (120)
    corners = np.array([[300 - side / 2, 200 - side / 2], [300 + side / 2, 200 + side / 2]])
    # The square's edges land on the crop's edges (pixel centres at integers: edges at -0.5 and 255.5).
    np.testing.assert_allclose(apply_affine(M, corners), [[-0.5, -0.5], [255.5, 255.5]], atol=1e-9)
    np.testing.assert_allclose(apply_affine(M, np.array([[300.0, 200.0]])), [[127.5, 127.5]], atol=1e-9)
    # Batched like the rest of jmlr.geometry.
    assert realism.crop_transform(np.stack([lm, lm + 10]), 256).shape == (2, 2, 3)


def test_crop_face_puts_image_content_where_the_transform_says():
    lm = _face68(centre=(700.0, 500.0), width=500.0, height=560.0)  # a big face: the crop shrinks 3.5x
    img = np.zeros((1000, 1400, 3), np.uint8)
    dot = np.array([640.0, 420.0])
    cv2.circle(img, tuple(dot.astype(int)), 12, (255, 255, 255), -1)
    crop, M = realism.crop_face(img, lm, size=256)
    assert crop.shape == (256, 256, 3)
    ys, xs = np.nonzero(crop[..., 0] > 64)
    weights = crop[ys, xs, 0].astype(np.float64)
    found = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    np.testing.assert_allclose(found, apply_affine(M, dot[None])[0], atol=0.3)


def test_correspondence_pairs_mirror_images_with_mirror_images():
    # iBUG-68 flip pairs (36<->45, 39<->42, 48<->54, 30 on the midline) must map to
    # MediaPipe points that are each other's mirror images too (33<->263, 133<->362, 61<->291, 1).
    m = dict(realism.IBUG68_TO_MEDIAPIPE)
    assert {(m[36], m[45]), (m[39], m[42]), (m[48], m[54])} == {(33, 263), (133, 362), (61, 291)}
    assert m[30] == 1
    assert len(set(m.values())) == len(m) and all(0 <= v < 468 for v in m.values())


def test_compared_points_pick_the_same_anatomy_from_both_layouts():
    lm68 = np.arange(68 * 2, dtype=np.float64).reshape(68, 2)
    mp = np.full((468, 2), -1.0)
    for a, b in realism.IBUG68_TO_MEDIAPIPE:
        mp[b] = lm68[a]
    np.testing.assert_array_equal(realism.mediapipe_compared(mp), realism.ibug_compared(lm68))
    # The 5 alignment points come from the compared ones (eye centres = mean of the corners).
    five = landmarks5_from_68(lm68)
    c = realism.ibug_compared(lm68)
    np.testing.assert_allclose(five, [(c[0] + c[1]) / 2, (c[2] + c[3]) / 2, c[4], c[5], c[6]])
    # Batched.
    assert realism.mediapipe_compared(np.stack([mp, mp])).shape == (2, 7, 2)


def test_nme_is_mean_distance_over_outer_eye_distance_in_percent():
    lm = np.zeros((68, 2))
    lm[36], lm[45] = (0.0, 0.0), (100.0, 0.0)
    assert realism.outer_eye_distance(lm) == pytest.approx(100.0)
    gt = np.zeros((7, 2))
    pred = gt.copy()
    pred[0] = (3.0, 4.0)  # 5 px off on one point of 7
    assert realism.nme_percent(pred, gt, 100.0) == pytest.approx(5.0 / 7)
    # Scale-free: the same face twice as large has the same error.
    assert realism.nme_percent(2 * pred, 2 * gt, 200.0) == pytest.approx(5.0 / 7)
    assert realism.nme_percent(np.stack([pred, gt]), np.stack([gt, gt]), np.array([100.0, 100.0])).tolist() == \
        pytest.approx([5.0 / 7, 0.0])


def test_summarise_counts_misses_in_the_share_but_not_in_the_error():
    s = realism.summarise([1.0, None, 3.0, None])
    assert s["share"] == 0.5 and s["found"] == 2 and s["n"] == 4
    assert s["mean"] == 2.0 and s["median"] == 2.0
    assert realism.summarise([None])["share"] == 0.0 and "mean" not in realism.summarise([None])


def _worker_python() -> Path:
    python = realism.VENV / "bin" / "python"
    if not python.is_file() or subprocess.run([str(python), "-c", "import mediapipe"],
                                              capture_output=True).returncode != 0:
        pytest.skip(f"MediaPipe virtualenv missing at {realism.VENV}: `python bench/realism.py` makes it "
                    "(pip install mediapipe==0.10.21 'numpy<2' opencv-python-headless)")
    return python


def test_worker_finds_no_face_in_a_blank_crop(tmp_path):
    python = _worker_python()
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 128, np.uint8))
    out = realism.run_mediapipe(python, [blank], tmp_path)
    assert out["mediapipe"] == "0.10.21"
    assert out["results"] == [{"path": str(blank), "landmarks": None}]
    assert len(out["edges"]) > 2000 and max(max(e) for e in out["edges"]) == 467


def test_worker_points_land_on_real_annotated_faces(tmp_path):
    """End to end on the human-annotated photos: crop, MediaPipe, the correspondence, the metric."""
    python = _worker_python()
    from bench.real_faces import PHOTOS, read_landmarks

    cache = REPO / ".cache" / "real_faces"
    errors = []
    for name, (img_name, ann_name) in PHOTOS.items():
        if not (cache / img_name).is_file():
            pytest.skip(f"real photos not fetched into {cache}: `python bench/real_faces.py` fetches them")
        rgb = cv2.cvtColor(cv2.imread(str(cache / img_name)), cv2.COLOR_BGR2RGB)
        gt = read_landmarks(cache / ann_name)
        crop, M = realism.crop_face(rgb, gt)
        png = tmp_path / f"{name}.png"
        cv2.imwrite(str(png), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        pts = realism.run_mediapipe(python, [png], tmp_path)["results"][0]["landmarks"]
        assert pts is not None, f"MediaPipe found no face in the real photo {name}"
        gt_crop = apply_affine(M, gt)
        errors.append(realism.nme_percent(realism.mediapipe_compared(np.asarray(pts)), realism.ibug_compared(gt_crop),
                                          realism.outer_eye_distance(gt_crop)))
    # A wrong or mirrored correspondence is off by tens of percent on every face; MediaPipe
    # agrees with people to a few percent on most (3-7 % here, ~10 % on the grey, tilted Einstein).
    assert float(np.median(errors)) < 8.0 and max(errors) < 20.0, errors


def test_report_splits_by_how_the_camera_sees_the_face(tmp_path):
    # (yaw, (azimuth, elevation), MediaPipe found it, CenterFace found it)
    rows = [(5.0, (5.0, 2.0), True, True), (10.0, (-10.0, 15.0), False, True),
            (3.0, (2.0, -55.0), False, False), (40.0, (-40.0, 0.0), True, False), (2.0, (1.0, 45.0), True, True)]
    s = realism.ImageSet("renders", "test")
    for k, (yaw, view, mp, cf) in enumerate(rows):
        s.items.append(realism.Item(f"i{k}", tmp_path / f"{k}.png", np.zeros((68, 2)), yaw, view,
                                    centerface_nme=5.0 if cf else None, mediapipe_nme=4.0 if mp else None))
    rep = realism.set_report(s)
    frontal = rep["by_view"]["near-frontal: |azimuth| < 30, |elevation| < 20"]
    assert frontal["images"] == 2 and frontal["mediapipe_face_share"] == 0.5 and frontal["centerface_recall"] == 1.0
    assert rep["by_view"]["elevation < -40 (from far below)"]["images"] == 1
    assert rep["by_view"]["elevation >= 40 (from far above)"]["mediapipe_face_share"] == 1.0
    assert rep["by_view"]["elevation -20 to 20"]["images"] == 3
    assert rep["per_image"][2]["view"] == [2.0, -55.0]
    # Real photos carry no view: no split, and the per-image view is None.
    real = realism.ImageSet("real", "test", [realism.Item("r", tmp_path / "r.png", np.zeros((68, 2)), None)])
    assert "by_view" not in realism.set_report(real) and realism.set_report(real)["per_image"][0]["view"] is None


def test_face_level_reads_the_face_not_the_background():
    lm = _face68()
    lm[0:17] = np.stack([np.linspace(250, 350, 17), np.full(17, 260.0)], 1)  # a jaw line along the bottom
    lm[17:27] = np.stack([np.linspace(250, 350, 10), np.full(10, 140.0)], 1)  # brows along the top
    img = np.full((400, 600, 3), 230, np.uint8)
    img[140:261, 250:351] = 40
    assert realism.face_level(img, lm) == 40.0
    assert realism.face_level(img, lm * 0.01) is None  # an outline of a few pixels says nothing
    summary = realism.level_summary([40.0, 250.0, None, 120.0, 100.0])
    assert summary["n"] == 4 and summary["share_below_60"] == 0.25 and summary["share_above_200"] == 0.25
    assert summary["percentiles"]["50"] == 110.0
    assert realism.level_summary([None]) == {"n": 0}

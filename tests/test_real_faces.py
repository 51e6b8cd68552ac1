"""bench/real_faces.py without the network: the annotation formats, the face matching, the
metric and the deb-src list (the photos themselves are fetched only by the bench)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import real_faces as rf  # noqa: E402


def _points(offset=(0.0, 0.0)) -> np.ndarray:
    """68 distinct points, a 7 px grid: point k at (10 + 7 (k % 10), 20 + 7 (k // 10)) + offset."""
    k = np.arange(68)
    return np.stack([10.0 + 7 * (k % 10), 20.0 + 7 * (k // 10)], 1) + offset


def _box_xml(pts: np.ndarray, extra: str = "", names=None) -> str:
    names = names if names is not None else [f"{i:02d}" for i in range(len(pts))]
    parts = "".join(f"<part name='{n}' x='{x:g}' y='{y:g}'/>" for n, (x, y) in zip(names, pts))
    return f"<box top='1' left='2' width='60' height='60'{extra}>{parts}</box>"


def _dataset(images: str) -> str:
    return ("<?xml version='1.0' encoding='ISO-8859-1'?>\n"
            "<?xml-stylesheet type='text/xsl' href='image_metadata_stylesheet.xsl'?>\n"
            f"<dataset><name>t</name><comment>c</comment><images>{images}</images></dataset>")


def test_imglab_two_faces_in_file_order_and_points_as_given():
    a, b = _points(), _points((100.0, 5.0))
    xml = _dataset(f"<image file='x.jpg' width='500' height='375'>{_box_xml(a)}{_box_xml(b)}</image>")
    faces = rf.parse_imglab(xml)
    assert list(faces) == ["x.jpg"]
    assert len(faces["x.jpg"]) == 2
    np.testing.assert_array_equal(faces["x.jpg"][0], a)  # dlib: pixel centres on whole numbers, no shift
    np.testing.assert_array_equal(faces["x.jpg"][1], b)
    assert faces["x.jpg"][0].dtype == np.float64 and faces["x.jpg"][0].shape == (68, 2)


def test_imglab_parts_are_ordered_by_their_number_not_the_file():
    pts = _points()
    order = np.random.default_rng(1).permutation(68)
    box = _box_xml(pts[order], names=[str(i) for i in order])  # '7' as well as '07'
    faces = rf.parse_imglab(_dataset(f"<image file='y.jpg'>{box}</image>").encode("latin-1"))
    np.testing.assert_array_equal(faces["y.jpg"][0], pts)


def test_imglab_leaves_out_ignored_boxes_boxes_without_parts_and_empty_images():
    pts = _points()
    ignored = _box_xml(pts, extra=" ignore='1'")
    xml = _dataset("<image file='a.jpg'><box top='1' left='2' width='3' height='4'/></image>"
                   f"<image file='b.jpg'>{ignored}{_box_xml(pts + 1)}</image>")
    faces = rf.parse_imglab(xml)
    assert list(faces) == ["b.jpg"]
    assert len(faces["b.jpg"]) == 1
    np.testing.assert_array_equal(faces["b.jpg"][0], pts + 1)


def test_imglab_rejects_a_box_that_is_not_68_points():
    with pytest.raises(ValueError, match=r"expected 0\.\.67"):
        rf.parse_imglab(_dataset(f"<image file='c.jpg'>{_box_xml(_points()[:5])}</image>"))


def test_pts_counts_from_one_and_ljson_stores_y_x(tmp_path):
    pts = _points()
    (tmp_path / "f.pts").write_text("version: 1\nn_points: 68\n{\n"
                                    + "".join(f"{x + 1} {y + 1}\n" for x, y in pts) + "}\n")
    np.testing.assert_allclose(rf.read_landmarks(tmp_path / "f.pts"), pts)
    (tmp_path / "f.ljson").write_text(json.dumps({"landmarks": {"points": pts[:, ::-1].tolist()}}))
    np.testing.assert_allclose(rf.read_landmarks(tmp_path / "f.ljson"), pts)
    (tmp_path / "g.pts").write_text("{\n1 2\n3 4\n}\n")
    with pytest.raises(ValueError, match="expected 68"):
        rf.read_landmarks(tmp_path / "g.pts")


def test_nme_is_mean_distance_over_outer_eye_corners_in_percent():
    gt = _points()
    d = np.linalg.norm(gt[36] - gt[45])
    assert rf.nme(gt, gt) == 0.0
    assert rf.nme(gt + (3.0, 4.0), gt) == pytest.approx(5.0 / d * 100.0)


def test_nme_by_region_splits_the_68_points_and_averages_back_to_nme():
    gt = _points()
    pred = gt.copy()
    pred[0:17] += (6.0, 8.0)  # only the jaw line is off, by 10 px
    d = np.linalg.norm(gt[36] - gt[45])
    regions = rf.nme_by_region(pred, gt)
    assert list(regions) == ["jaw", "brows", "nose", "eyes", "mouth"]
    assert regions["jaw"] == pytest.approx(10.0 / d * 100.0, abs=0.01)
    assert regions["brows"] == regions["nose"] == regions["eyes"] == regions["mouth"] == 0.0
    sizes = [b - a for a, b in rf.REGIONS68.values()]
    assert sum(sizes) == 68
    assert sum(n * v for n, v in zip(sizes, regions.values())) / 68 == pytest.approx(rf.nme(pred, gt), abs=0.01)
    means = rf.region_means([{"regions": regions}, {"regions": None}, {"regions": dict.fromkeys(regions, 1.0)}])
    assert means["jaw"] == pytest.approx((regions["jaw"] + 1.0) / 2, abs=0.01) and means["nose"] == 0.5
    assert rf.region_means([{"regions": None}])["jaw"] is None


def test_match_faces_nearest_centre_one_box_each_and_misses():
    left, right, far = _points(), _points((200.0, 0.0)), _points((600.0, 0.0))  # point boxes 63 x 42 px
    centre = lambda p: (p.min(0) + p.max(0)) / 2  # noqa: E731
    box = lambda c, dx=0.0: [c[0] - 30 + dx, c[1] - 35, c[0] + 30 + dx, c[1] + 30]  # noqa: E731
    boxes = [box(centre(right), 4.0), box(centre(left), -2.0), box(centre(left), 20.0)]
    # left: the nearer of two boxes; right: its own; far: none within half its box (31.5 px)
    assert rf.match_faces([left, right, far], boxes) == [1, 0, None]
    # one box, two annotations near it: the nearer one gets it, the other is missed
    assert rf.match_faces([left, left + (10.0, 0.0)], [box(centre(left), 9.0)]) == [None, 0]
    assert rf.match_faces([left], []) == [None]


def test_photo_face_ids_and_summary():
    one = rf.Photo("menpo", "menpo:x", b"", [_points()])
    two = rf.Photo("dlib", "dlib:y", b"", [_points(), _points()])
    assert one.face_ids() == ["menpo:x"] and two.face_ids() == ["dlib:y#0", "dlib:y#1"]
    s = rf.summary([1.0, None, 3.0, 5.0])
    assert s == {"faces": 4, "found": 3, "missed": 1, "mean_nme_percent": 3.0, "median_nme_percent": 3.0}
    assert rf.summary([None])["mean_nme_percent"] is None


def test_deb_src_parts_turns_both_apt_formats_into_source_lists(tmp_path):
    etc = tmp_path / "etc"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text("# comment\ndeb http://mirror.invalid/debian stable main\n"
                                      "deb-src http://mirror.invalid/debian stable main\n")
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: stable\nComponents: main\n")
    (etc / "sources.list.d" / "old.sources.disabled").write_text("Types: deb\n")
    parts = rf.deb_src_parts(tmp_path / "apt", etc)
    assert sorted(p.name for p in parts.iterdir()) == ["debian.sources", "sources.list"]
    assert (parts / "sources.list").read_text() == "deb-src http://mirror.invalid/debian stable main\n"
    assert (parts / "debian.sources").read_text().splitlines()[0] == "Types: deb-src"


def test_face_tile_draws_the_fixed_points_in_blue_under_ours_and_the_annotation():
    pytest.importorskip("cv2")
    img = np.zeros((120, 120, 3), np.uint8)
    gt = _points()
    fixed = gt + (3.0, 0.0)  # BGR blue where only the fixed points are
    plain = rf.face_tile(img, gt, gt, "x", size=192)
    with_fixed = rf.face_tile(img, gt, gt, "x", size=192, fixed=fixed)
    blue = (with_fixed[..., 0].astype(int) - with_fixed[..., 2]) > 100
    assert blue.sum() > 68 and not ((plain[..., 0].astype(int) - plain[..., 2]) > 100).any()


def test_by_yaw_bins_the_found_faces_by_their_absolute_yaw():
    r = {"jaw": 1.0, "brows": 1.0, "nose": 1.0, "eyes": 1.0, "mouth": 1.0}
    faces = [{"nme_percent": 4.0, "yaw_deg": -10.0, "regions": r}, {"nme_percent": 6.0, "yaw_deg": 20.0, "regions": r},
             {"nme_percent": 8.0, "yaw_deg": -45.0, "regions": r}, {"nme_percent": 10.0, "yaw_deg": 31.0, "regions": r},
             {"nme_percent": None, "yaw_deg": None, "regions": None}]
    bins = rf.by_yaw(faces)
    assert list(bins) == ["0-15", "15-30", "30-90"]
    assert [b["found"] for b in bins.values()] == [1, 1, 2]
    assert bins["30-90"]["mean_nme_percent"] == 9.0 and bins["30-90"]["regions"]["jaw"] == 1.0

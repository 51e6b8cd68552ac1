"""The Intrinsics value: K, field of view, rescaling, distortion, JSON round trip."""

import math
import subprocess
import sys

import numpy as np
import pytest

from jmlr.geometry import camera as cam
from jmlr.geometry.intrinsics import Intrinsics


def test_K_fov_and_constructors_agree_with_the_functions():
    i = Intrinsics(700.0, 710.0, 300.5, 260.25, 640, 480)
    np.testing.assert_array_equal(i.K, cam.make_intrinsics(700.0, 710.0, 300.5, 260.25))
    fx, fy = cam.fov_from_intrinsics(i.K, 640, 480)
    np.testing.assert_allclose(i.fov, (fx, fy), rtol=1e-12)
    f = Intrinsics.from_fov(90.0, 800, 600)
    np.testing.assert_array_equal(f.K, cam.intrinsics_from_fov(90.0, 800, 600))
    assert f.fov[0] == pytest.approx(90.0) and f.size == (800, 600)
    e = Intrinsics.from_focal_35mm(26.0, 3000, 2000)
    np.testing.assert_array_equal(e.K, cam.intrinsics_from_focal_35mm(26.0, 3000, 2000))
    w = Intrinsics.from_K(cam.wcpa_intrinsics(), 800, 800)
    assert w.fx == pytest.approx(629.775, abs=1e-3) and w.cx == 400.0


def test_rescaled_matches_rescale_intrinsics_and_round_trips():
    i = Intrinsics(1000.0, 1000.0, 1000.0, 500.0, 2000, 1000)
    r = i.rescaled(400, 200)
    np.testing.assert_array_equal(r.K, cam.rescale_intrinsics(i.K, (2000, 1000), (400, 200)))
    assert r.size == (400, 200) and r.fx == pytest.approx(200.0)
    np.testing.assert_allclose(r.rescaled(2000, 1000).K, i.K, atol=1e-9)
    assert i.rescaled(2000, 1000) is i
    assert not i.aspect_differs(400, 200) and i.aspect_differs(400, 400)
    with pytest.raises(ValueError, match="image size"):
        Intrinsics(1.0, 1.0, 0.0, 0.0).rescaled(10, 10)
    with pytest.raises(ValueError, match="image size"):
        _ = Intrinsics(1.0, 1.0, 0.0, 0.0).fov
    with pytest.raises(ValueError, match="both width and height"):
        Intrinsics(1.0, 1.0, 0.0, 0.0, width=10)


def test_distortion_kept_as_given_and_zero_means_none_for_opencv():
    assert Intrinsics(1, 1, 0, 0).dist_coeffs is None
    zero = Intrinsics(1, 1, 0, 0, distortion=(0, 0, 0, 0, 0))
    assert zero.distortion == (0.0,) * 5 and zero.dist_coeffs is None
    d = Intrinsics(1, 1, 0, 0, 10, 10, (0.1, -0.05, 0, 0, 0))
    np.testing.assert_array_equal(d.dist_coeffs, [0.1, -0.05, 0, 0, 0])
    assert d.rescaled(20, 20).distortion == d.distortion
    with pytest.raises(ValueError, match="5 values"):
        Intrinsics(1, 1, 0, 0, distortion=(0.1,))


def test_json_round_trip_in_the_service_shape():
    d = {"fx": 1450.0, "fy": 1450.0, "cx": 960.0, "cy": 540.0, "width": 1920, "height": 1080,
         "distortion": {"k1": 0.061, "k2": -0.112}}
    i = Intrinsics.from_dict(d)
    assert i.distortion == (0.061, -0.112, 0.0, 0.0, 0.0)
    out = i.to_dict()
    assert out["distortion"] == {"k1": 0.061, "k2": -0.112, "p1": 0.0, "p2": 0.0, "k3": 0.0}
    assert Intrinsics.from_dict(out) == i
    bare = Intrinsics.from_dict({"fx": 1, "fy": 2, "cx": 3, "cy": 4, "source": "ignored"})
    assert bare.to_dict() == {"fx": 1.0, "fy": 2.0, "cx": 3.0, "cy": 4.0, "width": None, "height": None,
                              "distortion": None}
    assert math.isclose(Intrinsics.from_dict(out).K[0, 0], 1450.0)


def test_geometry_imports_without_torch():
    # The service imports jmlr.geometry on every request path; torch must not come with it.
    code = ("import sys; sys.modules['torch'] = None; import jmlr.geometry as g; "
            "g.solve_pnp; g.Intrinsics; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

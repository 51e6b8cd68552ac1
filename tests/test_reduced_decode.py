"""Detection and crops that scale with the photo (issue 12): CenterFace on a frame
downscaled to the smallest face wanted, JPEGs decoded at 1/2, 1/4 or 1/8 of their size,
crops sampled from the reduced pixels, and the service's choice of the reduction."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from jmlr.detect import CENTERFACE_FACE_PX, CenterFaceDetector  # noqa: E402
from jmlr.geometry.crop import crop_transform, similarity_scale  # noqa: E402
from jmlr.inference import crop_faces, max_reduction  # noqa: E402
from jmlr.inference.crops import reduced_to_frame  # noqa: E402
from service.imaging import decode_image  # noqa: E402


def _jpeg(rgb: np.ndarray, exif_orientation: int | None = None, quality: int = 95) -> bytes:
    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    if exif_orientation is None:
        img.save(buf, "JPEG", quality=quality)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_astronaut() -> np.ndarray:
    """The astronaut at 4x: a 2048 x 2048 frame whose face is ~360 px wide."""
    a = skimage_data.astronaut()
    return cv2.resize(a, (2048, 2048), interpolation=cv2.INTER_CUBIC)


def test_reduced_pixel_centres():
    # reduced pixel i averages frame pixels [r i, r i + r): its centre is r i + (r - 1) / 2
    T = reduced_to_frame(4)
    np.testing.assert_allclose(T @ np.array([0.0, 0.0, 1.0]), [1.5, 1.5])
    np.testing.assert_allclose(T @ np.array([2.0, 1.0, 1.0]), [9.5, 5.5])


def test_max_reduction_keeps_a_crop_pixel_per_reduced_pixel():
    lm = np.array([[100.0, 100.0], [160.0, 100.0], [130.0, 135.0], [105.0, 165.0], [155.0, 165.0]])
    for scale in (1.0, 2.0, 5.0, 20.0):
        pts = lm * scale
        r = max_reduction([pts], 128)
        s = float(similarity_scale(crop_transform(pts, 128)))  # crop px per frame px
        assert r in (1, 2, 4, 8) and r * s <= 1.0
        assert r == 8 or 2 * r * s > 1.0  # the next reduction would sample finer than a pixel
    assert max_reduction([lm, lm * 20], 128) == max_reduction([lm], 128)  # the smallest face decides
    assert max_reduction([], 128) == 8


def test_crop_from_reduced_pixels_matches_the_full_frame(big_astronaut):
    det = CenterFaceDetector().detect(big_astronaut)[0]
    r = max_reduction([det.landmarks5], 96)
    assert r >= 2  # a 360 px face cropped at 96 px: the frame can be decoded smaller
    h, w = big_astronaut.shape[:2]
    small = cv2.resize(big_astronaut, (w // r, h // r), interpolation=cv2.INTER_AREA)
    full = crop_faces(big_astronaut, [det.landmarks5], 96)
    reduced = crop_faces(small, [det.landmarks5], 96, reduction=r)
    np.testing.assert_allclose(reduced.Ms, full.Ms)  # M stays in frame px
    diff = np.abs(reduced.crops.astype(float) - full.crops.astype(float)).mean()
    assert diff < 4.0, diff  # the same crop, up to resampling


def test_jpeg_decoded_at_a_reduction_keeps_frame_coordinates(big_astronaut):
    data = _jpeg(big_astronaut)
    full = decode_image(data, 10**8)
    quarter = decode_image(data, 10**8, reduction=4)
    assert full.reduction == 1 and full.rgb.shape == (2048, 2048, 3)
    assert quarter.reduction == 4 and quarter.rgb.shape == (512, 512, 3)
    assert (quarter.width, quarter.height) == (full.width, full.height) == (2048, 2048)
    # an EXIF rotation by 90 degrees swaps the frame's sides, reduced or not
    wide = big_astronaut[:1024]  # 2048 wide, 1024 high
    turned = decode_image(_jpeg(wide, exif_orientation=6), 10**8, reduction=2)
    assert (turned.width, turned.height) == (1024, 2048) and turned.rgb.shape == (1024, 512, 3)
    # PNG has no DCT scaling: decoded whole, and says so
    buf = io.BytesIO()
    Image.fromarray(big_astronaut[:256, :256]).save(buf, "PNG")
    png = decode_image(buf.getvalue(), 10**8, reduction=4)
    assert png.reduction == 1 and png.rgb.shape == (256, 256, 3)


def test_detector_on_a_reduced_frame_reports_frame_pixels(big_astronaut):
    det = CenterFaceDetector()
    ref = det.detect(big_astronaut)[0]
    small = cv2.resize(big_astronaut, (512, 512), interpolation=cv2.INTER_AREA)
    got = det.detect(small, reduction=4)[0]
    # exactly the reduced image's detection, in frame pixels (pixel i covers [4 i, 4 i + 4))
    own = det.detect(small)[0]
    np.testing.assert_allclose(got.landmarks5, own.landmarks5 * 4 + 1.5, atol=1e-6)
    np.testing.assert_allclose(got.bbox, own.bbox * 4 + 1.5, atol=1e-6)
    # and where the full frame's detection puts the face (CenterFace at another scale)
    face = ref.bbox[2] - ref.bbox[0]
    assert np.abs(got.landmarks5 - ref.landmarks5).max() < 0.05 * face


def test_detector_scale_follows_the_smallest_face_wanted(big_astronaut):
    loose = CenterFaceDetector(max_side=4096)
    sized = CenterFaceDetector(max_side=4096, min_face_px=120)
    assert loose.input_scale(2048, 2048) == 1.0
    assert sized.input_scale(2048, 2048) == pytest.approx(CENTERFACE_FACE_PX / 120)
    # the face (~360 px) is well above the smallest wanted: still found at that scale
    a, b = loose.detect(big_astronaut)[0], sized.detect(big_astronaut)[0]
    face = a.bbox[2] - a.bbox[0]
    assert np.abs(a.landmarks5 - b.landmarks5).max() < 0.05 * face


def test_service_decodes_large_jpegs_at_the_detectors_scale(big_astronaut, tmp_path, monkeypatch):
    """A 2048 x 2048 JPEG with detection is decoded at 1/2 (CenterFace looks at it at
    <= 960 px), and answered in frame pixels; client points decide by the crop's needs;
    PNGs and small photos are decoded whole."""
    from fastapi.testclient import TestClient

    import service.pipeline as pipeline
    from jmlr.store import make_random_model
    from service.app import create_app
    from service.settings import Settings

    make_random_model(arch="jmlr_resnet18d", input_size=64, name="tiny", store_dir=tmp_path / "store",
                      set_default=True)
    asked: list[int] = []
    real = pipeline.decode_image

    def spy(data, max_pixels, reduction=1):
        asked.append(reduction)
        return real(data, max_pixels, reduction)

    monkeypatch.setattr(pipeline, "decode_image", spy)
    settings = Settings(_env_file=None, model_store=tmp_path / "store", data_dir=tmp_path / "var", device="cpu",
                        api_keys=["k"], rate_limit_per_minute=0, max_upload_bytes=20_000_000,
                        max_image_pixels=10_000_000, request_timeout_s=120.0)
    full = CenterFaceDetector().detect(big_astronaut)[0]
    with TestClient(create_app(settings)) as c:
        def post(data, mime="image/jpeg", **form):
            r = c.post("/reconstruct", files={"image": ("f", data, mime)}, data=form, headers={"X-API-Key": "k"})
            assert r.status_code == 200, r.text
            return r.json()

        asked.clear()
        out = post(_jpeg(big_astronaut))
        assert asked == [2]
        assert (out["image"]["width"], out["image"]["height"]) == (2048, 2048)
        (face,) = out["faces"]
        size = full.bbox[2] - full.bbox[0]
        assert np.abs(np.asarray(face["landmarks5"]) - full.landmarks5).max() < 0.06 * size

        # client points: as far as the crop allows (a 64 px crop of a 360 px face: 1/4)
        asked.clear()
        post(_jpeg(big_astronaut), faces='[{"landmarks5": ' + str(full.landmarks5.tolist()) + "}]")
        assert asked == [max_reduction([full.landmarks5], 64)] and asked[0] >= 4

        # small photos and PNGs: whole
        asked.clear()
        post(_jpeg(skimage_data.astronaut()))
        buf = io.BytesIO()
        Image.fromarray(big_astronaut[:1024, :1024]).save(buf, "PNG")
        post(buf.getvalue(), "image/png")
        assert asked == [1, 1]

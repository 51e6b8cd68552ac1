"""Upload formats beyond JPEG/PNG/WebP: HEIC (what iPhones capture) and AVIF decode upright,
with their EXIF focal length, and bad files of either kind get the API's clear errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from service.errors import ApiError
from service.imaging import check_content_type, decode_image, probe_image

HEIC = Path(__file__).parent / "data" / "astronaut_rot6.heic"
# The fixture with bytes flipped by the fuzz test below (seed 11): pi-heif 1.4.0 segfaults
# reading its metadata.
CRASHER = Path(__file__).parent / "data" / "crashes_pi_heif_1.4.heic"
skimage_data = pytest.importorskip("skimage.data")


def _upright() -> np.ndarray:
    return skimage_data.astronaut()[:400]  # what the fixture shows once turned (512 x 400)


def test_heic_decodes_upright_with_its_focal():
    data = HEIC.read_bytes()
    header = probe_image(data, 10**7)
    assert header.format == "HEIF" and header.pixels == 512 * 400
    d = decode_image(data, 10**7)
    assert d.format == "HEIF" and (d.width, d.height) == (512, 400) and d.rgb.shape == (400, 512, 3)
    assert d.focal_35mm == 26
    # Turned once, not twice and not never: the stored pixels are the photo turned by 90 degrees.
    err = np.abs(d.rgb.astype(int) - _upright()).mean()
    assert err < 6, err
    assert np.abs(np.rot90(d.rgb, 1)[:400, :400].astype(int) - _upright()[:400, :400]).mean() > 30


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow build has no AVIF codec")
def test_avif_decodes_like_the_jpeg_it_was_made_from():
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[0xA405] = 28
    stored = Image.fromarray(_upright()).transpose(Image.Transpose.ROTATE_90)
    out = {}
    for fmt in ("JPEG", "AVIF"):
        buf = io.BytesIO()
        stored.save(buf, fmt, quality=90, exif=exif.tobytes())
        out[fmt] = decode_image(buf.getvalue(), 10**7)
    a, j = out["AVIF"], out["JPEG"]
    assert a.format == "AVIF" and (a.width, a.height) == (j.width, j.height) == (512, 400)
    assert a.focal_35mm == j.focal_35mm == 28
    assert np.abs(a.rgb.astype(int) - j.rgb).mean() < 6


def test_an_heic_that_crashes_the_decoder_is_a_422_and_the_next_one_decodes():
    from service.heif_child import HEIF_CHILD

    decode_image(HEIC.read_bytes(), 10**7)  # the child is up
    before = HEIF_CHILD.restarts
    with pytest.raises(ApiError) as e:
        probe_image(CRASHER.read_bytes(), 10**7)
    assert e.value.status_code == 422 and e.value.code == "invalid_image" and "crashed" in e.value.message
    assert HEIF_CHILD.restarts == before + 1
    assert decode_image(HEIC.read_bytes(), 10**7).rgb.shape == (400, 512, 3)


def test_heic_is_never_opened_in_this_process():
    """Only the child registers pi-heif: Pillow here cannot open an HEIC at all."""
    from PIL import UnidentifiedImageError

    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(HEIC.read_bytes()))


def test_truncated_heic_is_a_clear_422():
    data = HEIC.read_bytes()
    with pytest.raises(ApiError) as e:
        decode_image(data[: len(data) // 2], 10**7)
    assert e.value.status_code == 422 and e.value.code == "invalid_image"
    assert "HEIC" in e.value.message


def _with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """The HEIC with every 'ispe' (image spatial extents) property claiming another size."""
    out, pos = bytearray(data), 0
    while (pos := out.find(b"ispe", pos)) >= 0:
        out[pos + 8:pos + 16] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
        pos += 4
    return bytes(out)


@pytest.mark.parametrize("size", [(100, 100), (6000, 6000)])
def test_heic_whose_header_lies_about_its_size_is_a_clear_422(size):
    with pytest.raises(ApiError) as e:
        decode_image(_with_declared_size(HEIC.read_bytes(), *size), 10**8)
    assert e.value.status_code == 422 and e.value.code == "invalid_image"


def test_heic_claiming_a_huge_canvas_is_refused_from_its_header():
    with pytest.raises(ApiError) as e:
        probe_image(_with_declared_size(HEIC.read_bytes(), 60000, 60000), 40_000_000)
    assert e.value.status_code == 413 and e.value.code == "image_too_large"


@pytest.mark.parametrize(("fmt", "seed"), [("HEIF", 0), ("HEIF", 11), ("AVIF", 7), ("WEBP", 7), ("JPEG", 7),
                                           ("PNG", 7)])
def test_corrupted_uploads_decode_or_get_a_clear_error(fmt, seed):
    """Seeded byte flips and truncations of each format: every outcome is a decoded image
    or an ApiError (a 4xx), never another exception (a 500) or a dead process. HEIC seed 0
    hits libheif's EOFError, seed 11 a segfault of the decoder (in its child)."""
    if fmt == "HEIF":
        data = HEIC.read_bytes()
    else:
        if fmt == "AVIF" and not features.check("avif"):
            pytest.skip("this Pillow build has no AVIF codec")
        buf = io.BytesIO()
        Image.fromarray(_upright()[::2, ::2]).save(buf, fmt)
        data = buf.getvalue()
    rng = np.random.default_rng(seed)
    outcomes = {"decoded": 0, "refused": 0}
    for k in range(240):
        b = bytearray(data)
        if k % 3 == 2:
            b = b[: int(rng.integers(1, len(b)))]
        else:
            for _ in range(int(rng.integers(1, 30))):
                b[int(rng.integers(0, len(b) if k % 3 else min(len(b), 600)))] = int(rng.integers(0, 256))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about EXIF tags cut short
                probe_image(bytes(b), 10**7)
                decode_image(bytes(b), 10**7)
            outcomes["decoded"] += 1
        except ApiError as e:
            assert 400 <= e.status_code < 500
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0, outcomes


def test_heic_over_the_pixel_cap_is_refused_before_decoding():
    with pytest.raises(ApiError) as e:
        probe_image(HEIC.read_bytes(), 512 * 400 - 1)
    assert e.value.status_code == 413 and e.value.code == "image_too_large"


@pytest.mark.parametrize("ctype", ["image/heic", "image/HEIF", "image/avif", "image/heic; charset=binary"])
def test_heic_and_avif_content_types_are_accepted(ctype):
    check_content_type(ctype)


def test_an_unsupported_content_type_names_the_ones_that_are():
    with pytest.raises(ApiError) as e:
        check_content_type("image/gif")
    assert e.value.status_code == 415 and "image/heic" in e.value.message and "image/avif" in e.value.message

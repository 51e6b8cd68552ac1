"""Upload → RGB uint8 array, safely: size, type and pixel caps before any full decode.

Pillow reads only the header on ``Image.open``; the pixel cap is checked there, so a
decompression bomb (a tiny file claiming a huge canvas) is refused without allocating it.

Formats: JPEG, PNG, WebP, AVIF (Pillow's own plugins) and HEIC, the format iPhones
capture in (pi-heif's opener: libheif with the libde265 decoder, no encoder). HEIC files
are opened and decoded in a child process (`service.heif_child`: libheif can crash on a
crafted file), by the same code (:func:`probe_local`, :func:`decode_local`). HEIF
containers carry their rotation as transforms that libheif applies while decoding; the
opener then resets the EXIF orientation to 1, so no file is turned twice.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ApiError
from .heif_child import HEIF_CHILD

# Pillow's format name -> the media type it is served as.
ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "AVIF": "image/avif",
                   "HEIF": "image/heic"}
ALLOWED_CONTENT_TYPES = {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/avif",
                         "image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence"}
FORMATS_IN_WORDS = "JPEG, PNG, WebP, HEIC or AVIF"
# Generic types some clients (curl without ;type=, browsers) send; the bytes decide then.
GENERIC_CONTENT_TYPES = {"", "application/octet-stream"}

_EXIF_IFD = 0x8769
_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (h, w, 3) uint8, EXIF orientation applied; the frame at 1/reduction of its size
    format: str
    focal_35mm: float | None  # EXIF FocalLengthIn35mmFilm, if present and sane
    reduction: int = 1  # rgb pixel i covers frame pixels [r i, r i + r)
    frame_size: tuple[int, int] | None = None  # (W, H) of the frame, oriented; None: rgb's own

    @property
    def width(self) -> int:
        """Frame width, px (what intrinsics and faces refer to), whatever the reduction."""
        return int(self.frame_size[0]) if self.frame_size else int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.frame_size[1]) if self.frame_size else int(self.rgb.shape[0])


def check_content_type(content_type: str | None) -> None:
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct in GENERIC_CONTENT_TYPES or ct in ALLOWED_CONTENT_TYPES:
        return
    raise ApiError(
        415,
        "unsupported_media_type",
        f"image content type {ct!r} is not supported; send image/jpeg, image/png, image/webp, image/heic "
        "or image/avif",
    )


def _exif_focal_35mm(img: Image.Image) -> float | None:
    try:
        exif = img.getexif()
        value = exif.get_ifd(_EXIF_IFD).get(_FOCAL_35MM) or exif.get(_FOCAL_35MM)
    except Exception:  # malformed EXIF must not fail the request; the focal is optional
        return None
    try:
        f = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    # 0 means "unknown" in EXIF; beyond a few metres is junk.
    return f if f is not None and 1.0 <= f <= 5000.0 else None


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    format: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


# ISO base media file brands (the 'ftyp' box) of HEVC-coded HEIF; AVIF's are Pillow's.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def is_heif(data: bytes) -> bool:
    """An HEIF (HEIC) file by its 'ftyp' box's brands, AVIF excluded."""
    if data[4:8] != b"ftyp":
        return False
    size = int.from_bytes(data[:4], "big")
    box = data[8:min(max(size, 16), 256)]
    brands = {box[i:i + 4] for i in range(0, len(box) - 3, 4) if i != 4}  # major, then compatible ones
    return not brands & _AVIF_BRANDS and bool(brands & _HEIF_BRANDS)


def probe_image(data: bytes, max_pixels: int) -> ImageHeader:
    """Format and size from the header alone (no pixel data is decoded), with every
    check ``decode_image`` makes before decoding. Cheap: the caller reserves decode
    memory by this size before calling ``decode_image``. HEIC: in the decoder child."""
    if is_heif(data):
        return HEIF_CHILD.call("probe", data, max_pixels)
    return probe_local(data, max_pixels)


def probe_local(data: bytes, max_pixels: int) -> ImageHeader:
    """:func:`probe_image` in this process (the HEIC child's entry point)."""
    img, fmt = _open_checked(data, max_pixels)
    return ImageHeader(img.size[0], img.size[1], fmt)


def _open_checked(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """The opened (not decoded) image and its format, one of ``ALLOWED_FORMATS``."""
    if not data:
        raise ApiError(422, "empty_image", "the uploaded image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # We enforce our own cap below; Pillow's warning/error threshold is not ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ApiError(422, "invalid_image", f"the upload is not a {FORMATS_IN_WORDS} image") from None
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", str(exc)) from None
    except Exception as exc:
        raise ApiError(422, "invalid_image", f"cannot read the image header: {exc}") from None

    fmt = img.format
    if fmt is None or fmt not in ALLOWED_FORMATS:
        raise ApiError(
            415, "unsupported_media_type", f"image format {fmt} is not supported; use {FORMATS_IN_WORDS}"
        )
    w, h = img.size
    if w < 1 or h < 1:
        raise ApiError(422, "invalid_image", f"image has an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ApiError(
            413, "image_too_large", f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels"
        )
    return img, fmt


_ORIENTATION = 0x0112
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def decode_image(data: bytes, max_pixels: int, reduction: int = 1) -> DecodedImage:
    """Decode an upload to RGB, EXIF orientation applied.

    ``reduction`` 2, 4 or 8 decodes a JPEG at that fraction of its size with libjpeg's
    DCT scaling (a fraction of the work and memory; other formats decode whole): the
    result's ``reduction`` says what was done, ``width``/``height`` stay the frame's.
    HEIC: in the decoder child (`service.heif_child`).
    """
    if is_heif(data):
        return HEIF_CHILD.call("decode", data, max_pixels, reduction)
    return decode_local(data, max_pixels, reduction)


def decode_local(data: bytes, max_pixels: int, reduction: int = 1) -> DecodedImage:
    """:func:`decode_image` in this process (the HEIC child's entry point)."""
    img, fmt = _open_checked(data, max_pixels)
    focal = _exif_focal_35mm(img)
    w, h = img.size
    try:
        transposed = int(img.getexif().get(_ORIENTATION) or 1) in _TRANSPOSED
    except Exception:  # malformed EXIF: exif_transpose below ignores it too
        transposed = False
    frame = (h, w) if transposed else (w, h)
    if reduction > 1 and fmt == "JPEG":
        img.draft("RGB", (-(-w // reduction), -(-h // reduction)))
    got = max(1, round(w / img.size[0]))
    try:
        # Pillow's own bomb check uses a global; ours already ran, so lift it for this decode.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            # in_place: the default returns a full copy even when nothing rotates (+4 B/px).
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode != "RGB":
                # Palette/LA/RGBA/16-bit: composite alpha over black and drop it; faces do not need it.
                img = img.convert("RGBA").convert("RGB") if "A" in img.mode or img.mode == "P" else img.convert("RGB")
            rgb = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", str(exc)) from None
    except (OSError, SyntaxError, ValueError, RuntimeError, EOFError) as exc:
        # Truncated or corrupt pixel data: Pillow raises OSError ("image file is truncated"),
        # libheif (pi-heif) RuntimeError (a header whose size the data does not match) or
        # EOFError (a coded stream that ends early).
        raise ApiError(422, "invalid_image", f"the image data is corrupt or truncated: {exc}") from None
    return DecodedImage(rgb=np.ascontiguousarray(rgb), format=fmt, focal_35mm=focal, reduction=got,
                        frame_size=frame)

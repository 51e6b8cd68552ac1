"""Malformed and hostile ``POST /reconstruct`` requests, shared by the fast test
(tests/test_service_reliability.py, a sample) and the long run (bench/bench_reliability.py,
all of them).

Each case is ``(name, files, data)`` for an HTTP client's ``post(files=..., data=...)``.
The contract for every one: an answer below 500 in the service's error shape (or 200 with
a schema-valid body), never a 5xx.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator

import numpy as np
from PIL import Image

LM5 = [[203.3, 101.3], [247.2, 104.5], [223.1, 125.0], [203.4, 142.4], [241.0, 144.9]]
CAMERA = {"fx": 500.0, "fy": 500.0, "cx": 256.0, "cy": 256.0}

Case = tuple[str, dict, dict]


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def image_cases(image: bytes) -> Iterator[Case]:
    def img(data: bytes, ctype: str = "image/jpeg") -> dict:
        return {"image": ("x", data, ctype)}

    yield "empty", img(b""), {}
    yield "text", img(b"hello, not an image"), {}
    yield "gif_magic", img(b"GIF89a" + b"\0" * 64), {}
    yield "truncated_half", img(image[: len(image) // 2]), {}
    yield "truncated_header", img(image[:20]), {}
    yield "jpeg_magic_only", img(b"\xff\xd8\xff\xe0" + b"\0" * 100), {}
    yield "png_magic_only", img(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png"), {}
    yield "bomb_png_header", img(_png(20000, 20000, "1"), "image/png"), {}
    yield "zero_width_claim", img(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\0\0\0\0\x10\x08\x02\0\0\0", "image/png"), {}
    yield "bmp", img(b"BM" + b"\0" * 100, "image/bmp"), {}
    yield "wrong_content_type", img(image, "text/html"), {}
    yield "no_image_field", {}, {"camera": json.dumps(CAMERA)}
    rng = random.Random(7)
    for k in range(8):
        data = bytearray(image)
        for _ in range(20):
            data[rng.randrange(100, len(data))] = rng.randrange(256)
        yield f"bitflip_{k}", img(bytes(data)), {"faces": json.dumps([{"landmarks5": LM5}])}


def field_cases(image: bytes) -> Iterator[Case]:
    files = {"image": ("a.jpg", image, "image/jpeg")}
    huge_int = "1" * 4301
    bad_cameras = [
        "{", "[]", "null", "1", '"x"', _nested(5000), _nested(2000),
        '{"fx": ' + huge_int + ', "fy": 1, "cx": 0, "cy": 0}',
        '{"fx": 1e308, "fy": 1e308, "cx": 256, "cy": 256}', '{"fx": 1e-300, "fy": 1, "cx": 0, "cy": 0}',
        '{"fx": NaN, "fy": 1, "cx": 0, "cy": 0}', '{"fx": Infinity, "fy": 1, "cx": 0, "cy": 0}',
        '{"fx": 500, "fy": 500, "cx": 1e308, "cy": -1e308}', '{"fx": true, "fy": 500, "cx": 0, "cy": 0}',
        '{"fx": "500", "fy": 500, "cx": 0, "cy": 0}',
        '{"fx": 500, "fy": 500, "cx": 0, "cy": 0, "width": 1e9, "height": 1}',
        '{"fx": 500, "fy": 500, "cx": 0, "cy": 0, "width": true, "height": true}',
        '{"fx": 500, "fy": 500, "cx": 0, "cy": 0, "distortion": {"k3": false}}',
        '{"fx": 500, "fy": 500, "cx": 0, "cy": 0, "distortion": {"k1": 1e308}}',
        '{"fx": 500, "fy": 500, "cx": 0, "cy": 0, "distortion": {"k1": 0.1, "zz": 1}}',
        json.dumps({**CAMERA, "pad": "x" * 10000}), "x" * 100_000,
    ]
    for k, cam in enumerate(bad_cameras):
        yield f"camera_{k}", files, {"camera": cam}
    bad_faces = [
        "{", "{}", "null", '"x"', "[1]", _nested(5000), '[{"bbox": [' + huge_int + ", 0, 1, 1]}]",
        json.dumps([{"bbox": [1e308, 1e308, 1.7e308, 1.7e308]}]),
        json.dumps([{"bbox": [-1e308, -1e308, 1e308, 1e308]}]),
        json.dumps([{"landmarks5": [[1e308, 1e308]] * 5}]),
        json.dumps([{"landmarks5": [[-1e308, 1e308], [1e308, -1e308], [0, 0], [1, 1], [2, 2]]}]),
        json.dumps([{"landmarks5": [[100.0, 100.0]] * 5}]),
        json.dumps([{"bbox": [5000, 5000, 5100, 5100]}]),
        json.dumps([{"bbox": [-500, -500, -400, -400]}]),
        json.dumps([{"landmarks5": [[p[0] + 4000, p[1]] for p in LM5]}]),
        json.dumps([{"bbox": [10, 10, 10.5, 10.5]}]),
        json.dumps([{"bbox": [10, 10, 5, 5]}]),
        json.dumps([{"bbox": [0, 0, 1, 1, 1]}]),
        json.dumps([{"bbox": [True, 0, 1, 1]}]),
        json.dumps([{"landmarks5": LM5, "extra": 1}]),
        json.dumps([{"landmarks5": LM5}] * 65),
        json.dumps([{"landmarks5": [[float("nan"), 1.0]] * 5}]).replace("NaN", "NaN"),
        "[" + ",".join(['{"bbox": [1, 1, 2, 2]}'] * 5000) + "]",
    ]
    for k, faces in enumerate(bad_faces):
        yield f"faces_{k}", files, {"faces": faces}
    for k, value in enumerate(["0", "-1", "65", "1e3", "x", "9" * 5000, "true"]):
        yield f"max_faces_{k}", files, {"max_faces": value}
    for k, value in enumerate(["maybe", "2", "", "x" * 5000]):
        yield f"flip_tta_{k}", files, {"flip_tta": value}
    for k, value in enumerate(["normals", "vertices,,", ",".join(["vertices"] * 1000), "x" * 100_000]):
        yield f"include_{k}", files, {"include": value}
    for k, value in enumerate(["", "..", ".", "a/b", "x" * 5000, "nope", "\x00"]):
        yield f"device_id_{k}", files, {"device_id": value}


def all_cases(image: bytes) -> list[Case]:
    return [*image_cases(image), *field_cases(image)]

"""What each upload format costs to decode in the service (not a test).

Times `service.imaging.decode_image` (the request's decode stage: header checks, decode,
orientation, RGB) on one photo written in every format the service takes: scikit-image's
astronaut scaled to ``--size`` (default 4032x3024, an iPhone's 12 MP frame), as JPEG
(quality 90), WebP (90), AVIF (75), PNG and, with ``--heic FILE``, an HEIC of the same
size (the service's pi-heif only decodes; write one with pillow-heif, whose wheels carry
an encoder, in a separate virtualenv: ``pillow_heif.register_heif_opener()``, then
``Image.fromarray(cv2.resize(skimage.data.astronaut(), (4032, 3024), interpolation=cv2.INTER_CUBIC))
.save("a.heic", quality=80)``).
JPEG also at the reductions detection uses on large frames (1/2, 1/4). Interleaved
repeats, median and min per format, one process; Pillow's codecs decode on one thread,
libheif on its own ``pi_heif.options.DECODE_THREADS``, as in the service.

    python bench/decode_formats.py [--heic a.heic] [--repeat 7] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import io
import os
import platform

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time
from pathlib import Path

import cv2
import numpy as np
import pi_heif
import PIL
from bench_report import publish  # beside this script
from PIL import Image, features

from service.imaging import decode_image


def _encoded(rgb: np.ndarray) -> dict[str, bytes]:
    out = {}
    for fmt, kw in (("JPEG", {"quality": 90}), ("WEBP", {"quality": 90}), ("AVIF", {"quality": 75}), ("PNG", {})):
        if fmt == "AVIF" and not features.check("avif"):
            continue
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt, **kw)
        out[fmt] = buf.getvalue()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4032x3024", help="WxH of the photo (default an iPhone's 12 MP)")
    ap.add_argument("--heic", type=Path, default=None, help="an HEIC of the same photo and size")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()
    import skimage.data

    w, h = (int(v) for v in args.size.split("x"))
    rgb = cv2.resize(skimage.data.astronaut(), (w, h), interpolation=cv2.INTER_CUBIC)
    files = {name: (data, 1) for name, data in _encoded(rgb).items()}
    files.update({f"JPEG, 1/{r}": (files["JPEG"][0], r) for r in (2, 4)})
    if args.heic is not None:
        files["HEIC"] = (args.heic.read_bytes(), 1)
    times: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(args.repeat):
        for name, (data, reduction) in files.items():
            t0 = time.perf_counter()
            decoded = decode_image(data, 10**9, reduction)
            times[name].append(time.perf_counter() - t0)
            assert decoded.width == w and decoded.height == h, (name, decoded.width, decoded.height)
    base = float(np.median(times["JPEG"]))
    lines = [
        f"`python bench/decode_formats.py --size {args.size}{' --heic FILE' if args.heic else ''}"
        f" --repeat {args.repeat}`"
        f" ({platform.machine()}, Pillow {PIL.__version__}, pi-heif {pi_heif.__version__} with"
        f" {pi_heif.options.DECODE_THREADS} decoding threads)",
        "",
        "| upload | bytes | decode ms, median | min | × JPEG |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (data, _) in files.items():
        med = float(np.median(times[name]))
        best = min(times[name])
        lines.append(f"| {name} | {len(data):,} | {1000 * med:.0f} | {1000 * best:.0f} | {med / base:.2f} |")
    publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()

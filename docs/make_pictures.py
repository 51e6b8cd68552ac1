"""Make the pictures in docs/ from the shipped default model, through the HTTP service.

    python docs/make_pictures.py [--data data/synth_test] [--out docs]

- ``astronaut_overlay.png``: the served mesh over scikit-image's astronaut photo (the
  CenterFace detector finds the face; no intrinsics given, so the default FOV is used).
- ``synth_predictions.png``: held-out synthetic renders with their true intrinsics and the
  68-landmark 5 points (no detector, like the challenge): predicted mesh in green, true
  68 landmarks in red, per-image errors in the caption.
- ``glb_roundtrip.png``: the astronaut's GLB (posted with ``texture=true``) downloaded from
  ``GET /mesh/{id}.glb``, parsed back with trimesh and rendered from three viewpoints,
  shaded grey and with its embedded texture.

Everything goes through ``POST /reconstruct`` and the mesh routes of an in-process app,
so the pictures show what a client gets.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import trimesh
from fastapi.testclient import TestClient

from jmlr.geometry.camera import opencv_to_rt, transform_points
from jmlr.geometry.crop import landmarks5_from_68
from jmlr.geometry.metrics import challenge_score, pose_metrics, vertex_errors
from jmlr.synth.layout import load_sample, read_intrinsics, read_list
from jmlr.synth.render import Lighting, interpolate, project_to_screen, rasterize, render_mesh
from jmlr.viz import draw_axes, draw_wireframe
from service.app import create_app
from service.settings import Settings

GREEN, RED, WHITE = (60, 220, 60), (230, 40, 40), (255, 255, 255)


def caption(img: np.ndarray, lines: list[str]) -> None:
    """White text on a dark band across the top, in place."""
    band = 10 + 22 * len(lines)
    img[:band] = (img[:band] * 0.35).astype(img.dtype)
    for i, line in enumerate(lines):
        cv2.putText(img, line, (8, 24 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.55, WHITE, 1, cv2.LINE_AA)


def post(client: TestClient, image_rgb: np.ndarray, **fields) -> dict:
    ok, jpg = cv2.imencode(".jpg", image_rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = {k: (json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in fields.items()}
    r = client.post("/reconstruct", files={"image": ("x.jpg", jpg.tobytes(), "image/jpeg")}, data=data)
    r.raise_for_status()
    return r.json()


def mesh_path(url: str) -> str:
    """The path of an absolute or relative mesh URL (the test client wants a path)."""
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1] if "://" in url else url


def astronaut(client: TestClient, out: Path) -> dict:
    from skimage import data

    img = data.astronaut()
    res = post(client, img, include="landmarks_2d", texture="true")
    face = res["faces"][0]
    tris = triangles_of_glb(client, face)
    # Zoom on the face (x3) so the 2k-triangle wireframe is legible.
    x0, y0, x1, y1 = np.asarray(face["bbox"])
    c, half = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), 0.9 * max(x1 - x0, y1 - y0)
    z = 3.0
    A = np.array([[z, 0, z * (half - c[0])], [0, z, z * (half - c[1])]])
    size = int(round(2 * half * z))
    vis = cv2.warpAffine(img, A, (size, size), flags=cv2.INTER_CUBIC)
    pts = np.asarray(face["landmarks_2d"]) * z + A[:, 2]
    vis = draw_wireframe(vis, pts, tris, color=GREEN, alpha=0.55)
    K = np.asarray(res["camera"]["K"]).copy()
    K[:2] = A @ K  # the same camera, seen through the zoom
    vis = draw_axes(vis, np.asarray(face["pose"]["rotation"]), np.asarray(face["pose"]["translation"]), K)
    p = face["pose"]
    caption(vis, [f"{res['model']['name']}, camera: {res['camera']['source']} (60 deg)",
                  f"yaw {p['yaw']:.0f}  pitch {p['pitch']:.0f}  roll {p['roll']:.0f} deg,  "
                  f"z {p['translation'][2]:.2f} m,  RMS {face['reprojection_rms_px']:.1f} px"])
    cv2.imwrite(str(out / "astronaut_overlay.png"), vis[:, :, ::-1])
    return face


def synthetic(client: TestClient, data_root: Path, out: Path, count: int = 8) -> None:
    K = read_intrinsics(data_root)
    rows = read_list(data_root, str(sorted((data_root / "list").glob("*.csv"))[0]))
    step = max(1, len(rows) // count)
    picked = rows[::step][:count]
    tiles = []
    for s in (load_sample(data_root, *row) for row in picked):
        img = cv2.imread(str(s.image_path))[:, :, ::-1].copy()
        lm5 = landmarks5_from_68(np.asarray(s.landmarks68, float))
        cam = {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}
        res = post(client, img, camera=cam, faces=[{"landmarks5": lm5.tolist()}],
                   include="landmarks_2d,vertices")
        face = res["faces"][0]
        tris = triangles_of_glb(client, face)
        vis = draw_wireframe(img, np.asarray(face["landmarks_2d"]), tris, color=GREEN, alpha=0.55)
        for x, y in np.asarray(s.landmarks68):
            cv2.circle(vis, (int(round(x)), int(round(y))), 3, RED, -1, cv2.LINE_AA)
        R_t_pred = opencv_to_rt(np.asarray(face["pose"]["rotation"]), np.asarray(face["pose"]["translation"]))
        V_pred = np.asarray(face["vertices"])[None]
        sc = challenge_score(s.verts[None], s.R_t[None], V_pred, R_t_pred[None])
        pm = pose_metrics(s.R_t[None], R_t_pred[None], V_gt=s.verts[None])
        ve = vertex_errors(s.verts[None], V_pred)
        # crop the tile around the face so the mesh is visible at contact-sheet scale
        xy = np.asarray(s.landmarks68)
        c = xy.mean(0)
        half = max(90.0, 1.1 * np.ptp(xy, 0).max())
        x0, y0 = np.clip(np.round(c - half).astype(int), 0, None)
        x1, y1 = np.round(c + half).astype(int)
        tile = cv2.resize(np.ascontiguousarray(vis[y0:y1, x0:x1]), (320, 320), interpolation=cv2.INTER_AREA)
        caption(tile, [f"score {float(sc['score']):.0f} mm", f"R {float(pm['mae_r_deg']):.1f} deg "
                       f"T {float(pm['mae_t_mm']):.0f} mm", f"shape {float(ve['mean_mm']):.1f} mm"])
        tiles.append(tile)
    rows_img = [np.concatenate(tiles[i:i + 4], 1) for i in range(0, len(tiles), 4)]
    sheet = np.concatenate(rows_img, 0)
    cv2.imwrite(str(out / "synth_predictions.png"), sheet[:, :, ::-1])


def triangles_of_glb(client: TestClient, face: dict) -> np.ndarray:
    glb = client.get(mesh_path(face["mesh_urls"]["glb"]))
    glb.raise_for_status()
    return np.asarray(trimesh.load(io.BytesIO(glb.content), file_type="glb", force="mesh", process=False).faces)


def glb_roundtrip(client: TestClient, face: dict, out: Path) -> None:
    """Render the world-space GLB, as a client would get it, from three yaw angles: shaded
    grey, and (the astronaut was posted with ``texture=true``) with its embedded texture."""
    glb = client.get(mesh_path(face["mesh_urls"]["glb"]), params={"space": "world"})
    mesh = trimesh.load(io.BytesIO(glb.content), file_type="glb", force="mesh", process=False)
    V = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    F = torch.tensor(np.asarray(mesh.faces), dtype=torch.int64)
    V = V - V.mean(0)
    size = 360
    K = torch.tensor([[900.0, 0, size / 2], [0, 900.0, size / 2], [0, 0, 1]])
    light = Lighting(ambient=torch.tensor([[0.25, 0.25, 0.25]]),
                     directions=torch.nn.functional.normalize(torch.tensor([[[0.3, 0.4, 1.0]]]), dim=-1),
                     colors=torch.tensor([[[0.8, 0.8, 0.8]]]), specular=torch.tensor([0.15]),
                     shininess=torch.tensor([20.0]))
    grey = 0.75
    albedo = torch.full((1, V.shape[0], 3), grey)
    texture = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"), np.float32) / 255.0
    uv = torch.tensor(np.asarray(mesh.visual.uv), dtype=torch.float32)[None]  # v up (glTF via trimesh)
    shaded, textured = [], []
    for yaw in (-50.0, 0.0, 50.0):
        a = np.deg2rad(yaw)
        Ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        R_t = np.eye(4)
        R_t[:3, :3] = Ry.T  # row-vector convention: V_cam = V @ R
        R_t[3, :3] = [0, 0, -0.55]
        R_t_ = torch.tensor(R_t, dtype=torch.float32)[None]
        r = render_mesh(V[None], F, R_t_, K, (size, size), albedo, light)
        img = (r.image[0].numpy() * 255).round().astype(np.uint8)
        img[~r.mask[0].numpy()] = 255
        shaded.append(img)
        # The texture under each pixel: its UV interpolated in the visible triangle, times
        # the grey render's light (so the relief still shows), white background.
        frags = rasterize(*project_to_screen(transform_points(V[None], R_t_), K), F, (size, size))
        st = interpolate(frags, F, uv).numpy()
        rows = np.clip(((1.0 - st[:, 1]) * texture.shape[0]).astype(int), 0, texture.shape[0] - 1)
        cols = np.clip((st[:, 0] * texture.shape[1]).astype(int), 0, texture.shape[1] - 1)
        light_factor = r.image[0].numpy().reshape(-1, 3)[frags.pixels.numpy()] / grey
        tex = np.full((size * size, 3), 255, np.uint8)
        tex[frags.pixels.numpy()] = np.clip(texture[rows, cols] * light_factor * 255, 0, 255).astype(np.uint8)
        textured.append(tex.reshape(size, size, 3))
    sheet = np.concatenate([np.zeros((30, size * 3, 3), np.uint8), np.concatenate(shaded, 1),
                            np.concatenate(textured, 1)], 0)
    caption(sheet, [f"GET /mesh/{{id}}.glb -> trimesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles, "
                    f"texture {texture.shape[1]}x{texture.shape[0]} (texture=true)"])
    cv2.imwrite(str(out / "glb_roundtrip.png"), sheet[:, :, ::-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/synth_test"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--model", default=None, help="model-store name (default: index.json's cpu model)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), device="cpu", model_name=args.model)
        with TestClient(create_app(settings)) as client:
            face = astronaut(client, args.out)
            glb_roundtrip(client, face, args.out)
            if (args.data / "list").is_dir():
                synthetic(client, args.data, args.out)
            else:
                print(f"no synthetic data at {args.data}: skipped synth_predictions.png")
    print("wrote", *(p.name for p in sorted(args.out.glob("*.png"))))


if __name__ == "__main__":
    main()

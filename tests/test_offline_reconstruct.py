"""``jmlr reconstruct``: the service's pipeline on photos on disk, with the shipped model."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from fastapi.testclient import TestClient

skimage_data = pytest.importorskip("skimage.data")

from jmlr.cli import main  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def answered(photo, tmp_path_factory):
    """One run on the astronaut: (exit status, out folder, stdout)."""
    out = tmp_path_factory.mktemp("out")
    buf = io.StringIO()  # capsys is per test; this run serves several
    with contextlib.redirect_stdout(buf):
        status = main(["reconstruct", str(photo), "--out", str(out), "--mesh", "glb", "obj",
                       "--include", "vertices,blendshapes"])
    return status, out, buf.getvalue()


def test_a_photo_gives_the_answer_its_meshes_and_an_overlay(answered, photo):
    status, out, stdout = answered
    assert status == 0
    answer = json.loads((out / "astronaut.json").read_text())
    assert answer["camera"]["source"] == "default_fov" and answer["image"] == {
        "width": 512, "height": 512, "format": "JPEG"}
    [face] = answer["faces"]
    assert face["pose_ok"] and 0.3 < face["distance_m"] < 2.0
    assert "mesh_urls" not in face  # no server: the files instead
    assert face["mesh_files"] == {"glb": "astronaut_face0.glb", "obj": "astronaut_face0.obj"}
    n = len(face["vertices"])
    assert len(face["blendshapes"]) == 51
    glb = trimesh.load(out / "astronaut_face0.glb", force="mesh", process=False)
    assert glb.vertices.shape == (n, 3)
    np.testing.assert_allclose(glb.vertices, face["vertices"], atol=1e-5)  # the head frame, as GET /mesh
    obj = trimesh.load(out / "astronaut_face0.obj", force="mesh", process=False)
    assert obj.vertices.shape == (n, 3)
    overlay = cv2.imread(str(out / "astronaut_overlay.jpg"))
    original = cv2.imread(str(photo))
    assert overlay.shape == original.shape
    drawn = np.abs(overlay.astype(int) - original).max(-1) > 60  # beyond the JPEG round trip's noise
    x0, y0, x1, y1 = (int(v) for v in face["bbox"])
    on_face = drawn[y0:y1, x0:x1].mean()
    drawn[max(y0 - 40, 0):y1 + 10, max(x0 - 10, 0):x1 + 10] = False  # the face and its label
    assert on_face > 0.03 and drawn.mean() < 0.001  # the face's curves and axes, nothing elsewhere
    assert "astronaut.jpg: 1 face (face 0:" in stdout and "(+ 2 mesh files, astronaut_overlay.jpg)" in stdout


def test_the_answer_is_the_services(answered, photo, tmp_path):
    """The same photo through POST /reconstruct: the same faces, poses and points."""
    _, out, _ = answered
    offline = json.loads((out / "astronaut.json").read_text())
    with TestClient(create_app(Settings(data_dir=tmp_path, api_keys=["k"]))) as client:
        r = client.post("/reconstruct", files={"image": ("a.jpg", photo.read_bytes(), "image/jpeg")},
                        data={"include": "vertices,blendshapes"}, headers={"X-API-Key": "k"})
    assert r.status_code == 200, r.text
    served = r.json()
    assert served["model"] == offline["model"] and served["camera"] == offline["camera"]
    [a], [b] = served["faces"], offline["faces"]
    for key in ("bbox", "landmarks5", "pose", "landmarks_68", "vertices", "blendshapes", "distance_m"):
        assert a[key] == b[key], key


def test_a_bad_photo_is_reported_and_the_others_are_answered(photo, tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    gif = tmp_path / "anim.gif"
    gif.write_bytes(b"GIF89a" + bytes(40))
    out = tmp_path / "out"
    status = main(["reconstruct", str(bad), str(tmp_path / "missing.jpg"), str(photo), str(gif), "--out", str(out),
                   "--no-overlay", "--mesh"])
    assert status == 1
    err = capsys.readouterr().err
    assert f"{bad}: not answered (invalid_image)" in err
    assert f"{tmp_path / 'missing.jpg'}: not answered (unreadable_file)" in err
    assert f"{gif}: not answered (" in err
    answer = json.loads((out / "astronaut.json").read_text())
    [face] = answer["faces"]
    assert not {"mesh_files", "mesh_id", "mesh_status"} & set(face)  # --mesh alone: no meshes
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.json"]


def test_the_request_fields_are_the_apis(photo, tmp_path):
    out = tmp_path / "out"
    camera = {"fx": 500, "fy": 500, "cx": 256, "cy": 256}
    lm5 = [[203.3, 101.3], [247.2, 104.5], [223.1, 125.0], [203.4, 142.4], [241.0, 144.9]]
    status = main(["reconstruct", str(photo), "--out", str(out), "--camera", json.dumps(camera),
                   "--faces", json.dumps([{"landmarks5": lm5}]), "--include", "vertices_camera",
                   "--space", "camera", "--no-overlay"])
    assert status == 0
    answer = json.loads((out / "astronaut.json").read_text())
    assert answer["camera"]["source"] == "request" and answer["camera"]["fx"] == 500
    [face] = answer["faces"]
    assert face["source"] == "client_landmarks"
    glb = trimesh.load(out / "astronaut_face0.glb", force="mesh", process=False)
    np.testing.assert_allclose(glb.vertices, face["vertices_camera"], atol=1e-5)  # --space camera: posed


@pytest.mark.parametrize("args, message", [
    (["--camera", '{"fx": -1}'], "invalid `camera`"),
    (["--faces", "[{}]"], "invalid `faces`"),
    (["--include", "normals"], "unknown include ['normals']"),
    (["--mesh", "fbx"], "unknown mesh format(s) ['fbx']"),
    (["--max-faces", "0"], "--max-faces must lie in 1..64"),
])
def test_bad_options_stop_before_the_model_loads(photo, tmp_path, capsys, args, message):
    assert main(["reconstruct", str(photo), "--out", str(tmp_path / "o"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_two_photos_of_one_name_are_refused(photo, tmp_path, capsys):
    other = tmp_path / "astronaut.jpg"
    other.write_bytes(photo.read_bytes())
    assert main(["reconstruct", str(photo), str(other), "--out", str(tmp_path / "o")]) == 2
    assert "the same name" in capsys.readouterr().err


def test_an_iphone_photo_held_sideways_is_drawn_upright(tmp_path):
    """HEIC with EXIF orientation 6 and a 35 mm focal length: the overlay is in the answer's
    (upright) pixels, and the camera comes from the EXIF."""
    heic = Path(__file__).parent / "data" / "astronaut_rot6.heic"
    assert main(["reconstruct", str(heic), "--out", str(tmp_path), "--mesh"]) == 0
    answer = json.loads((tmp_path / "astronaut_rot6.json").read_text())
    assert answer["image"] == {"width": 512, "height": 400, "format": "HEIF"}
    assert answer["camera"]["source"] == "exif"
    [face] = answer["faces"]
    overlay = cv2.imread(str(tmp_path / "astronaut_rot6_overlay.jpg"))
    assert overlay.shape[:2] == (answer["image"]["height"], answer["image"]["width"]) == (400, 512)
    lm = np.asarray(face["landmarks_68"])
    assert lm[36:48, 1].mean() < lm[48:68, 1].mean()  # eyes above the mouth: upright

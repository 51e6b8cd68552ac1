"""``/mesh/{id}`` downloads and metadata, plus ``export_mesh`` on its own, and the USDZ
writer (`service.usdz`): the package layout USDZ requires and, with Pixar's USD library
(usd-core, a test extra), the mesh read back and the package validated."""

from __future__ import annotations

import io
import json
import struct
import time
import zipfile

import numpy as np
import pytest
import trimesh
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from service.errors import install_error_handlers
from service.mesh_export import MEDIA_TYPES, export_mesh, mesh_vertices
from service.routers.meshes import router as meshes_router
from service.settings import Settings
from service.storage import SqliteStorage, new_mesh_id
from service.usdz import USDZ_ALIGNMENT, mesh_usda, mesh_usdz, usdz_package


def _face_arrays() -> dict[str, np.ndarray]:
    # A closed, non-degenerate surface so that trimesh's default processing on load
    # (merging duplicate vertices) cannot change the counts.
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.09)
    # Yaw, pitch and roll together: a single-axis turn composed with diag(1, -1, -1) can
    # be symmetric, and then R and R.T could not be told apart.
    a, b, g = np.deg2rad([20.0, -12.0, 7.0])
    yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    pitch = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    roll = np.array([[np.cos(g), -np.sin(g), 0], [np.sin(g), np.cos(g), 0], [0, 0, 1]])
    R_cv = np.diag([1.0, -1.0, -1.0]) @ yaw @ pitch @ roll
    assert not np.allclose(R_cv, R_cv.T)
    return {
        "vertices_world": sphere.vertices.astype(np.float32),
        "faces": sphere.faces.astype(np.int32),
        "R_cv": R_cv,
        "t_cv": np.array([0.03, -0.05, 0.6]),
    }


META = {
    "model": {"name": "jmlr-test", "version": "0.0.1"},
    "created": "2024-05-01T12:00:00Z",
    "image_size": [800, 600],
    "camera": {"fx": 700.0, "fy": 700.0, "cx": 400.0, "cy": 300.0},
}


def _client(storage, **settings) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.state.settings = Settings(_env_file=None, data_dir="unused", **settings)
    app.state.storage = storage
    app.include_router(meshes_router)
    return TestClient(app)


def _put(storage, arrays: dict[str, np.ndarray]) -> tuple[object, str, dict[str, np.ndarray]]:
    mesh_id = new_mesh_id()
    storage.put_mesh(mesh_id, META, arrays, ttl_s=600)
    return storage, mesh_id, arrays


@pytest.fixture
def stored(storage):
    return _put(storage, _face_arrays())


def _load(data: bytes, fmt: str) -> trimesh.Trimesh:
    return trimesh.load(io.BytesIO(data), file_type=fmt, force="mesh")


@pytest.mark.parametrize("fmt", ["glb", "obj", "ply"])
def test_download_world(stored, fmt):
    storage, mesh_id, arrays = stored
    with _client(storage) as c:
        r = c.get(f"/mesh/{mesh_id}.{fmt}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == MEDIA_TYPES[fmt]
    assert r.headers["content-disposition"] == f'attachment; filename="face_{mesh_id}.{fmt}"'
    mesh = _load(r.content, fmt)
    assert mesh.vertices.shape == arrays["vertices_world"].shape
    assert mesh.faces.shape == arrays["faces"].shape
    np.testing.assert_allclose(mesh.vertices, arrays["vertices_world"], atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, arrays["faces"])


@pytest.mark.parametrize("fmt", ["glb", "ply", "obj"])
def test_download_camera_space(stored, fmt):
    storage, mesh_id, arrays = stored
    with _client(storage) as c:
        r = c.get(f"/mesh/{mesh_id}.{fmt}", params={"space": "camera"})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == f'attachment; filename="face_{mesh_id}_camera.{fmt}"'
    expected = arrays["vertices_world"].astype(np.float64) @ arrays["R_cv"].T + arrays["t_cv"]
    got = _load(r.content, fmt).vertices
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # In front of the camera (OpenCV z forward), and not the world coordinates.
    assert (got[:, 2] > 0).all()
    assert np.abs(got - arrays["vertices_world"]).max() > 0.1


def test_bad_space_is_422(stored):
    storage, mesh_id, _ = stored
    with _client(storage) as c:
        r = c.get(f"/mesh/{mesh_id}.glb", params={"space": "opengl"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"


def test_metadata(stored):
    storage, mesh_id, arrays = stored
    with _client(storage, public_base_url="https://faces.example.com/") as c:
        r = c.get(f"/mesh/{mesh_id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mesh_id"] == mesh_id
    assert body["num_vertices"] == len(arrays["vertices_world"])
    assert body["num_faces"] == len(arrays["faces"])
    assert body["model"] == META["model"]
    assert body["image_size"] == [800, 600]
    assert body["camera"] == META["camera"]
    assert body["created"].startswith("2024-05-01T12:00:00")
    np.testing.assert_allclose(body["R_cv"], arrays["R_cv"])
    np.testing.assert_allclose(body["t_cv"], arrays["t_cv"])
    root = f"https://faces.example.com/mesh/{mesh_id}"
    assert body["urls"] == {"glb": f"{root}.glb", "obj": f"{root}.obj", "ply": f"{root}.ply",
                            "usdz": f"{root}.usdz", "self": root}


def test_metadata_urls_default_to_request_host(stored):
    storage, mesh_id, _ = stored
    with _client(storage) as c:
        body = c.get(f"/mesh/{mesh_id}").json()
        assert body["urls"]["glb"] == f"http://testserver/mesh/{mesh_id}.glb"
        # The advertised URL is one the service actually serves.
        assert c.get(body["urls"]["ply"].removeprefix("http://testserver")).status_code == 200


@pytest.mark.parametrize("path", ["/mesh/{id}", "/mesh/{id}.glb", "/mesh/{id}.obj", "/mesh/{id}.ply"])
def test_unknown_is_404_json(storage, path):
    with _client(storage) as c:
        r = c.get(path.format(id=new_mesh_id()))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "mesh_not_found"


def test_expired_is_404(storage):
    mesh_id = new_mesh_id()
    storage.put_mesh(mesh_id, META, _face_arrays(), ttl_s=0.5)
    assert storage.get_mesh(mesh_id) is not None  # (not over HTTP: a loaded machine may need 0.5 s for that)
    with _client(storage) as c:
        time.sleep(0.6)
        for path in (f"/mesh/{mesh_id}", f"/mesh/{mesh_id}.glb"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "mesh_not_found"


def test_export_mesh_rejects_unknowns():
    arrays = _face_arrays()
    with pytest.raises(ValueError):
        export_mesh(arrays, "stl", "world")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        mesh_vertices(arrays, "opengl")  # type: ignore[arg-type]


def test_export_keeps_vertex_order_of_degenerate_meshes():
    # Real topologies can have vertices no triangle uses; vertex i must stay vertex i.
    rng = np.random.default_rng(3)
    arrays = {
        "vertices_world": rng.normal(size=(40, 3)).astype(np.float32),
        "faces": rng.integers(0, 30, size=(25, 3)).astype(np.int32),
        "R_cv": np.eye(3), "t_cv": np.zeros(3),
    }
    for fmt in ("glb", "ply", "obj"):
        # maintain_order: trimesh's OBJ *reader* otherwise drops unused vertices itself.
        extra = {"maintain_order": True} if fmt == "obj" else {}
        data = export_mesh(arrays, fmt)
        mesh = trimesh.load(io.BytesIO(data), file_type=fmt, force="mesh", process=False, **extra)
        assert len(mesh.vertices) == 40, fmt
        np.testing.assert_allclose(mesh.vertices, arrays["vertices_world"], atol=1e-6)


def test_through_create_app(tmp_path):
    """The real app wires storage from settings: devices and meshes land in data_dir."""
    from service.app import create_app

    settings = Settings(
        _env_file=None, data_dir=tmp_path / "var", storage="sqlite", redis_url=None,
        model_store=tmp_path / "no-models", warmup=False, detector="none", device="cpu",
        api_keys=["key"],
    )
    app = create_app(settings)
    with TestClient(app) as c:
        assert isinstance(app.state.storage.backend, SqliteStorage)  # behind the guard
        device = {"device_id": "cam", "fx": 500, "fy": 500, "cx": 320, "cy": 240, "width": 640, "height": 480}
        assert c.post("/devices", json=device).status_code == 401
        assert c.post("/devices", json=device, headers={"X-API-Key": "key"}).status_code == 201

        arrays = _face_arrays()
        mesh_id = new_mesh_id()
        app.state.storage.put_mesh(mesh_id, META, arrays, ttl_s=60)
        r = c.get(f"/mesh/{mesh_id}.glb")
        assert r.status_code == 200 and r.headers["content-type"] == "model/gltf-binary"
        assert len(_load(r.content, "glb").vertices) == len(arrays["vertices_world"])
        assert c.get(f"/mesh/{mesh_id}").json()["num_faces"] == len(arrays["faces"])
        assert c.get(f"/mesh/{new_mesh_id()}.ply").status_code == 404
    assert (tmp_path / "var" / "jmlr.sqlite3").is_file()
    assert (tmp_path / "var" / "meshes" / f"{mesh_id}.npz").is_file()


def test_a_format_added_to_the_table_is_served_and_linked(stored, monkeypatch):
    """MESH_FORMATS is the one place a download format is declared."""
    from service.mesh_export import MESH_FORMATS, MeshFormat
    from service.schemas_meshes import MeshUrls

    storage, mesh_id, arrays = stored
    with _client(storage) as c:
        spec = c.get("/openapi.json").json()
    (fmt_param,) = [p for p in spec["paths"]["/mesh/{mesh_id}.{fmt}"]["get"]["parameters"] if p["name"] == "fmt"]
    assert fmt_param["schema"]["enum"] == list(MESH_FORMATS)
    monkeypatch.setitem(MESH_FORMATS, "stl", MeshFormat("model/stl", lambda m, _: m.export(file_type="stl")))
    with _client(storage) as c:
        r = c.get(f"/mesh/{mesh_id}.stl")
        info = c.get(f"/mesh/{mesh_id}").json()
    assert r.status_code == 200 and r.headers["content-type"] == "model/stl"
    assert _load(r.content, "stl").faces.shape == arrays["faces"].shape
    assert info["urls"]["stl"].endswith(f"/mesh/{mesh_id}.stl") and info["urls"]["self"].endswith(mesh_id)
    assert set(MeshUrls.model_json_schema()["properties"]) == {"self", "glb", "obj", "ply", "usdz", "stl"}


# ----------------------------------------------------------------------------- USDZ
def test_entries_are_stored_and_64_byte_aligned():
    entries = {"face.usda": b"#usda 1.0\n", "a/b/texture.png": b"x" * 77, "third.usdc": b"y" * 5}
    data = usdz_package(entries)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        assert [i.filename for i in infos] == list(entries)  # the root layer first
        for info in infos:
            assert info.compress_type == zipfile.ZIP_STORED
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            assert start % USDZ_ALIGNMENT == 0, info.filename
            assert data[start:start + info.file_size] == entries[info.filename]


def test_usda_keeps_every_vertex_in_order_and_refuses_bad_faces():
    v = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [5, 5, 5]], np.float32)  # vertex 3 unused
    text = mesh_usda(v, np.array([[0, 1, 2]]))
    assert "point3f[] points = [(0, 0, 0), (0.1, 0, 0), (0, 0.1, 0), (5, 5, 5)]" in text
    assert "int[] faceVertexIndices = [0, 1, 2]" in text and 'upAxis = "Y"' in text
    with pytest.raises(ValueError, match="outside"):
        mesh_usda(v, np.array([[0, 1, 4]]))


@pytest.mark.parametrize("space", ["world", "camera"])
def test_download_reads_back_in_usd_and_passes_its_validators(stored, space, tmp_path):
    Usd = pytest.importorskip("pxr.Usd", reason="usd-core (a test extra) is not installed")
    from pxr import UsdGeom, UsdValidation

    storage, mesh_id, arrays = stored
    with _client(storage) as c:
        r = c.get(f"/mesh/{mesh_id}.usdz", params={"space": space})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "model/vnd.usdz+zip"
    suffix = "_camera" if space == "camera" else ""
    assert r.headers["content-disposition"] == f'attachment; filename="face_{mesh_id}{suffix}.usdz"'
    path = tmp_path / "face.usdz"
    path.write_bytes(r.content)
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1 and UsdGeom.GetStageUpAxis(stage) == "Y"
    mesh = UsdGeom.Mesh(stage.GetDefaultPrim().GetChild("mesh"))
    expected = arrays["vertices_world"].astype(np.float64)
    if space == "camera":
        expected = expected @ arrays["R_cv"].T + arrays["t_cv"]
    np.testing.assert_allclose(np.array(mesh.GetPointsAttr().Get()), expected, atol=1e-6)
    np.testing.assert_array_equal(np.array(mesh.GetFaceVertexIndicesAttr().Get()).reshape(-1, 3), arrays["faces"])
    assert set(mesh.GetFaceVertexCountsAttr().Get()) == {3}
    normals = np.array(mesh.GetNormalsAttr().Get())
    assert mesh.GetNormalsInterpolation() == "vertex" and normals.shape == expected.shape
    centred = expected - expected.mean(axis=0)  # the test mesh is a sphere: normals point outwards
    assert (np.einsum("ij,ij->i", normals, centred) > 0).all()
    registry = UsdValidation.ValidationRegistry()
    errors = UsdValidation.ValidationContext(registry.GetOrLoadAllValidators()).Validate(stage)
    assert not errors, [(e.GetName(), e.GetMessage()) for e in errors]


def test_a_misaligned_package_fails_the_validators(tmp_path):
    """The check above can fail: USD's validators refuse a plain zip of the same layer."""
    pytest.importorskip("pxr.Usd", reason="usd-core (a test extra) is not installed")
    from pxr import Usd, UsdValidation

    layer = zipfile.ZipFile(io.BytesIO(mesh_usdz(np.eye(3), np.array([[0, 1, 2]])))).read("face.usda")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("face.usda", layer)
    path = tmp_path / "plain.usdz"
    path.write_bytes(buf.getvalue())
    registry = UsdValidation.ValidationRegistry()
    errors = UsdValidation.ValidationContext(registry.GetOrLoadAllValidators()).Validate(Usd.Stage.Open(str(path)))
    assert "ByteMisalignment" in {e.GetName() for e in errors}


# ----------------------------------------------------------------------------- textures


def _textured_arrays() -> dict[str, np.ndarray]:
    """The face arrays plus a texture: a 512 px gradient (red across, green down) and the
    UVs (image convention, v down) of each vertex's own x, y."""
    arrays = _face_arrays()
    v = arrays["vertices_world"]
    uv = np.clip((v[:, :2] - v[:, :2].min(0)) / np.ptp(v[:, :2], axis=0), 0, 1).astype(np.float32)
    ramp = np.linspace(0, 255, 512).astype(np.uint8)
    rgb = np.zeros((512, 512, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = ramp[None, :], ramp[:, None]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return {**arrays, "uv": uv, "texture_jpeg": np.frombuffer(buf.getvalue(), np.uint8)}


@pytest.fixture
def stored_textured(storage):
    return _put(storage, _textured_arrays())


def test_textured_glb_carries_the_image_and_uvs(stored_textured):
    storage, mesh_id, arrays = stored_textured
    with _client(storage) as c:
        r = c.get(f"/mesh/{mesh_id}.glb")
        info = c.get(f"/mesh/{mesh_id}").json()
    assert info["textured"] is True
    mesh = trimesh.load(io.BytesIO(r.content), file_type="glb", force="mesh", process=False)
    np.testing.assert_allclose(mesh.vertices, arrays["vertices_world"], atol=1e-6)
    image = mesh.visual.material.baseColorTexture
    assert image.size == (512, 512)
    uv = arrays["uv"]
    np.testing.assert_allclose(mesh.visual.uv, np.c_[uv[:, 0], 1 - uv[:, 1]], atol=1e-6)  # trimesh: v up
    # The colour under each vertex's UV is the gradient's: red follows u, green follows v.
    px = np.asarray(image.convert("RGB"))[np.minimum((uv[:, 1] * 512).astype(int), 511),
                                          np.minimum((uv[:, 0] * 512).astype(int), 511)]
    assert np.corrcoef(px[:, 0], uv[:, 0])[0, 1] > 0.99 and np.corrcoef(px[:, 1], uv[:, 1])[0, 1] > 0.99


def _glb_images(glb: bytes) -> list[bytes]:
    """The embedded images' bytes of a GLB (its JSON chunk's images, read from the BIN chunk)."""
    json_len = struct.unpack_from("<I", glb, 12)[0]
    tree = json.loads(glb[20:20 + json_len])
    binary = glb[20 + json_len + 8:]
    views = tree["bufferViews"]
    return [binary[views[i["bufferView"]]["byteOffset"]:][:views[i["bufferView"]]["byteLength"]]
            for i in tree.get("images", [])]


def test_texture_is_embedded_as_stored_without_a_second_encoding(stored_textured):
    """GLB and USDZ carry the stored JPEG's own bytes (trimesh alone would re-encode it at
    quality 75, a second loss on top of the stored one)."""
    storage, mesh_id, arrays = stored_textured
    stored = arrays["texture_jpeg"].tobytes()
    with _client(storage) as c:
        glb = c.get(f"/mesh/{mesh_id}.glb").content
        usdz = c.get(f"/mesh/{mesh_id}.usdz").content
    (image,) = _glb_images(glb)
    assert image.rstrip(b"\0") == stored.rstrip(b"\0") and len(image) - len(stored) in range(4)
    with zipfile.ZipFile(io.BytesIO(usdz)) as z:
        assert z.read("texture.jpg") == stored


def test_plain_mesh_says_untextured_and_other_formats_stay_plain(stored, stored_textured):
    storage, mesh_id, _ = stored
    with _client(storage) as c:
        assert c.get(f"/mesh/{mesh_id}").json()["textured"] is False
    storage, mesh_id, arrays = stored_textured
    with _client(storage) as c:
        for fmt in ("obj", "ply"):
            r = c.get(f"/mesh/{mesh_id}.{fmt}")
            assert r.status_code == 200
            mesh = trimesh.load(io.BytesIO(r.content), file_type=fmt, force="mesh", process=False,
                                **({"maintain_order": True} if fmt == "obj" else {}))
            np.testing.assert_allclose(mesh.vertices, arrays["vertices_world"], atol=1e-6)


def test_textured_usdz_reads_back_in_usd_and_passes_its_validators(stored_textured, tmp_path):
    Usd = pytest.importorskip("pxr.Usd", reason="usd-core (a test extra) is not installed")
    from pxr import UsdGeom, UsdShade, UsdValidation

    storage, mesh_id, arrays = stored_textured
    with _client(storage) as c:
        r = c.get(f"/mesh/{mesh_id}.usdz")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert [i.filename for i in z.infolist()] == ["face.usda", "texture.jpg"]
        for info in z.infolist():
            assert (info.header_offset + 30 + len(info.filename) + len(info.extra)) % USDZ_ALIGNMENT == 0
    path = tmp_path / "face.usdz"
    path.write_bytes(r.content)
    stage = Usd.Stage.Open(str(path))
    mesh = UsdGeom.Mesh(stage.GetDefaultPrim().GetChild("mesh"))
    st = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st")
    assert st.GetInterpolation() == "vertex"
    uv = arrays["uv"]
    np.testing.assert_allclose(np.array(st.Get()), np.c_[uv[:, 0], 1 - uv[:, 1]], atol=1e-6)
    material = UsdShade.MaterialBindingAPI(mesh.GetPrim()).ComputeBoundMaterial()[0]
    texture = UsdShade.Shader(material.GetPrim().GetChild("texture"))
    assert texture.GetInput("file").Get().path == "texture.jpg"
    registry = UsdValidation.ValidationRegistry()
    errors = UsdValidation.ValidationContext(registry.GetOrLoadAllValidators()).Validate(stage)
    assert not errors, [(e.GetName(), e.GetMessage()) for e in errors]

"""docs/api.md's "From Python" example runs as written against the service (so the API
docs cannot drift from the API): an HEIC photo, intrinsics, blendshapes and a textured USDZ."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import httpx
from doc_blocks import python_block  # beside this file
from fastapi.testclient import TestClient

from jmlr.store import make_random_model
from service.app import create_app
from service.settings import Settings

API_MD = Path(__file__).resolve().parents[1] / "docs" / "api.md"
HEIC = Path(__file__).parent / "data" / "astronaut_rot6.heic"


def test_docs_python_example_runs(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    make_random_model(arch="jmlr_resnet18d", input_size=64, name="tiny", store_dir=store, set_default=True)
    settings = Settings(_env_file=None, model_store=store, data_dir=tmp_path / "var", device="cpu",
                        api_keys=["change-me"])
    shutil.copy(HEIC, tmp_path / "photo.heic")
    monkeypatch.chdir(tmp_path)
    with TestClient(create_app(settings)) as served:
        # The example's httpx.Client, answered by this app instead of a server on port 8000.
        def client(**kw) -> httpx.Client:
            return TestClient(served.app, **{k: v for k, v in kw.items() if k != "timeout"})

        monkeypatch.setattr(httpx, "Client", client)
        code = python_block(API_MD, "### From Python")
        exec(compile(code, f"{API_MD}:From Python", "exec"), {"__name__": "docs_example"})
    printed = capsys.readouterr().out
    assert re.search(r"\d+\.\d\d m away, yaw -?\d+ deg, jawOpen \d\.\d\d, eyeBlinkLeft \d\.\d\d", printed), printed
    (usdz,) = tmp_path.glob("face_*.usdz")
    with zipfile.ZipFile(usdz) as z:
        assert z.namelist() == ["face.usda", "texture.jpg"]  # textured, as the example asked

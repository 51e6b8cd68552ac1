"""The service's edges: imports that read nothing, and one table of domain errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from jmlr.inference import InvalidFacesError
from service.batcher import BatcherStoppedError, DeadlineExceededError, InferenceError, QueueFullError
from service.errors import domain_errors, install_error_handlers
from service.metrics import Metrics
from service.pixel_budget import PixelBudgetTimeout
from service.settings import Settings
from service.storage import StorageFullError, StorageUnavailableError

REPO = Path(__file__).resolve().parent.parent


def test_importing_the_app_reads_no_project_file_and_no_torch():
    code = f"""
import json, sys
opened = []
def hook(event, args):
    if event == "open" and args and isinstance(args[0], str):
        opened.append(args[0])
sys.addaudithook(hook)
sys.modules["torch"] = None  # any import of torch fails
import service.app
roots = tuple({str(REPO)!r} + "/" + d for d in ("jmlr/", "service/", "model_store/", ".env"))
data = [p for p in opened if p.startswith(roots) and not p.endswith((".py", ".pyc"))]
print(json.dumps({{"data": data, "built": "app" in vars(service.app)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"data": [], "built": False}


@pytest.mark.parametrize("exc, status, code, dropped", [
    (QueueFullError("8/8 crops waiting"), 503, "queue_full", False),
    (DeadlineExceededError("late"), 504, "deadline_exceeded", True),
    (PixelBudgetTimeout("late"), 504, "deadline_exceeded", True),
    (BatcherStoppedError("bye"), 503, "shutting_down", False),
    (InferenceError("boom"), 500, "inference_failed", False),
    (InvalidFacesError("the faces do not define a usable crop"), 422, "invalid_faces", False),
    (StorageFullError("full"), 503, "storage_full", False),
    (StorageUnavailableError("down"), 503, "storage_unavailable", False),
])
def test_domain_errors_answer_from_one_table(exc, status, code, dropped):
    assert any(isinstance(exc, t) for t in domain_errors())
    app = FastAPI()
    install_error_handlers(app)
    app.state.metrics = metrics = Metrics()
    app.state.settings = Settings(_env_file=None, request_timeout_s=7)

    @app.get("/boom")
    def boom():
        raise exc

    with TestClient(app) as c:
        r = c.get("/boom")
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    if status == 503:
        assert "Retry-After" in r.headers
    count = metrics.dropped.labels(reason="deadline")._value.get()
    assert count == (1 if dropped else 0)

"""Shared fixtures.

Tests that need the real ICT-FaceKit model use the ``facemodel_path`` fixture: it skips
with a clear reason when the file is absent (a user's fresh clone has no ``../shared``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from jmlr.paths import default_facemodel_path

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def facemodel_path() -> Path:
    path = default_facemodel_path()
    if not path.is_file():
        pytest.skip(
            f"real face model not found at {path}: set $JMLR_FACEMODEL or build one with "
            "`jmlr facemodel build ICT_FACEKIT_DIR --out FILE.npz` (CI has ../shared)"
        )
    return path


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def storage(request, tmp_path):
    """The service's storage, once per backend: SQLite under ``tmp_path``, and Redis at
    ``$JMLR_TEST_REDIS_URL`` under a fresh key prefix (skipped with a reason when unset
    or unreachable; ``.ci/run`` starts one). Redis keys are removed afterwards."""
    from service.storage import RedisStorage, SqliteStorage

    if request.param == "sqlite":
        store = SqliteStorage(tmp_path / "data")
        yield store
        store.close()
        return
    url = os.environ.get("JMLR_TEST_REDIS_URL")
    if not url:
        pytest.skip("redis backend: set JMLR_TEST_REDIS_URL=redis://HOST:PORT/DB to run it")
    store = RedisStorage(url, prefix=f"jmlrtest:{uuid.uuid4().hex}:")
    try:
        store.ping()
    except Exception as exc:
        store.close()
        pytest.skip(f"redis backend: {url} unreachable ({exc})")
    yield store
    keys = list(store.client.scan_iter(match=f"{store.prefix}*"))
    if keys:
        store.client.delete(*keys)
    store.close()

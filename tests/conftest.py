"""Shared fixtures.

Tests that need the real ICT-FaceKit model use the ``facemodel_path`` fixture: it skips
with a clear reason when the file is absent (a user's fresh clone has no ``../shared``).
"""

from __future__ import annotations

import os
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

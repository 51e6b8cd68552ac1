"""Where things live: the repository, the face model, the model store.

Every path here can be overridden from the environment so that tests, CI, containers
and users elsewhere point the code at their own copies.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent

FACEMODEL_ENV = "JMLR_FACEMODEL"
MODEL_STORE_ENV = "JMLR_MODEL_STORE"


def default_facemodel_path() -> Path:
    """The ICT-FaceKit npz: ``$JMLR_FACEMODEL`` or ``<repo>/../shared/facemodel/ict_facekit.npz``.

    The file is never committed (it is 14 MB and comes with its own licence note); a user
    without ``../shared`` builds it with ``jmlr facemodel build``.
    """
    env = os.environ.get(FACEMODEL_ENV)
    if env:
        return Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "facemodel" / "ict_facekit.npz"


def default_model_store() -> Path:
    """The model store folder: ``$JMLR_MODEL_STORE`` or ``<repo>/model_store``."""
    env = os.environ.get(MODEL_STORE_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "model_store"


def configs_dir() -> Path:
    """Plain config files (model architectures, training runs) shipped with the package."""
    return PACKAGE_ROOT / "configs"

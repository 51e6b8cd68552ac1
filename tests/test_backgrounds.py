"""Photo backgrounds (`jmlr.synth.backgrounds`): a pack made with part of the catalogue
missing says so, since it differs from one made with all of it."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from jmlr.synth.backgrounds import CATALOGUE, PhotoBackgrounds


@pytest.fixture
def skimage_installed():
    pytest.importorskip("skimage", reason="scikit-image (a test extra) ships half of the catalogue")


def test_missing_debian_photographs_are_warned_about(skimage_installed, tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("JMLR_SYNTH_BACKGROUNDS", raising=False)
    with caplog.at_level(logging.INFO, logger="jmlr.synth.backgrounds"):
        photos = PhotoBackgrounds.load(debian_dir=tmp_path / "absent")
    assert photos is not None
    assert sorted(photos.names) == sorted(s.name for s in CATALOGUE if s.package == "skimage")
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "debian" in warning.getMessage() and "lomiri-wallpapers-16.04" in warning.getMessage()
    assert f"{sum(s.package == 'debian' for s in CATALOGUE)} of the catalogue's" in warning.getMessage()


def test_the_whole_catalogue_loads_without_a_warning(skimage_installed, tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("JMLR_SYNTH_BACKGROUNDS", raising=False)
    rng = np.random.default_rng(0)
    for s in CATALOGUE:
        if s.package == "debian":
            cv2.imwrite(str(tmp_path / s.name), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    with caplog.at_level(logging.INFO, logger="jmlr.synth.backgrounds"):
        photos = PhotoBackgrounds.load(debian_dir=tmp_path)
    assert photos is not None and len(photos) == len(CATALOGUE)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

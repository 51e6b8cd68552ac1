"""The README's "Python API" example runs as written (so the README cannot drift from the API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from doc_blocks import python_block  # beside this file

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_example() -> str:
    """The one ```python block of the README's "## Python API" section."""
    return python_block(README, "## Python API")


@pytest.fixture
def photo_dir(tmp_path, monkeypatch) -> Path:
    """A 1920x1080 photo.jpg (the example's camera size) in the working directory: scikit-image's
    astronaut, scaled 2x, on a grey canvas."""
    from PIL import Image
    from skimage.data import astronaut

    face = Image.fromarray(astronaut()).resize((1024, 1024), Image.BILINEAR)
    canvas = Image.new("RGB", (1920, 1080), (128, 128, 128))
    canvas.paste(face, (448, 28))
    canvas.save(tmp_path / "photo.jpg", quality=92)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_readme_python_example_runs(photo_dir, capsys):
    code = readme_python_example()
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, str(README) + ":Python API", "exec"), namespace)
    printed = capsys.readouterr().out
    face = namespace.get("face")
    assert face is not None, "the example reconstructed no face on the astronaut"
    assert printed.strip(), "the example printed nothing"
    n = namespace["reconstructor"].topology.num_vertices
    assert face.vertices.shape == (n, 3)
    assert face.pose.success and face.finite
    assert 0.2 < face.distance_m < 3.0  # a face in a photo, not a failed pose
    assert np.isfinite(face.pose.rms_px)

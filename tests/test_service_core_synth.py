"""A synthetic render with a known pose through POST /reconstruct (needs the real face model).

The served model here is a tiny untrained placeholder, so the check is of plumbing and
conventions on a real-looking input: client landmarks taken from the ground truth, the
response's shapes follow the model topology, and the recovered pose is the right kind
of pose (in front of the camera, about the true distance, landmarks on the face).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

pytestmark = pytest.mark.facemodel


def test_synthetic_render_with_known_pose(facemodel_path, tmp_path):
    from jmlr.facemodel import FaceModel
    from jmlr.facemodel.topology import Topology
    from jmlr.geometry.camera import project_points
    from jmlr.geometry.crop import landmarks5_from_68
    from jmlr.store import load_model, make_random_model
    from jmlr.synth.scene import SyntheticFaceGenerator
    from service.app import create_app
    from service.settings import Settings

    topo = Topology.load()
    gen = SyntheticFaceGenerator(FaceModel.load(facemodel_path), topo)
    rng = np.random.default_rng(3)
    params = gen.sample_params(rng, 1)
    img = gen.finish(gen.render(params, rng=rng), rng, effects=False)[0]
    verts = gen.topology_vertices_np(params.identity, params.expression)[0]
    R_t = params.R_t[0].astype(np.float64)
    lm68 = project_points(verts[topo.landmarks68], R_t, gen.K)
    lm5 = landmarks5_from_68(lm68)
    t_gt_cv = R_t[3, :3] * np.array([1, -1, -1])  # OpenGL → OpenCV translation

    make_random_model(input_size=64, name="tiny", store_dir=tmp_path / "store", set_default=True)
    served = load_model(tmp_path / "store" / "tiny").topology
    K = gen.K
    cam = {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    settings = Settings(model_store=tmp_path / "store", data_dir=tmp_path / "var", device="cpu")
    with TestClient(create_app(settings)) as c:
        r = c.post(
            "/reconstruct",
            files={"image": ("synth.png", buf.getvalue(), "image/png")},
            data={"camera": json.dumps(cam), "faces": json.dumps([{"landmarks5": lm5.tolist()}]),
                  "include": "vertices,vertices_camera"},
        )
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert np.asarray(face["vertices"]).shape == (served.num_vertices, 3)
    assert len(face["landmarks_68"]) == 68
    t = np.asarray(face["pose"]["translation"])
    assert t[2] > 0 and 0.6 < t[2] / t_gt_cv[2] < 1.6, (t, t_gt_cv)
    # The projected landmarks land on the face (within a quarter of its size).
    size = np.ptp(lm68, axis=0).max()
    err = np.linalg.norm(np.asarray(face["landmarks_68"]) - lm68, axis=1).mean()
    assert err < 0.25 * size, (err, size)

"""`jmlr eval` on a tiny synthetic challenge-layout dataset written by the synth writer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from jmlr.cli import main as cli_main
from jmlr.eval.evaluate import METRIC_KEYS, EvalDataError, evaluate

TINY = {"name": "tiny", "backbone": {"block": "basic", "depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64],
                                     "stem_width": 8}, "input_size": 64}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """Procedural head, its topology, a 4-image challenge-layout dataset, a model store."""
    from jmlr.facemodel import FaceModel, build_topology, make_procedural_head

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("world")
    head = make_procedural_head(root / "head.npz")
    topo_path = build_topology(FaceModel.load(head)).save(root / "topology.npz")
    data = root / "data"
    rc = cli_main(["synth", "--out", str(data), "--subjects", "2", "--per-subject", "2", "--seed", "3",
                   "--facemodel", str(head), "--topology", str(topo_path), "--no-progress", "--threads", "2"])
    assert rc == 0
    return {"head": head, "topology": Path(topo_path), "data": data, "store": root / "store"}


def _export_tiny(world, name: str, task: str = "jmlr", topology=None, seed: int = 0) -> Path:
    from jmlr.facemodel import Topology
    from jmlr.models.tasks import create_task_model
    from jmlr.store import export_model

    topo_path = topology or world["topology"]
    torch.manual_seed(seed)
    net = create_task_model(task, TINY, Topology.load(topo_path).num_vertices, 64)
    return export_model(net, TINY, topo_path, world["store"], name, task=task, input_size=64,
                        dtype=torch.float32, overwrite=True)


def test_oracle_scores_zero(tiny_world, tmp_path):
    out = tmp_path / "oracle.json"
    rc = cli_main(["eval", "--data", str(tiny_world["data"]), "--oracle", "--workers", "0", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["count"] == 4 and res["task"] == "oracle" and res["pnp_failures"] == 0
    for k in ("score", "term_pose_shape", "term_pose", "term_shape", "mae_t_mm", "add_mm", "vertex_mean_mm",
              "size_error_pct"):
        assert abs(res[k]) < 1e-3, (k, res[k])  # mm; float32 ground truth limits it to ~1e-5
    assert res["mae_r_deg"] < 1e-4
    assert sum(b["count"] for b in res["by_yaw"].values()) == 4


def test_model_eval_keys_documented_ensemble_and_limit(tiny_world):
    m1 = _export_tiny(tiny_world, "tiny1", seed=1)
    m2 = _export_tiny(tiny_world, "tiny2", seed=2)
    res = evaluate([m1], tiny_world["data"], limit=3)
    assert res["count"] == 3 and res["score"] > 1.0 and res["task"] == "jmlr"
    first_cells = re.findall(r"^\| (.+?) \|", Path("docs/eval_json.md").read_text(), re.M)
    documented = {k for cell in first_cells for k in re.findall(r"`([a-z_0-9]+)`", cell)}
    assert set(res) <= documented, set(res) - documented
    assert set(METRIC_KEYS) <= set(res["by_yaw"]["0-30"])
    # an ensemble of a model with itself is that model
    same = evaluate([m1, m1], tiny_world["data"], limit=3)
    assert same["score"] == pytest.approx(res["score"], rel=1e-6)
    ens = evaluate([m1, m2], tiny_world["data"], limit=3, flip_tta=True)
    assert ens["model_names"] == ["tiny1", "tiny2"] and np.isfinite(ens["score"])


def test_vertex_count_mismatch_is_a_clear_error(tiny_world, tmp_path):
    from jmlr.facemodel import default_topology_path

    m = _export_tiny(tiny_world, "tiny_default_topo", topology=default_topology_path())
    with pytest.raises(EvalDataError, match="vertices"):
        evaluate([m], tiny_world["data"])
    rc = cli_main(["eval", "--model", str(m), "--data", str(tiny_world["data"]), "--workers", "0"])
    assert rc == 2


@pytest.mark.slow
def test_baseline_trains_on_disk_exports_and_evaluates(tiny_world, tmp_path):
    from jmlr.store import load_model
    from jmlr.train.trainer import load_train_config, train

    cfg = load_train_config("baseline_b", {
        "model": TINY, "input_size": 64, "topology": str(tiny_world["topology"]), "out": str(tmp_path / "run"),
        "max_steps": 2, "batch_size": 2, "progress": False, "export": "tiny_b", "store_dir": str(tiny_world["store"]),
        "data": {"root": str(tiny_world["data"]), "num_workers": 0}})
    summary = train(cfg)
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
    meta = json.loads((tmp_path / "run" / "ckpt" / "last.json").read_text())
    assert meta["task"] == "baseline_b" and meta["step"] == 2 and meta["num_vertices"] > 0
    model = load_model(summary["export"])
    assert model.task == "baseline_b"
    res = evaluate([summary["export"]], tiny_world["data"])
    assert res["task"] == "baseline_b" and res["pnp_rms_px"] is None and np.isfinite(res["score"])
    with pytest.raises(EvalDataError, match="ensemble"):
        evaluate([summary["export"], summary["export"]], tiny_world["data"])

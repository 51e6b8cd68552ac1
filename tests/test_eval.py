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
    assert res["pnp_stride"] == 4
    rc = cli_main(["eval", "--data", str(tiny_world["data"]), "--oracle", "--workers", "0", "--pnp-stride", "1",
                   "--json", str(out)])
    assert rc == 0 and json.loads(out.read_text())["pnp_stride"] == 1
    assert cli_main(["eval", "--data", str(tiny_world["data"]), "--oracle", "--workers", "0",
                     "--pnp-stride", "0"]) == 2


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


def test_training_scores_held_out_samples_as_it_goes(tiny_world, tmp_path, caplog):
    """`heldout` in a training config: rows in <out>/heldout.csv with `jmlr eval`'s
    numbers; the last one is exactly what evaluating the exported model gives."""
    import csv

    from jmlr.train.trainer import train

    base = {"task": "jmlr", "model": TINY, "input_size": 64, "topology": str(tiny_world["topology"]),
            "max_steps": 3, "batch_size": 2, "progress": False, "ckpt_every": 0, "log_every": 1,
            "optim": {"name": "adamw", "lr": 0.01, "lr_batch": 2, "warmup_steps": 1, "weight_decay": 0.0},
            "store_dir": str(tiny_world["store"]), "data": {"source": "disk", "root": str(tiny_world["data"]),
                                                            "num_workers": 0}}
    summary = train(dict(base, out=str(tmp_path / "run"), export="tiny_heldout",
                         heldout={"data": str(tiny_world["data"]), "every_minutes": 1e-9, "limit": 3}))
    rows = list(csv.DictReader(open(tmp_path / "run" / "heldout.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]  # due at every step; the end adds no duplicate
    assert all(int(r["count"]) == 3 for r in rows)
    final = evaluate([summary["export"]], tiny_world["data"], limit=3, batch_size=32)
    for k in ("score", "vertex_mean_mm", "mae_r_deg", "mae_t_mm", "size_error_pct"):
        assert float(rows[-1][k]) == pytest.approx(final[k], abs=1e-3), k
    # the weights moved between looks, so the looks differ
    assert len({r["vertex_mean_mm"] for r in rows}) > 1
    # no such folder: the run trains on and says why there is no held-out log
    with caplog.at_level("WARNING", logger="jmlr.train"):
        train(dict(base, out=str(tmp_path / "run2"), max_steps=1,
                   heldout={"data": str(tmp_path / "missing"), "every_minutes": 1e-9}))
    assert "no held-out evaluation" in caplog.text and not (tmp_path / "run2" / "heldout.csv").exists()
    with pytest.raises(ValueError, match="unknown keys"):
        train(dict(base, out=str(tmp_path / "run3"), heldout={"data": "x", "every": 5}))


def test_a_held_out_look_leaves_the_frozen_batchnorm_in_eval_mode(tiny_world, tmp_path, monkeypatch):
    """The monitor scores a copy: the run's network keeps each module's mode (freeze_bn
    holds the frozen layers' BatchNorm in eval mode while the rest trains)."""
    import jmlr.train.trainer as trainer
    from jmlr.train.heldout import HeldOutMonitor

    seen: list[list[bool]] = []

    class Recording(HeldOutMonitor):
        def __call__(self, net, *args):
            seen.append([m.training for m in net.conv1.modules() if isinstance(m, torch.nn.BatchNorm2d)])
            return super().__call__(net, *args)

    monkeypatch.setattr(trainer, "HeldOutMonitor", Recording)
    cfg = {"task": "jmlr", "model": TINY, "input_size": 64, "topology": str(tiny_world["topology"]),
           "max_steps": 3, "batch_size": 2, "progress": False, "ckpt_every": 0, "out": str(tmp_path / "run"),
           "freeze": "conv1", "freeze_bn": True, "optim": {"warmup_steps": 1},
           "data": {"source": "disk", "root": str(tiny_world["data"]), "num_workers": 0},
           "heldout": {"data": str(tiny_world["data"]), "every_minutes": 1e-9, "limit": 2}}
    trainer.train(cfg)
    assert len(seen) == 4 and all(flags and not any(flags) for flags in seen)


def test_train_cli_says_each_held_out_look_on_stderr(tiny_world, tmp_path, capsys):
    import yaml

    cfg = {"task": "jmlr", "model": TINY, "input_size": 64, "topology": str(tiny_world["topology"]),
           "max_steps": 1, "batch_size": 2, "progress": False, "ckpt_every": 0, "out": str(tmp_path / "run"),
           "data": {"source": "disk", "root": str(tiny_world["data"]), "num_workers": 0},
           "heldout": {"data": str(tiny_world["data"]), "limit": 2}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert cli_main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 0
    err = capsys.readouterr().err
    assert "held-out at step 1 (2 samples" in err and "score" in err

"""`jmlr export-onnx` into a cache the backends then read, and `jmlr eval --backend`.

A tiny random model on a procedural head's topology and a 4-image `jmlr synth` folder
(the calibration source and the evaluation data): the int8 graph is calibrated on real
aligned crops through `calibration_crops`, as `jmlr export-onnx --int8` does for users.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jmlr.cli import main as cli_main

TINY = {"name": "tiny", "backbone": {"block": "basic", "depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64],
                                     "stem_width": 8}, "input_size": 64}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from jmlr.facemodel import FaceModel, Topology, build_topology, make_procedural_head
    from jmlr.models.tasks import create_task_model
    from jmlr.store import export_model

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("onnx_cli")
    head = make_procedural_head(root / "head.npz")
    topo_path = build_topology(FaceModel.load(head)).save(root / "topology.npz")
    data = root / "data"
    rc = cli_main(["synth", "--out", str(data), "--subjects", "2", "--per-subject", "2", "--seed", "5",
                   "--facemodel", str(head), "--topology", str(topo_path), "--no-progress", "--threads", "2"])
    assert rc == 0
    torch.manual_seed(0)
    net = create_task_model("jmlr", TINY, Topology.load(topo_path).num_vertices, 64)
    store = root / "store"
    export_model(net, TINY, topo_path, store, "tiny", task="jmlr", input_size=64, dtype=torch.float32)
    return {"data": data, "store": store}


def _run_json(capsys, argv: list[str]) -> tuple[int, dict | str]:
    capsys.readouterr()
    rc = cli_main(argv)
    out = capsys.readouterr().out
    return rc, (json.loads(out) if rc == 0 else out)


def test_export_onnx_fp32_int8_into_cache(world, tmp_path, capsys, monkeypatch):
    from jmlr.inference import load_backend

    monkeypatch.delenv("JMLR_ONNX_CALIBRATION", raising=False)
    cache = tmp_path / "cache"
    base = ["export-onnx", "tiny", "--store", str(world["store"]), "--cache-dir", str(cache)]

    # int8 with nothing cached and no calibration data: a clear error, nothing written for int8
    rc, out = _run_json(capsys, [*base, "--int8"])
    assert rc == 2 and "--calibration" in out

    rc, res = _run_json(capsys, [*base, "--int8", "--calibration", str(world["data"]), "--calibration-count", "3",
                                 "--check", "2"])
    assert rc == 0 and res["model"] == "tiny" and res["cache_dir"] == str(cache)
    for variant in ("fp32", "int8"):
        path = Path(res[variant]["path"])
        assert path.is_file() and path.parent == cache and path.stat().st_size == res[variant]["bytes"]
        assert Path(res[variant]["sidecar"]).is_file()
    assert res["int8"]["made"] and res["int8"]["calibration"]["crops"] == 3
    assert res["int8"]["calibration"]["source"] == str(world["data"])
    import onnx

    ops = {n.op_type for n in onnx.load(res["int8"]["path"]).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # --check: fp32 is PyTorch to float precision, int8 moves the vertices but stays finite
    assert res["check"]["fp32"]["vertex_max_mm"] < 0.01 and res["check"]["fp32"]["crops"] == 2
    assert 0 < res["check"]["int8"]["vertex_mean_mm"] < 1e3

    # a second run finds both cached; --force makes them again
    rc, again = _run_json(capsys, [*base, "--int8"])
    assert rc == 0 and not again["fp32"]["made"] and not again["int8"]["made"]
    assert again["int8"]["path"] == res["int8"]["path"] and again["int8"]["sha256"] == res["int8"]["sha256"]
    rc, forced = _run_json(capsys, [*base])
    assert rc == 0 and not forced["fp32"]["made"] and "int8" not in forced
    rc, forced = _run_json(capsys, [*base, "--force"])
    assert rc == 0 and forced["fp32"]["made"]

    # the backends read what the command wrote: int8 needs no calibration now
    model = load_backend(world["store"] / "tiny", "ort-int8", cache_dir=cache)
    assert str(model.onnx_path) == res["int8"]["path"]
    v, p = model.predict(np.zeros((2, 64, 64, 3), np.uint8))
    assert v.shape[0] == 2 and np.isfinite(v).all() and np.isfinite(p).all()


def test_export_onnx_default_cache_and_errors(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JMLR_ONNX_CACHE", str(tmp_path / "env_cache"))
    # a model folder path works without --store
    rc, res = _run_json(capsys, ["export-onnx", str(world["store"] / "tiny")])
    assert rc == 0 and Path(res["fp32"]["path"]).parent == tmp_path / "env_cache"
    rc, out = _run_json(capsys, ["export-onnx", "nope", "--store", str(world["store"])])
    assert rc == 2 and "no such model folder" in out
    rc, out = _run_json(capsys, ["export-onnx", "tiny", "--store", str(world["store"]), "--int8",
                                 "--calibration", str(tmp_path / "missing")])
    assert rc == 2 and "does not exist" in out


def test_eval_backends_agree(world, tmp_path, capsys):
    from jmlr.eval.evaluate import evaluate

    model, cache = world["store"] / "tiny", tmp_path / "cache"
    ref = evaluate([model], world["data"])
    assert ref["backend"] == "torch"
    ort = evaluate([model], world["data"], backend="ort", backend_options={"cache_dir": cache})
    assert ort["backend"] == "ort" and ort["count"] == ref["count"] == 4
    for k in ("score", "mae_r_deg", "mae_t_mm", "vertex_mean_mm"):
        assert ort[k] == pytest.approx(ref[k], rel=1e-3, abs=1e-3), k
    # through the CLI: int8 is calibrated on the fly when asked to, refused without data
    rc, out = _run_json(capsys, ["eval", "--model", str(model), "--data", str(world["data"]), "--workers", "0",
                                 "--backend", "ort-int8", "--onnx-cache-dir", str(cache)])
    assert rc == 2 and "export-onnx" in out
    out_json = tmp_path / "int8.json"
    rc = cli_main(["eval", "--model", str(model), "--data", str(world["data"]), "--workers", "0",
                   "--backend", "ort-int8", "--onnx-cache-dir", str(cache), "--calibration", str(world["data"]),
                   "--json", str(out_json)])
    res = json.loads(out_json.read_text())
    assert rc == 0 and res["backend"] == "ort-int8" and np.isfinite(res["score"])


def test_export_onnx_checks_an_expression_head(world, tmp_path, capsys):
    """A model with an expression head: its graph has the third output, and --check
    compares it with PyTorch too."""
    from jmlr.facemodel.procedural import EXPRESSION_NAMES
    from jmlr.models import create_model
    from jmlr.store import export_model, load_model

    plain = load_model(world["store"] / "tiny")
    net = create_model(dict(TINY, expression_names=list(EXPRESSION_NAMES)), plain.num_vertices, 64)
    net.load_state_dict(plain.net.state_dict(), strict=False)
    export_model(net, net.config, plain.path / plain.manifest["files"]["topology"], tmp_path / "store", "expr",
                 dtype=torch.float32)
    rc, res = _run_json(capsys, ["export-onnx", "expr", "--store", str(tmp_path / "store"), "--cache-dir",
                                 str(tmp_path / "cache"), "--check", "2"])
    assert rc == 0, res
    assert res["check"]["fp32"]["expression_max"] < 1e-4 and res["check"]["fp32"]["vertex_max_mm"] < 0.01

"""Training loop: schedule, checkpoints, baselines, and a tiny network overfitting renders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from jmlr.models.baselines import DirectRegressionNet, TwoStreamNet, decode_baseline_output, decode_pose, encode_pose
from jmlr.models.tasks import create_task_model, get_task
from jmlr.train.checkpoint import load_checkpoint, save_checkpoint
from jmlr.train.trainer import (
    _param_groups,
    deep_update,
    load_train_config,
    lr_at,
    make_optimizer,
    scaled_lr,
)

TINY = {"name": "tiny", "backbone": {"block": "basic", "depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64],
                                     "stem_width": 8}, "input_size": 64}


def _tiny_batch() -> dict:
    """One fixed 2-sample batch of 32 px crops for the tiny network (2 threads)."""
    from jmlr.facemodel import Topology

    torch.set_num_threads(2)
    N = Topology.load().num_vertices
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(2, 3, 32, 32, generator=g), "verts": torch.randn(2, N, 3, generator=g) * 0.05,
            "points2d": torch.rand(2, N, 2, generator=g) * 32}


def _record_optimizer_restores(monkeypatch) -> list:
    """The checkpoint folders whose optimizer state the trainer restores, in order."""
    import jmlr.train.trainer as trainer

    restored: list = []
    real_load = trainer.load_optimizer_state
    monkeypatch.setattr(trainer, "load_optimizer_state",
                        lambda ckpt, opt, *a: (restored.append(ckpt), real_load(ckpt, opt, *a)))
    return restored


def test_lr_schedule_warmup_then_poly():
    peak = scaled_lr(0.1, 64, 512)
    assert peak == pytest.approx(0.0125)
    assert lr_at(0, peak, 10, 110) == pytest.approx(peak / 10)
    assert lr_at(9, peak, 10, 110) == pytest.approx(peak)
    assert lr_at(60, peak, 10, 110) == pytest.approx(peak / 2)
    assert lr_at(110, peak, 10, 110) == 0.0
    assert lr_at(60, peak, 10, 110, power=2.0) == pytest.approx(peak / 4)


def test_config_merge_and_shipped_configs_load():
    a = {"x": 1, "d": {"p": 1, "q": 2}}
    assert deep_update(a, {"d": {"q": 3}}) == {"x": 1, "d": {"p": 1, "q": 3}}
    for name in ("cpu_smoke", "cpu_r18d_128", "gpu_searched_256", "baseline_a", "baseline_b"):
        cfg = load_train_config(name, {"max_steps": 3})
        assert cfg["max_steps"] == 3 and cfg["optim"]["momentum"] == 0.9 and cfg["task"] in (
            "jmlr", "baseline_a", "baseline_b")
    assert load_train_config("baseline_b")["task"] == "baseline_b"


def test_checkpoint_roundtrip_restores_net_and_momentum(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(5, 4)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, net, opt, {"step": 7, "task": "jmlr"})
    assert json.loads((tmp_path / "last.json").read_text())["step"] == 7
    net2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.5, momentum=0.9)
    meta = load_checkpoint(tmp_path, net2, opt2)
    assert meta["step"] == 7
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == 0.1
    for p, q in zip(net.parameters(), net2.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])


def test_adamw_runs_fused_and_updates_as_the_per_tensor_loop():
    def steps(optim_cfg: dict) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
        torch.manual_seed(0)
        # no BatchNorm: the bias before it gets a zero gradient up to rounding, which Adam
        # normalises to full steps of either sign
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        opt = make_optimizer(optim_cfg, _param_groups(net, 0.05), lr=1e-2)
        x, y = torch.randn(32, 8), torch.randn(32, 3)
        for _ in range(5):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()  # smooth: L1 signs flip on rounding
            opt.step()
        return opt, [p.detach().clone() for p in net.parameters()]

    fused_opt, fused = steps({"name": "adamw"})
    loop_opt, loop = steps({"name": "adamw", "fused": False})
    assert fused_opt.defaults["fused"] is True and not loop_opt.defaults["fused"]
    for a, b in zip(fused, loop):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_baselines_build_and_output_shapes():
    N, S = 50, 64
    x = torch.rand(2, 3, S, S)
    a = create_task_model("baseline_a", TINY, N, S)
    assert isinstance(a, DirectRegressionNet) and get_task("baseline_a").inputs == ("whole",)
    assert a(x).shape == (2, 3 * N + 6)
    b = create_task_model("baseline_b", TINY, N, S)
    assert isinstance(b, TwoStreamNet) and get_task("baseline_b").inputs == ("image", "whole")
    assert b(x, x).shape == (2, 3 * N + 6)
    j = create_task_model("jmlr", TINY, N, S)
    assert j(x).shape == (2, 5 * N) and get_task("jmlr").inputs == ("image",)
    verts, R_t = decode_baseline_output(b(x, x), N)
    assert verts.shape == (2, N, 3) and R_t.shape == (2, 4, 4)
    out = get_task("baseline_b").decode(b(x, x), N, S)
    assert out.points is None and out.R_t.shape == (2, 4, 4)
    assert [sl for _, sl in get_task("baseline_b").output_layers(b)] == [slice(0, 3 * N), slice(3 * N, 3 * N + 6)]
    with pytest.raises(KeyError, match="unknown task"):
        create_task_model("nope", TINY, N, S)


def test_pose_encoding_roundtrip():
    from jmlr.geometry.rotation import euler_to_matrix

    R_t = np.zeros((3, 4, 4))
    R_t[:, :3, :3] = np.swapaxes(euler_to_matrix([10, -70, 40], [5, 20, -30], [0, 15, 80]), -1, -2)
    R_t[:, 3, :3] = [[0.0, 0.0, -0.4], [0.1, -0.05, -0.9], [-0.02, 0.03, -0.6]]
    R_t[:, 3, 3] = 1
    p = encode_pose(R_t)
    assert np.abs(p).max() < 2.0  # normalised
    np.testing.assert_allclose(decode_pose(p), R_t, atol=1e-5)


@pytest.mark.slow
def test_tiny_network_overfits_a_few_renders(tmp_path):
    """The real loop (SGD, warm-up, poly decay, head init) drives the loss down ≥10× on
    six fixed rendered crops of the procedural head."""
    import itertools

    from jmlr.facemodel import FaceModel, build_topology, make_procedural_head
    from jmlr.synth.stream import CropJitter, SyntheticCropStream
    from jmlr.train.trainer import train

    torch.set_num_threads(2)
    fm = FaceModel.load(make_procedural_head(tmp_path / "head.npz"))
    topo = build_topology(fm)
    topo_path = topo.save(tmp_path / "topology.npz")
    batch = SyntheticCropStream(fm, topo, size=64, batch_size=6, seed=0, jitter=CropJitter.none(),
                                effects=False).next_batch()
    batch.pop("mask")
    assert batch["image"].std() > 0.05  # real renders, not blank frames
    cfg = {"out": str(tmp_path / "run"), "max_steps": 150, "progress": False, "topology": str(topo_path),
           "input_size": 64, "batch_size": 6, "model": TINY, "log_every": 10, "ckpt_every": 0, "seed": 0,
           "data": {"augment": {"flip": 0.0, "color": 0.0}},
           # mean-reduced L1 over ~6k outputs: per-output gradients are tiny, hence the large lr
           "optim": {"lr": 4.0, "lr_batch": 6, "warmup_steps": 10}}
    summary = train(cfg, batches=itertools.repeat(batch))
    assert summary["step"] == 150
    assert summary["loss"] < summary["first_loss"] / 10, summary
    assert (tmp_path / "run" / "ckpt" / "last.safetensors").is_file()
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,lr,loss,vert,edge,land") and len(rows) == 16


def test_resume_continues_from_the_checkpoint(tmp_path, monkeypatch):
    import itertools

    from jmlr.train.trainer import train

    restored = _record_optimizer_restores(monkeypatch)

    batch = _tiny_batch()
    cfg = {"out": str(tmp_path), "max_steps": 3, "progress": False, "input_size": 32, "batch_size": 2,
           "model": TINY, "log_every": 1, "ckpt_every": 0, "optim": {"warmup_steps": 2}}
    assert train(cfg, batches=itertools.repeat(batch))["step"] == 3
    summary = train(dict(cfg, max_steps=5, resume="auto"), batches=itertools.repeat(batch))
    assert summary["step"] == 5
    steps = [int(r.split(",")[0]) for r in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5]
    assert json.loads((tmp_path / "ckpt" / "last.json").read_text())["step"] == 5
    # A plain head resumed as a plain head keeps its optimizer moments (they were dropped once).
    assert restored == [tmp_path / "ckpt"]


def test_freeze_keeps_the_named_layers_fixed_and_resumes_the_optimizer(tmp_path, monkeypatch):
    """A run resumed with ``freeze`` loads the unfrozen run's optimizer state, leaves the
    frozen layers' weights exactly as they were and trains the rest."""
    import itertools

    from safetensors.torch import load_file

    from jmlr.train.trainer import train

    restored = _record_optimizer_restores(monkeypatch)
    batch = _tiny_batch()
    cfg = {"out": str(tmp_path), "max_steps": 3, "progress": False, "input_size": 32, "batch_size": 2,
           "model": TINY, "log_every": 1, "ckpt_every": 0,
           "optim": {"name": "adamw", "lr": 1e-3, "warmup_steps": 1, "weight_decay": 0.05}}
    train(cfg, batches=itertools.repeat(batch))
    before = load_file(str(tmp_path / "ckpt" / "last.safetensors"))
    train(dict(cfg, max_steps=6, resume="auto", freeze="conv1"), batches=itertools.repeat(batch))
    after = load_file(str(tmp_path / "ckpt" / "last.safetensors"))
    assert restored == [tmp_path / "ckpt"]
    frozen = [k for k in before if k.startswith("conv1.") and not k.endswith(("running_mean", "running_var",
                                                                              "num_batches_tracked"))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert not torch.equal(before["layer1.0.conv1.weight"], after["layer1.0.conv1.weight"])


def test_freeze_bn_keeps_the_frozen_layers_running_statistics(tmp_path):
    """With ``freeze_bn`` the frozen layers' BatchNorm normalises with its running
    statistics and leaves them as they were; without it they follow the batches."""
    import itertools

    from safetensors.torch import load_file

    from jmlr.train.trainer import train

    batch = _tiny_batch()
    cfg = {"out": str(tmp_path / "a"), "max_steps": 2, "progress": False, "input_size": 32, "batch_size": 2,
           "model": TINY, "log_every": 1, "ckpt_every": 0,
           "optim": {"name": "adamw", "lr": 1e-3, "warmup_steps": 1, "weight_decay": 0.05}}
    train(cfg, batches=itertools.repeat(batch))
    before = load_file(str(tmp_path / "a" / "ckpt" / "last.safetensors"))
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    conv1 = [k for k in stats if k.startswith("conv1.")]
    assert conv1 and len(stats) > len(conv1)
    for freeze_bn in (True, False):
        out = tmp_path / f"b_{freeze_bn}"
        shutil.copytree(tmp_path / "a", out)
        train(dict(cfg, out=str(out), max_steps=4, resume="auto", freeze="conv1", freeze_bn=freeze_bn),
              batches=itertools.repeat(batch))
        after = load_file(str(out / "ckpt" / "last.safetensors"))
        assert all(torch.equal(before[k], after[k]) for k in conv1) == freeze_bn
        assert not torch.equal(before["layer1.0.bn1.running_mean"], after["layer1.0.bn1.running_mean"])


def test_folded_frozen_layers_compute_the_same_and_leave_the_network_as_it_was():
    import copy

    from jmlr.train.trainer import fold_frozen_batchnorm, freeze_batchnorm, freeze_parameters

    torch.manual_seed(0)
    net = create_task_model("jmlr", TINY, 100, 32)
    net.train()
    net(torch.randn(8, 3, 32, 32))  # running statistics that are not the identity
    prefixes = ["conv1", "layer1"]
    freeze_parameters(net, prefixes)
    with pytest.raises(ValueError, match="training mode"):
        fold_frozen_batchnorm(net, prefixes)
    freeze_batchnorm(net, prefixes)
    reference = copy.deepcopy(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    undo = fold_frozen_batchnorm(net, prefixes)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.conv1.forward.__self__.modules())
    x = torch.randn(4, 3, 32, 32)
    out = net(x)
    torch.testing.assert_close(out, reference(x), rtol=1e-4, atol=1e-4)
    out.square().sum().backward()
    assert all(p.grad is None for n, p in net.named_parameters() if n.startswith(("conv1.", "layer1.")))
    assert net.layer2[0].conv1.weight.grad is not None
    after = net.state_dict()
    assert list(after) == list(state)
    assert all(torch.equal(after[k], v) for k, v in state.items() if k.startswith(("conv1.", "layer1.")))
    undo()
    assert "forward" not in vars(net.conv1) and "forward" not in vars(net.layer1)


def test_freeze_refuses_a_prefix_that_names_nothing():
    from jmlr.train.trainer import freeze_parameters

    net = create_task_model("jmlr", TINY, 100, 32)
    with pytest.raises(ValueError, match="stem"):
        freeze_parameters(net, ["conv1", "stem"])
    assert all(p.requires_grad for p in net.parameters())  # nothing half-frozen
    names = freeze_parameters(net, ["conv1", "layer1.0"])
    assert names and all(n.startswith(("conv1.", "layer1.0.")) for n in names)
    assert not any(n.startswith("layer1.1") or n.startswith("layer10") for n in names)
    assert all(p.requires_grad == (n not in names) for n, p in net.named_parameters())


def test_time_budget_drives_the_poly_decay():
    from jmlr.train.trainer import budget_step, lr_at

    # No budget: the schedule is step-driven.
    assert budget_step(100, 1e9, None, 10, 1000) == 100
    # Half the budget gone after 100 of 1000 steps: the schedule is half way through decay.
    s = budget_step(100, 30.0, 1.0, 10, 1000)
    assert s == pytest.approx(10 + 0.5 * 990)
    assert lr_at(s, 1.0, 10, 1000) == pytest.approx(0.5)
    # The budget spent: lr reaches 0 even though only 200 steps ran.
    assert lr_at(budget_step(200, 60.0, 1.0, 10, 1000), 1.0, 10, 1000) == 0.0
    # Warm-up is never shortened by the clock.
    assert budget_step(5, 59.0, 1.0, 10, 1000) == 5


def test_init_and_resume_carry_the_cumulative_image_count(tmp_path):
    """--init continues a stored model's count; resuming that run must not drop the init's share."""
    import itertools

    from jmlr.train.trainer import train

    batch = _tiny_batch()
    base = {"max_steps": 3, "progress": False, "input_size": 32, "batch_size": 2, "model": TINY,
            "log_every": 1, "ckpt_every": 0, "optim": {"warmup_steps": 2}, "store_dir": str(tmp_path / "store")}

    def total(path):
        return json.loads(path.read_text())["images_seen_total"]

    train(dict(base, out=str(tmp_path / "a"), export="first"), batches=itertools.repeat(batch))
    first = json.loads((tmp_path / "store" / "first" / "manifest.json").read_text())
    assert first["extra"]["images_seen_total"] == 6

    cont = dict(base, out=str(tmp_path / "b"), init=str(tmp_path / "store" / "first"), max_steps=2)
    train(cont, batches=itertools.repeat(batch))
    assert total(tmp_path / "b" / "ckpt" / "last.json") == 6 + 4
    train(dict(cont, max_steps=4, resume="auto", export="second"), batches=itertools.repeat(batch))
    assert total(tmp_path / "b" / "ckpt" / "last.json") == 6 + 8
    second = json.loads((tmp_path / "store" / "second" / "manifest.json").read_text())
    assert second["extra"]["images_seen_total"] == 6 + 8


def test_ema_is_exported_beside_the_raw_weights(tmp_path):
    """With ``ema``, a run also exports ``<export>_ema``: its weights and BN statistics are the
    moving average from the run's starting weights (here a stored model, ``init``) through
    each step's, ``ema = d * ema + (1 - d) * w`` per step; the raw export is unchanged."""
    import itertools

    from safetensors.torch import load_file

    from jmlr.train.trainer import train

    batch = _tiny_batch()
    store = tmp_path / "store"
    base = {"progress": False, "input_size": 32, "batch_size": 2, "model": TINY, "log_every": 1, "ckpt_every": 0,
            "optim": {"name": "adamw", "lr": 1e-2, "warmup_steps": 1, "weight_decay": 0.05},
            "store_dir": str(store)}
    train(dict(base, out=str(tmp_path / "a"), max_steps=1, export="w0"), batches=itertools.repeat(batch))
    start = dict(base, init=str(store / "w0"), max_steps=1)
    train(dict(start, out=str(tmp_path / "b"), export="w1"), batches=itertools.repeat(batch))
    summary = train(dict(start, out=str(tmp_path / "c"), max_steps=2, export="w2", ema={"decay": 0.75}),
                    batches=itertools.repeat(batch))
    assert summary["export_ema"] == str(store / "w2_ema")
    assert not (store / "w1_ema").exists()  # no ema asked, none written
    # The store keeps fp16; run c's first step is run b's (same seed, same batch).
    w0, w1, w2, ema = ({k: v.float() for k, v in load_file(str(store / n / "model.safetensors")).items()}
                       for n in ("w0", "w1", "w2", "w2_ema"))
    floats = [k for k in w0 if not k.endswith("num_batches_tracked")]
    assert any(k.endswith("running_mean") for k in floats)

    def fp16_tol(*ts):  # a few fp16 roundings of the largest input, elementwise
        return 2e-3 * torch.stack([t.abs() for t in ts]).amax(0) + 1e-7

    for k in floats:
        expected = 0.75 * (0.75 * w0[k] + 0.25 * w1[k]) + 0.25 * w2[k]
        assert ((ema[k] - expected).abs() <= fp16_tol(w0[k], w1[k], w2[k])).all(), k
    moved = (ema["fc.weight"] - w2["fc.weight"]).abs() > fp16_tol(ema["fc.weight"], w2["fc.weight"])
    assert moved.float().mean() > 0.5  # the average is not the last step's weights
    manifest = json.loads((store / "w2_ema" / "manifest.json").read_text())
    assert manifest["name"] == "w2_ema" and manifest["extra"]["step"] == 2
    # every 2 steps with decay 0.75 ** (1/2) per step: one update, at step 2, of weight 0.25
    train(dict(start, out=str(tmp_path / "d"), max_steps=2, export="e2", ema={"decay": 0.75 ** 0.5, "every": 2}),
          batches=itertools.repeat(batch))
    e2 = {k: v.float() for k, v in load_file(str(store / "e2_ema" / "model.safetensors")).items()}
    for k in floats:
        assert ((e2[k] - (0.75 * w0[k] + 0.25 * w2[k])).abs() <= fp16_tol(w0[k], w2[k])).all(), k


@pytest.mark.parametrize("spec", [{"decay": 1.0}, {"decay": 0.0}, {"decay": 0.9, "every": 0},
                                  {"decay": 0.9, "every": 1.5}, {"decay": 0.9, "horizon": 2}])
def test_ema_refuses_a_bad_spec(spec):
    from jmlr.train.trainer import weight_ema

    with pytest.raises(ValueError, match="ema"):
        weight_ema(create_task_model("jmlr", TINY, 100, 32), spec)


def test_cycles_resume_each_other_restart_the_lr_and_export_each_endpoint(tmp_path, monkeypatch):
    """`jmlr train --cycles 0.04,0.04`: cycle 2 resumes cycle 1's checkpoint (the step count
    goes on), its lr starts again from the peak, and each endpoint is exported."""
    import argparse
    import itertools
    import types

    import yaml

    import jmlr.train.trainer as trainer
    from jmlr.train.cli import main

    batch = _tiny_batch()
    real_train = trainer.train
    monkeypatch.setattr(trainer, "train", lambda cfg: real_train(cfg, batches=itertools.repeat(batch)))
    # The cycles are minutes of wall time; a clock that advances 50 ms per reading makes their
    # steps the same on a quiet machine and on one busy with a training run.
    ticks = itertools.count()
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: 0.05 * next(ticks)))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"progress": False, "input_size": 32, "batch_size": 2, "model": TINY,
                                      "log_every": 1, "ckpt_every": 0, "optim": {"warmup_steps": 1}}))
    store = tmp_path / "store"
    args = argparse.Namespace(config=str(config), out=str(tmp_path / "run"), export="tiny", store_dir=str(store),
                              cycles="0.04,0.04", set=[], max_steps=None, max_minutes=None, batch_size=None,
                              seed=None, device=None, resume=None, init=None, data_root=None, packs=None)
    assert main(args) == 0

    def rows(k):
        lines = (tmp_path / f"run_c{k}" / "log.csv").read_text().splitlines()[1:]
        return [(int(r.split(",")[0]), float(r.split(",")[1])) for r in lines]

    first, second = rows(1), rows(2)
    assert second[0][0] == first[-1][0] + 1  # resumed: the step count goes on
    # decayed to about 0 over cycle 1's minutes, then restarted from the peak
    assert len(first) >= 5 and len(second) >= 5
    assert first[-1][1] < 0.1 * first[0][1] and second[0][1] > 10 * first[-1][1]
    assert second[0][1] > 0.9 * first[0][1]
    for k in (1, 2):
        manifest = json.loads((store / f"tiny_c{k}" / "manifest.json").read_text())
        assert manifest["name"] == f"tiny_c{k}"
    assert json.loads((store / "tiny_c2" / "manifest.json").read_text())["extra"]["images_seen_total"] == \
        2 * second[-1][0]


@pytest.mark.parametrize("text", ["", "35,x", "35,0", "-1"])
def test_cycles_refuse_bad_lengths(text):
    from jmlr.train.cli import parse_cycles

    with pytest.raises(SystemExit, match="--cycles"):
        parse_cycles(text)

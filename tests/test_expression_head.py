"""The expression head: a JMLR network that also regresses the face model's expression
weights, trained from packed data, stored, and read back."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from jmlr.facemodel.blendshapes import default_blendshape_basis_path, expression_flip_index
from jmlr.models import create_model, split_expression
from jmlr.models.loss import expression_loss
from jmlr.models.tasks import get_task

TINY = {"name": "tiny", "backbone": {"block": "basic", "depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64],
                                     "stem_width": 8}, "input_size": 32}


def _names() -> list[str]:
    with np.load(default_blendshape_basis_path()) as d:
        return [str(n) for n in d["expression_names"]]


def test_expression_flip_index_swaps_sides_by_name():
    names = _names()
    idx = expression_flip_index(names)
    assert np.array_equal(idx[idx], np.arange(len(names)))  # an involution
    pairs = {("eyeBlink_L", "eyeBlink_R"), ("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"),
             ("browInnerUp_L", "browInnerUp_R")}
    for a, b in pairs:
        assert names[idx[names.index(a)]] == b and names[idx[names.index(b)]] == a
    assert names[idx[names.index("jawOpen")]] == "jawOpen"
    with pytest.raises(ValueError, match="mirror"):
        expression_flip_index(["eyeBlink_L", "jawOpen"])


def test_head_output_layout_and_decoding():
    from jmlr.facemodel import Topology

    N = Topology.load().num_vertices
    names = _names()
    plain = create_model(TINY, N, 32)
    net = create_model(dict(TINY, expression_names=names), N, 32)
    x = torch.rand(2, 3, 32, 32)
    assert plain(x).shape == (2, 5 * N) and net(x).shape == (2, 5 * N + len(names))
    net.init_expression_head(torch.full((4, len(names)), 0.25))
    out = get_task("jmlr").decode(net.eval()(x), N, 32)
    assert out.expression.shape == (2, len(names)) and out.verts.shape == (2, N, 3)
    assert torch.allclose(out.expression, torch.full_like(out.expression, 0.25), atol=0.05)
    assert get_task("jmlr").decode(plain(x), N, 32).expression is None
    # Out-of-range weights are served clamped; too few outputs is an error.
    jm, e = split_expression(torch.cat([torch.zeros(1, 5 * N), torch.tensor([[-0.5, 0.5, 1.5]])], 1), N)
    assert jm.shape == (1, 5 * N) and e.tolist() == [[0.0, 0.5, 1.0]]
    with pytest.raises(ValueError, match="at least"):
        split_expression(torch.zeros(1, 5 * N - 1), N)
    with pytest.raises(ValueError, match="expression_names"):
        create_model(dict(TINY, expression_names=["a", "a"]), N, 32)


def test_expression_loss_weighs_active_and_inactive_apart():
    target = torch.zeros(2, 10)
    target[0, 3] = 0.8
    # Predicting zeros everywhere: a small mean over all 20 weights, but the full error on
    # the one active weight.
    res = expression_loss(torch.zeros(2, 10), target)
    assert res["expression_active"] == pytest.approx(0.8) and res["expression_inactive"] == 0.0
    assert res["expression"] == pytest.approx(0.8)
    pred = target.clone().requires_grad_(True)
    with torch.no_grad():
        pred[1, 0] = -0.3  # below 0: still a gradient back
    expression_loss(pred, target)["expression"].backward()
    assert pred.grad[1, 0] < 0


def test_training_adds_the_head_to_a_stored_model_and_exports_it(tmp_path):
    """A stored model without the head continues with it (`expression_head: true`): the
    other weights come from the model, the head starts at the targets' mean and learns;
    the exported model predicts the weights through `jmlr.store`."""
    from jmlr.facemodel import Topology
    from jmlr.store import load_model
    from jmlr.train.trainer import train

    torch.set_num_threads(2)
    N = Topology.load().num_vertices
    names = _names()
    g = torch.Generator().manual_seed(0)
    expression = torch.zeros(2, len(names))
    expression[0, names.index("jawOpen")] = 0.9
    expression[1, names.index("eyeBlink_L")] = 0.7
    batch = {"image": torch.rand(2, 3, 32, 32, generator=g), "verts": torch.randn(2, N, 3, generator=g) * 0.05,
             "points2d": torch.rand(2, N, 2, generator=g) * 32, "expression": expression}
    base = {"max_steps": 2, "progress": False, "input_size": 32, "batch_size": 2, "model": TINY, "log_every": 1,
            "ckpt_every": 0, "store_dir": str(tmp_path / "store"),
            "optim": {"name": "adamw", "lr": 0.01, "lr_batch": 2, "warmup_steps": 1, "weight_decay": 0.0}}
    train(dict(base, out=str(tmp_path / "a"), export="plain"), batches=itertools.repeat(batch))
    plain = load_model(tmp_path / "store" / "plain")
    assert plain.run({"image": np.zeros((1, 32, 32, 3), np.uint8)}).expression is None

    train(dict(base, out=str(tmp_path / "b"), init=str(tmp_path / "store" / "plain"), expression_head=True,
               max_steps=60, export="with_expression"), batches=itertools.repeat(batch))
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("expression")
    first, last = float(rows[1].split(",")[col]), float(rows[-1].split(",")[col])
    assert last < first / 3, (first, last)
    manifest = json.loads((tmp_path / "store" / "with_expression" / "manifest.json").read_text())
    assert manifest["architecture"]["config"]["expression_names"] == names
    model = load_model(tmp_path / "store" / "with_expression")
    crops = (batch["image"].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    out = model.run({"image": crops})
    assert out.expression.shape == (2, len(names)) and 0.0 <= out.expression.min() <= out.expression.max() <= 1.0
    assert out.expression[0, names.index("jawOpen")] > 0.5 and out.expression[1, names.index("eyeBlink_L")] > 0.4

    # Continuing it without the head would drop what it learned: refused, saying how to keep it.
    with pytest.raises(ValueError, match="expression_head: true"):
        train(dict(base, out=str(tmp_path / "d"), init=str(tmp_path / "store" / "with_expression")),
              batches=itertools.repeat(batch))
    # Only packed data holds expression targets: other sources are refused up front.
    with pytest.raises(ValueError, match="packed"):
        train(dict(base, out=str(tmp_path / "c"), expression_head=True, data={"source": "synthetic"}))


def test_soft_threshold_zeroes_small_weights_and_keeps_the_range():
    from jmlr.facemodel.blendshapes import soft_threshold

    w = np.array([0.0, 0.1, 0.2, 0.6, 1.0])
    np.testing.assert_allclose(soft_threshold(w, 0.2), [0.0, 0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(soft_threshold(w, 0.0), w)
    with pytest.raises(ValueError, match="threshold"):
        soft_threshold(w, 1.0)


def test_thresholds_per_weight_follow_the_arkit_groups():
    from jmlr.facemodel.blendshapes import (
        ARKIT_BLENDSHAPE_NAMES,
        ARKIT_GROUPS,
        arkit_group,
        soft_threshold,
        threshold_per_name,
    )

    # every ARKit name but tongueOut (which the face model lacks) is in exactly one group
    for n in ARKIT_BLENDSHAPE_NAMES:
        owners = [g for g, prefixes in ARKIT_GROUPS.items() if n.startswith(prefixes)]
        assert owners == ([] if n == "tongueOut" else [arkit_group(n)])
    names = ("eyeBlinkLeft", "jawOpen", "browInnerUp", "tongueOut")
    t = threshold_per_name(names, {"brows": 0.5, "jaw": 0.1}, default=0.3)
    np.testing.assert_allclose(t, [0.3, 0.1, 0.5, 0.3])
    np.testing.assert_allclose(soft_threshold(np.array([[0.65, 0.55, 0.75, 0.3]]), t), [[0.5, 0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match="groups"):
        threshold_per_name(names, {"ears": 0.2}, default=0.3)
    with pytest.raises(ValueError, match="threshold"):
        soft_threshold(np.zeros(4), np.array([0.1, 0.2, 1.0, 0.0]))

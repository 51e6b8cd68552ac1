"""The head's vertex basis: PCA of targets, the parametrisation, plain weights for the store,
checkpoints that resume on the same basis, and a run exported in the plain layout."""

from __future__ import annotations

import itertools

import pytest
import torch

from jmlr.models.jmlr_net import encode_targets
from jmlr.models.tasks import create_task_model
from jmlr.models.vertex_basis import (
    attach_vertex_basis,
    fold_vertex_basis,
    has_vertex_basis,
    plain_state_dict,
    principal_vertex_basis,
    vertex_basis_of,
)

TINY = {"name": "tiny", "backbone": {"block": "basic", "depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64],
                                     "stem_width": 8}, "input_size": 32}
N, S, RANK = 30, 32, 6


def _low_rank_batches(count: int, seed: int = 0, n: int = N) -> list[dict]:
    """Batches whose vertices are a mean shape plus RANK random directions (as a face
    model's are), with random crop points and images."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, 3, generator=g) * 0.05
    dirs = torch.randn(RANK, n, 3, generator=g) * 0.005
    out = []
    for _ in range(count):
        c = torch.randn(4, RANK, generator=g)
        out.append({"image": torch.rand(4, 3, S, S, generator=g),
                    "verts": mean + torch.einsum("bk,knd->bnd", c, dirs),
                    "points2d": torch.rand(4, n, 2, generator=g) * S})
    return out


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_task_model("jmlr", TINY, N, S).eval()


def test_principal_basis_spans_the_targets_and_drops_noise():
    batches = _low_rank_batches(8)
    t = torch.cat([encode_targets(b["verts"], b["points2d"], S) for b in batches])
    mean, scale = t.mean(0), torch.full((5 * N,), 0.3)
    P = principal_vertex_basis(t, N, mean, scale, max_rank=20)
    assert P.shape == (3 * N, RANK)  # exactly the targets' rank, noise components dropped
    # every target's vertex block is reproduced by the basis
    y = (t[:, :3 * N] - mean[:3 * N]) / scale[:3 * N]
    y = y - y.mean(0)
    coeffs = torch.linalg.lstsq(P.double(), y.double().T).solution
    assert torch.allclose((P.double() @ coeffs).T, y.double(), atol=1e-4)
    # columns orthogonal, scaled by each component's spread (whitened coefficients)
    c = y.double() @ P.double() / (P.double() ** 2).sum(0)
    assert c.std(0).numpy() == pytest.approx(1.0, abs=1e-3)
    assert principal_vertex_basis(t, N, mean, scale, max_rank=3).shape == (3 * N, 3)


def test_parametrised_head_folds_to_the_same_plain_network():
    batches = _low_rank_batches(8)
    t = torch.cat([encode_targets(b["verts"], b["points2d"], S) for b in batches])
    net = _net()
    net.set_output_statistics(t.mean(0), t.std(0).clamp_min(1e-3), fc_std=0.05)
    P = principal_vertex_basis(t, N, net.out_mean, net.out_scale, max_rank=RANK)
    attach_vertex_basis(net, P)
    assert has_vertex_basis(net) and torch.equal(vertex_basis_of(net), P)
    # only K coefficient rows (+ the free 2D rows) are trained
    names = dict(net.named_parameters())
    assert names["fc.parametrizations.weight.original"].shape[0] == RANK + 2 * N
    with torch.no_grad():  # move the coefficients so the head is not the projected init
        names["fc.parametrizations.weight.original"].add_(torch.randn_like(names["fc.parametrizations.weight.original"]))
    x = batches[0]["image"]
    with torch.no_grad():
        want = net(x)
    # the vertex outputs stay in the basis' span around the mean
    dv = ((want[:, :3 * N] - net.out_mean[:3 * N]) / net.out_scale[:3 * N])
    resid = dv - (dv @ P) / (P ** 2).sum(0) @ P.T
    assert resid.abs().max() < 1e-4 * dv.abs().max() + 1e-6 and dv.abs().max() > 1e-3
    # the plain state dict loads into a plain network of the same class: same outputs
    plain = _net(seed=1)
    plain.load_state_dict(plain_state_dict(net))
    with torch.no_grad():
        assert torch.allclose(plain(x), want, atol=1e-5)
    # folding in place gives the same, with no trace of the basis
    fold_vertex_basis(net)
    assert not has_vertex_basis(net) and "fc.weight" in net.state_dict()
    with torch.no_grad():
        assert torch.allclose(net(x), want, atol=1e-5)


def test_training_with_a_basis_resumes_on_it_and_exports_plain(tmp_path):
    from safetensors.torch import load_file

    from jmlr.facemodel import Topology
    from jmlr.store import load_model
    from jmlr.train.trainer import train

    torch.set_num_threads(2)
    n_topo = Topology.load().num_vertices
    batches = _low_rank_batches(4, n=n_topo)
    base = {"out": str(tmp_path / "run"), "progress": False, "input_size": S, "batch_size": 4, "model": TINY,
            "log_every": 1, "ckpt_every": 0, "output_stats": 16, "vertex_basis": 64,
            "optim": {"name": "adamw", "lr": 1e-3, "lr_batch": 4, "weight_decay": 0.0, "warmup_steps": 2}}
    train(dict(base, max_steps=3), batches=itertools.cycle(batches))
    ckpt = tmp_path / "run" / "ckpt"
    basis = load_file(str(ckpt / "last.basis.safetensors"))["basis"]
    assert basis.shape[0] == 3 * n_topo and 1 <= basis.shape[1] <= RANK
    state = load_file(str(ckpt / "last.safetensors"))
    assert "fc.weight" in state and not any("parametrizations" in k for k in state)
    momentum = load_file(str(ckpt / "last.optim.safetensors"))
    # resuming keeps the basis (the optimizer state of the coefficients matches it)
    summary = train(dict(base, max_steps=5, resume="auto", export="basis_model", store_dir=str(tmp_path / "store")),
                    batches=itertools.cycle(batches))
    assert summary["step"] == 5
    assert torch.equal(load_file(str(ckpt / "last.basis.safetensors"))["basis"], basis)
    assert set(load_file(str(ckpt / "last.optim.safetensors"))) == set(momentum)
    # the stored model is a plain network whose vertex outputs lie in the basis' span
    model = load_model(tmp_path / "store" / "basis_model")
    assert not has_vertex_basis(model.net)
    w = model.net.fc.weight.detach().float()[: 3 * n_topo]
    proj = basis @ torch.linalg.lstsq(basis.double(), w.double()).solution.float()
    assert torch.allclose(proj, w, atol=1e-3 * float(w.abs().max()) + 1e-6)

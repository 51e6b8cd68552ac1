"""Packed training crops (`jmlr pack`, `jmlr.data.packed`) and the output affine of the
JMLR head that makes the 3D shape learnable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jmlr.cli import main as cli_main
from jmlr.data.align import AlignJitter
from jmlr.data.packed import PackedCrops, read_pack_info
from jmlr.geometry.camera import project_points
from jmlr.geometry.crop import apply_affine, crop_transform, landmarks5_from_68


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Procedural head + its topology + a 2-chunk pack of 10 crops."""
    from jmlr.facemodel import FaceModel, build_topology, make_procedural_head

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("packworld")
    head = make_procedural_head(root / "head.npz")
    topo_path = build_topology(FaceModel.load(head)).save(root / "topology.npz")
    pack = root / "pack"
    args = ["pack", "--out", str(pack), "--images", "10", "--chunk-size", "6", "--size", "96", "--seed", "4",
            "--batch", "4", "--workers", "1", "--facemodel", str(head), "--topology", str(topo_path), "--no-progress"]
    assert cli_main(args) == 0
    return {"head": head, "topology": Path(topo_path), "pack": pack, "args": args}


def test_pack_layout_and_resume(world):
    info = read_pack_info(world["pack"])
    assert info["complete"] == ["chunk_00000", "chunk_00001"]
    counts = [json.loads((world["pack"] / c / "chunk.json").read_text())["count"] for c in info["complete"]]
    assert counts == [6, 4]
    seeds = [json.loads((world["pack"] / c / "chunk.json").read_text())["seed"] for c in info["complete"]]
    assert len(set(seeds)) == 2
    images = np.load(world["pack"] / "chunk_00000" / "images.npy", mmap_mode="r")
    assert images.shape == (6, 96, 96, 3) and images.dtype == np.uint8
    # A second run with the same arguments finds everything done and changes nothing.
    before = (world["pack"] / "chunk_00000" / "images.npy").stat().st_mtime_ns
    assert cli_main(world["args"]) == 0
    assert (world["pack"] / "chunk_00000" / "images.npy").stat().st_mtime_ns == before
    # Another spec in the same folder is refused rather than mixed in.
    with pytest.raises(ValueError, match="size"):
        cli_main(world["args"][:-1] + ["--size", "64", "--no-progress"])


def test_pack_records_its_scene_settings(world, monkeypatch):
    """pack.json says which heads and world a pack was rendered with, and a resume with
    other settings is refused rather than mixed in."""
    import dataclasses

    from jmlr.synth.heads import HEADS_ENV, HeadConfig
    from jmlr.synth.world import WORLD_ENV, WorldConfig

    for env in (HEADS_ENV, WORLD_ENV):  # restored afterwards: --world sets it for the workers
        monkeypatch.delenv(env, raising=False)
    gen = json.loads((world["pack"] / "pack.json").read_text())["generator"]
    assert gen["heads"] == dataclasses.asdict(HeadConfig()) and gen["world"] == dataclasses.asdict(WorldConfig())
    from jmlr.synth.backgrounds import photo_backgrounds

    photos = photo_backgrounds()
    assert gen["background_photos"] == ([] if photos is None else [Path(n).name for n in photos.names])
    with pytest.raises(ValueError, match="world settings"):
        cli_main(world["args"] + ["--world", "legacy"])
    assert cli_main(world["args"] + ["--world", "no-such-element=1"]) == 2


def test_targets_are_consistent_with_the_crop(world):
    from jmlr.facemodel import Topology

    topo = Topology.load(world["topology"])
    crops = PackedCrops(world["pack"], 64)
    assert len(crops) == 10
    for i in range(len(crops)):
        s = crops.sample(i)
        uv = project_points(s["verts"].astype(np.float64), s["R_t"].astype(np.float64), s["K"].astype(np.float64))
        # points2d are the projections of the (fp16-stored) vertices through M ...
        assert np.abs(apply_affine(s["M"], uv) - s["points2d"]).max() < 0.05
        # ... and without jitter M is exactly the JMLR crop of the face's 5 points at 64 px.
        lm = apply_affine(np.linalg.inv(np.vstack([s["M"], [0, 0, 1]]))[:2], s["points2d"][topo.landmarks68])
        assert np.abs(crop_transform(landmarks5_from_68(lm), 64) - s["M"]).max() < 1e-3


def test_packs_of_different_stored_sizes_train_together(world, tmp_path):
    """A 96 px pack and a 64 px pack read together: each sample is cropped from its own
    pack's size, so every crop is the exact JMLR crop of its face at the training size."""
    from jmlr.facemodel import Topology

    topo = Topology.load(world["topology"])
    small = tmp_path / "pack64"
    args = world["args"][:]
    args[args.index("--out") + 1], args[args.index("--size") + 1] = str(small), "64"
    assert cli_main(args) == 0
    both = PackedCrops([world["pack"], small], 48)
    assert len(both) == 20
    for i in range(len(both)):
        s = both.sample(i)
        uv = project_points(s["verts"].astype(np.float64), s["R_t"].astype(np.float64), s["K"].astype(np.float64))
        assert np.abs(apply_affine(s["M"], uv) - s["points2d"]).max() < 0.05
        lm = apply_affine(np.linalg.inv(np.vstack([s["M"], [0, 0, 1]]))[:2], s["points2d"][topo.landmarks68])
        # With either pack's S0 taken for both, half of these would be off by 96/64.
        assert np.abs(crop_transform(landmarks5_from_68(lm), 48) - s["M"]).max() < 1e-3, i

def test_stored_reads_a_sample_across_chunks(world):
    crops = PackedCrops(world["pack"], 64)
    second = np.load(world["pack"] / "chunk_00001" / "expression.npy")
    # sample 7 is the second sample of the second chunk (6 + 4 crops)
    np.testing.assert_array_equal(crops.stored(7, "expression"), second[1])
    assert crops.stored(0, "R_t").shape == (4, 4)


def test_jitter_flip_colour_batches(world):
    from jmlr.facemodel import Topology

    topo = Topology.load(world["topology"])
    plain = PackedCrops(world["pack"], 64)
    jittered = PackedCrops(world["pack"], 64, jitter=AlignJitter(0.05, 5.0, 0.03), seed=1)
    b = next(jittered.batches(4))
    assert b["image"].shape == (4, 3, 64, 64) and b["points2d"].shape == (4, topo.num_vertices, 2)
    for k, i in enumerate(b["index"].tolist()):
        d = np.abs(b["points2d"][k].numpy() - plain.sample(i)["points2d"]).max()
        assert 0.05 < d < 0.1 * 64  # moved, by no more than the jitter allows

    flipped = PackedCrops(world["pack"], 64, flip=1.0, color=0.2, flip_index=topo.flip_index, seed=1)
    b = next(flipped.batches(4))
    assert b["image"].dtype == torch.float32 and 0.0 <= float(b["image"].min()) <= float(b["image"].max()) <= 1.0
    for k, i in enumerate(b["index"].tolist()):
        ref = plain.sample(i)
        p = ref["points2d"].copy()
        p[:, 0] = 63 - p[:, 0]
        assert np.allclose(b["points2d"][k].numpy(), p[topo.flip_index], atol=1e-4)
        v = ref["verts"].copy()
        v[:, 0] = -v[:, 0]
        assert np.allclose(b["verts"][k].numpy(), v[topo.flip_index], atol=1e-6)


def test_refresh_picks_up_new_chunks(world, tmp_path):
    import shutil

    pack = tmp_path / "pack"
    shutil.copytree(world["pack"], pack)
    shutil.rmtree(pack / "chunk_00001")
    crops = PackedCrops(pack, 64)
    assert len(crops) == 6
    shutil.copytree(world["pack"] / "chunk_00001", pack / "chunk_00001")
    assert crops.refresh() == 10 and len(crops) == 10


def test_output_affine_centres_predictions_and_old_weights_still_load():
    from jmlr.models import create_model
    from jmlr.train.trainer import output_statistics

    torch.manual_seed(0)
    N, S = 30, 64
    net = create_model({"name": "t", "backbone": {"family": "mobilenetv2", "head_width": 64}}, N, S)
    targets = torch.randn(64, 5 * N) * 0.01 + torch.linspace(-1, 1, 5 * N)
    mean, scale = output_statistics(targets, N)
    assert torch.allclose(mean, targets.mean(0), atol=1e-6)
    assert scale[: 3 * N].unique().numel() == 1 and scale[3 * N:].unique().numel() == 1
    net.set_output_statistics(mean, scale)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(4, 3, S, S))
    # An untrained network with the affine predicts the mean (to a small fraction of the spread).
    assert ((out - mean).abs() / scale).mean() < 0.1
    # A state dict from before the affine (raw layout) loads as the identity affine.
    state = {k: v for k, v in net.state_dict().items() if k not in ("out_mean", "out_scale")}
    net2 = create_model({"name": "t", "backbone": {"family": "mobilenetv2", "head_width": 64}}, N, S)
    net2.load_state_dict(state, strict=True)
    assert torch.equal(net2.out_mean, torch.zeros(5 * N)) and torch.equal(net2.out_scale, torch.ones(5 * N))


def test_loss_in_output_units():
    from jmlr.models.loss import jmlr_loss, unique_edges

    N, S = 4, 64
    tri = np.array([[0, 1, 2], [1, 2, 3]])
    edges = torch.from_numpy(unique_edges(tri))
    v = torch.zeros(1, N, 3)
    p = torch.full((1, N, 2), S / 2.0)
    out = torch.cat([v.reshape(1, -1) * 10 + 0.02, torch.zeros(1, 2 * N) + 0.1], 1)
    scale = torch.cat([torch.full((3 * N,), 0.01), torch.full((2 * N,), 0.05)])
    res = jmlr_loss(out, v, p, edges, S, out_scale=scale)
    assert res["vert"].item() == pytest.approx(2.0, rel=1e-4)   # 0.02 / 0.01
    assert res["land"].item() == pytest.approx(2.0, rel=1e-4)   # 0.1 / 0.05 (p_norm of S/2 is 0)
    assert res["vert_mm"].item() == pytest.approx(2.0 * np.sqrt(3), rel=1e-4)
    assert res["land_px"].item() == pytest.approx(0.1 * np.sqrt(2) * S / 2, rel=1e-4)


def test_expression_weights_flip_with_the_face(world):
    """Given the expression names, batches carry the weights, and a mirrored crop gets its
    left and right shapes swapped (eyeBlink_L <-> eyeBlink_R)."""
    from jmlr.facemodel import Topology
    from jmlr.facemodel.blendshapes import expression_flip_index
    from jmlr.facemodel.procedural import EXPRESSION_NAMES

    topo = Topology.load(world["topology"])
    names = list(EXPRESSION_NAMES)
    assert "expression" not in next(PackedCrops(world["pack"], 64).batches(4))
    perm = expression_flip_index(names)
    for flip in (0.0, 1.0):
        crops = PackedCrops(world["pack"], 64, flip=flip, flip_index=topo.flip_index, seed=1, expression_names=names)
        b = next(crops.batches(4))
        for k, i in enumerate(b["index"].tolist()):
            stored = crops.stored(i, "expression").astype(np.float32)
            np.testing.assert_array_equal(b["expression"][k].numpy(), stored[perm] if flip else stored)
    assert not np.array_equal(perm, np.arange(len(names)))
    with pytest.raises(ValueError, match="names given"):
        PackedCrops(world["pack"], 64, expression_names=names[:-1])

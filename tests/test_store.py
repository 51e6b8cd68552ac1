"""Model store: export, verified load, prediction with flip TTA, the insightface importer."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from jmlr.facemodel.topology import Topology
from jmlr.models import create_model, decode_output
from jmlr.store import (
    ModelStoreError,
    default_model_name,
    export_checkpoint,
    export_model,
    list_models,
    load_model,
    make_random_model,
    set_default_model,
    unflip_predictions,
)
from jmlr.store.insightface import guess_arch, import_insightface

S = 64
TINY = {"name": "tiny", "input_size": S,
        "backbone": {"block": "basic", "depths": [1, 1, 1, 1], "widths": [8, 8, 16, 16], "stem_width": 8}}


def _tiny_topology() -> Topology:
    # 3 vertices on the subject's left (x > 0), their mirrors, and 2 on the midline.
    left = np.array([[0.03, 0.02, 0.10], [0.05, -0.01, 0.08], [0.02, -0.04, 0.11]], np.float32)
    right = left * np.array([-1, 1, 1], np.float32)
    mid = np.array([[0.0, 0.0, 0.13], [0.0, -0.05, 0.11]], np.float32)
    v = np.concatenate([left, right, mid])
    flip = np.array([3, 4, 5, 0, 1, 2, 6, 7])
    tri = np.array([[6, 0, 1], [6, 4, 3], [6, 1, 7], [6, 7, 4], [1, 2, 7], [4, 7, 5]])
    return Topology(ict_index=np.arange(8), triangles=tri, flip_index=flip,
                    landmarks68=np.zeros(68, np.int64), mean_shape=v)


@pytest.fixture()
def topo_path(tmp_path):
    return _tiny_topology().save(tmp_path / "topo.npz")


@pytest.fixture()
def net():
    torch.manual_seed(0)
    return create_model(TINY, 8).eval()


@pytest.fixture()
def crops():
    return np.random.default_rng(0).integers(0, 256, (2, S, S, 3), dtype=np.uint8)


def _reference(net, crops):
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        v, p = decode_output(net((x - 0.5) / 0.5), net.num_vertices, net.input_size)
    return v.numpy(), p.numpy()


def test_export_load_roundtrip_fp32_identical(tmp_path, topo_path, net, crops):
    d = export_model(net, TINY, topo_path, tmp_path / "store", "m", dtype=torch.float32,
                     metrics={"score": 1.0}, training_data="unit test")
    m = load_model(d)
    assert (m.name, m.version, m.task, m.input_size, m.num_vertices) == ("m", "1", "jmlr", S, 8)
    assert not m.net.training
    v, p = m.predict(crops)
    v0, p0 = _reference(net, crops)
    assert v.shape == (2, 8, 3) and p.shape == (2, 8, 2) and v.dtype == np.float32
    np.testing.assert_array_equal(v, v0)
    np.testing.assert_array_equal(p, p0)
    man = json.loads((d / "manifest.json").read_text())
    assert man["architecture"]["config"]["backbone"]["depths"] == [1, 1, 1, 1]
    assert man["output"]["vertex_scale"] == 10 and man["normalisation"]["color"] == "RGB"
    assert set(man["sha256"]) == {"model.safetensors", "topology.npz"}
    assert man["metrics"] == {"score": 1.0} and "ICT-FaceKit" in man["licence"]["attribution"]
    np.testing.assert_array_equal(m.topology.flip_index, _tiny_topology().flip_index)


def test_fp16_export_is_half_size_and_close(tmp_path, topo_path, net, crops):
    d16 = export_model(net, TINY, topo_path, tmp_path, "h", dtype=torch.float16)
    d32 = export_model(net, TINY, topo_path, tmp_path, "f", dtype=torch.float32)
    s16, s32 = (d16 / "model.safetensors").stat().st_size, (d32 / "model.safetensors").stat().st_size
    assert s16 < 0.6 * s32
    v, p = load_model(d16).predict(crops)
    v0, p0 = _reference(net, crops)
    np.testing.assert_allclose(v, v0, atol=2e-3)
    np.testing.assert_allclose(p, p0, atol=0.5)


def test_tampered_weights_refused(tmp_path, topo_path, net):
    d = export_model(net, TINY, topo_path, tmp_path, "m")
    w = d / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match=r"model\.safetensors.*sha256"):
        load_model(d)


def test_missing_file_refused(tmp_path, topo_path, net):
    d = export_model(net, TINY, topo_path, tmp_path, "m")
    (d / "topology.npz").unlink()
    with pytest.raises(ModelStoreError, match=r"topology\.npz.*missing"):
        load_model(d)
    with pytest.raises(ModelStoreError, match="no such model"):
        load_model(tmp_path / "nothing_here")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version=99), "format_version"),
    (lambda m: m.pop("sha256"), "missing keys"),
    (lambda m: m["files"].update(weights="../model.safetensors"), "plain file name"),
    (lambda m: m["normalisation"].update(color="BGR"), "RGB"),
    (lambda m: m.update(blendshapes={"head_thresholds": {"lips": 0.1}}), "unknown groups"),
    (lambda m: m.update(blendshapes={"head_thresholds": {"jaw": 1.0}}), r"jaw = 1\.0 is not a number in \[0, 1\)"),
    (lambda m: m.update(blendshapes=[0.1]), "head_thresholds must be"),
])
def test_bad_manifest_refused(tmp_path, topo_path, net, edit, message):
    d = export_model(net, TINY, topo_path, tmp_path, "m")
    man = json.loads((d / "manifest.json").read_text())
    edit(man)
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelStoreError, match=message):
        load_model(d)


def test_head_thresholds_travel_in_the_manifest(tmp_path, topo_path, net):
    from jmlr.store import head_thresholds, write_head_thresholds

    d = export_model(net, TINY, topo_path, tmp_path, "m")
    assert head_thresholds(load_model(d).manifest) is None
    write_head_thresholds(d, {"jaw": 0.1, "brows": 0.4}, "bench/bench_blendshapes.py, 160 faces")
    m = load_model(d)  # written after the weights: the hashes still hold
    assert head_thresholds(m.manifest) == {"jaw": 0.1, "brows": 0.4}
    assert m.manifest["blendshapes"]["chosen_on"].startswith("bench/")
    with pytest.raises(ModelStoreError, match="unknown groups"):
        write_head_thresholds(d, {"nose": 0.1}, "")
    assert head_thresholds(load_model(d).manifest) == {"jaw": 0.1, "brows": 0.4}  # a refused write changes nothing


def test_export_refuses_mismatch_and_existing(tmp_path, topo_path, net):
    wrong_n = create_model(TINY, 9)
    with pytest.raises(ModelStoreError, match="do not fit"):
        export_model(wrong_n, TINY, topo_path, tmp_path, "w")
    export_model(net, TINY, topo_path, tmp_path, "m")
    with pytest.raises(ModelStoreError, match="exists"):
        export_model(net, TINY, topo_path, tmp_path, "m")
    export_model(net, TINY, topo_path, tmp_path, "m", overwrite=True, version="2")
    assert load_model(tmp_path / "m").version == "2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_predict_validates_input(tmp_path, topo_path, net):
    m = load_model(export_model(net, TINY, topo_path, tmp_path, "m"))
    with pytest.raises(ValueError, match="uint8"):
        m.predict(np.zeros((1, S, S, 3), np.float32))
    with pytest.raises(ValueError, match=f"{S}, {S}, 3"):
        m.predict(np.zeros((1, S + 1, S + 1, 3), np.uint8))
    v, p = m.predict(np.zeros((S, S, 3), np.uint8))  # one crop without batch axis
    assert v.shape == (1, 8, 3) and p.shape == (1, 8, 2)


def test_unflip_values_and_involution():
    topo = _tiny_topology()
    rng = np.random.default_rng(1)
    v, p = rng.normal(size=(2, 8, 3)), rng.uniform(0, S - 1, (2, 8, 2))
    v_in, p_in = v.copy(), p.copy()
    v1, p1 = unflip_predictions(v, p, topo.flip_index, S)
    # vertex 0's prediction comes from its mirror partner 3, x mirrored
    np.testing.assert_allclose(v1[:, 0], v[:, 3] * [-1, 1, 1])
    np.testing.assert_allclose(p1[:, 0], np.stack([S - 1 - p[:, 3, 0], p[:, 3, 1]], -1))
    np.testing.assert_allclose(v1[:, 6], v[:, 6] * [-1, 1, 1])  # midline: its own partner
    v2, p2 = unflip_predictions(v1, p1, topo.flip_index, S)
    np.testing.assert_allclose(v2, v)
    np.testing.assert_allclose(p2, p)
    vt, pt = unflip_predictions(torch.from_numpy(v), torch.from_numpy(p), topo.flip_index, S)
    np.testing.assert_allclose(vt.numpy(), v1)
    np.testing.assert_allclose(pt.numpy(), p1)
    np.testing.assert_array_equal(v, v_in)  # inputs untouched (no in-place edits)
    np.testing.assert_array_equal(p, p_in)


def test_flip_tta_shapes_and_equivariance(tmp_path, topo_path, net, crops):
    m = load_model(export_model(net, TINY, topo_path, tmp_path, "m", dtype=torch.float32))
    v, p = m.predict(crops, flip_tta=True)
    assert v.shape == (2, 8, 3) and p.shape == (2, 8, 2)
    v_plain, _ = m.predict(crops)
    assert not np.allclose(v, v_plain)  # the flipped pass really contributes
    # TTA of the mirrored crop = the mirror of TTA of the crop
    vf, pf = m.predict(np.ascontiguousarray(crops[:, :, ::-1]), flip_tta=True)
    vu, pu = unflip_predictions(vf, pf, m.topology.flip_index, S)
    np.testing.assert_allclose(vu, v, atol=1e-5)
    np.testing.assert_allclose(pu, p, atol=1e-3)


def test_list_and_default(tmp_path, topo_path, net):
    store = tmp_path / "store"
    with pytest.raises(ModelStoreError):
        default_model_name("cpu", store)
    for name in ("b", "a"):
        export_model(net, TINY, topo_path, store, name)
    assert list_models(store) == ["a", "b"]
    assert default_model_name("cpu", store) == "a"  # no index: first model
    set_default_model("b", devices=("cpu",), store_dir=store)
    assert default_model_name("cuda:0", store) == "b"  # no cuda entry: the cpu one
    set_default_model("a", devices=("cuda",), store_dir=store)
    assert default_model_name("cuda", store) == "a" and default_model_name("cpu", store) == "b"
    with pytest.raises(ModelStoreError):
        set_default_model("zzz", store_dir=store)


def test_export_training_checkpoint(tmp_path, topo_path, net, crops):
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    save_file({"module." + k: v.contiguous() for k, v in net.state_dict().items()},
              str(ckpt / "last.safetensors"))
    (ckpt / "last.json").write_text(json.dumps(
        {"model": TINY, "num_vertices": 8, "input_size": S, "topology": str(topo_path),
         "task": "jmlr", "step": 123, "images_seen": 3936, "images_seen_total": 5000,
         "config": {"init": "model_store/older", "batch_size": 32}}))
    d = export_checkpoint(ckpt, "fromckpt", tmp_path / "store", dtype=torch.float32)
    m = load_model(d)
    assert m.manifest["extra"]["step"] == 123
    # the run's record travels on (a later --init continues its cumulative count)
    assert m.manifest["extra"]["images_seen_total"] == 5000 and m.manifest["extra"]["init"] == "model_store/older"
    assert m.manifest["extra"]["train_config"]["batch_size"] == 32 and m.manifest["extra"]["checkpoint"] == "run"
    np.testing.assert_array_equal(m.predict(crops)[0], _reference(net, crops)[0])
    # via the CLI, pointing at the weights file
    from jmlr.cli import main

    assert main(["export", str(ckpt / "last.safetensors"), "--name", "cli", "--store",
                 str(tmp_path / "store"), "--dtype", "fp32", "--version", "7"]) == 0
    assert load_model(tmp_path / "store" / "cli").version == "7"
    # evaluation results and a model card travel into the manifest, under its checksums
    (tmp_path / "eval.json").write_text(json.dumps({"score": 41.5, "count": 1000}))
    assert main(["export", str(ckpt), "--name", "card", "--store", str(tmp_path / "store"),
                 "--metrics", str(tmp_path / "eval.json"), "--description", "a test card"]) == 0
    card = load_model(tmp_path / "store" / "card").manifest
    assert card["metrics"] == {"score": 41.5, "count": 1000} and card["description"] == "a test card"


def test_make_random_model_placeholder(tmp_path, topo_path, crops):
    d = make_random_model(arch=TINY, input_size=S, name="ph", store_dir=tmp_path,
                          topology_path=topo_path, set_default=True)
    m = load_model(d)
    assert m.manifest["extra"]["untrained_placeholder"] is True
    assert "UNTRAINED" in m.manifest["training_data"]
    assert default_model_name("cuda", tmp_path) == "ph"
    v, p = m.predict(crops)
    # the head is biased to the mean shape and a frontal projection inside the crop
    np.testing.assert_allclose(v[0], _tiny_topology().mean_shape, atol=0.02)
    assert (p > 0).all() and (p < S).all()
    assert p[0, 0, 0] > S / 2 > p[0, 3, 0]  # subject's left (x > 0) on the image right
    # reproducible: same seed, same weights; another seed, other weights
    from safetensors.torch import load_file

    def weights(seed, name):
        d = make_random_model(arch=TINY, input_size=S, name=name, store_dir=tmp_path,
                              topology_path=topo_path, seed=seed)
        return load_file(str(d / "model.safetensors"))

    a, b, c = load_file(str(d / "model.safetensors")), weights(0, "ph2"), weights(1, "ph3")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layer1.0.conv1.weight"], c["layer1.0.conv1.weight"])


def _write_obj(topo: Topology, path):
    lines = [f"v {x} {y} {z}" for x, y, z in topo.mean_shape]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in topo.triangles]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_import_insightface_roundtrip(tmp_path, crops):
    topo = _tiny_topology()
    obj = _write_obj(topo, tmp_path / "example.obj")
    np.save(tmp_path / "flip_index.npy", topo.flip_index)
    torch.manual_seed(0)
    ref = create_model("jmlr_resnet34d", 8, input_size=S).eval()
    # laid out like the reference: OneNetwork.net = timm resnet34d, saved from DDP
    torch.save({"net." + k: v for k, v in ref.state_dict().items()}, tmp_path / "backbone.pth")
    assert guess_arch(ref.state_dict()) == "jmlr_resnet34d"

    from jmlr.cli import main

    assert main(["import-insightface", str(tmp_path / "backbone.pth"), "--topology", str(obj),
                 "--flip-index", str(tmp_path / "flip_index.npy"), "--name", "ref",
                 "--store", str(tmp_path / "store"), "--input-size", str(S), "--dtype", "fp32"]) == 0
    m = load_model(tmp_path / "store" / "ref")
    assert m.manifest["architecture"]["name"] == "jmlr_resnet34d"
    assert (m.topology.ict_index == -1).all() and (m.topology.landmarks68 == -1).all()
    np.testing.assert_array_equal(m.topology.triangles, topo.triangles)
    np.testing.assert_array_equal(m.topology.flip_index, topo.flip_index)
    v, p = m.predict(crops)
    v0, p0 = _reference(ref, crops)
    np.testing.assert_allclose(v, v0, atol=1e-6)
    np.testing.assert_allclose(p, p0, atol=1e-4)


class _Evil:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-path",))


def test_import_refuses_pickled_code_and_bad_inputs(tmp_path):
    topo = _tiny_topology()
    obj = _write_obj(topo, tmp_path / "example.obj")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"net.fc.weight": _Evil()}, f, protocol=2)
    with pytest.raises(ModelStoreError, match="weights-only"):
        import_insightface(tmp_path / "evil.pth", obj, topo.flip_index, "x", store_dir=tmp_path)
    net = create_model(TINY, 9)  # 9 vertices for an 8-vertex mesh
    torch.save({"module.net." + k: v for k, v in net.state_dict().items()}, tmp_path / "n9.pth")
    with pytest.raises(ModelStoreError, match="fc has 45 outputs"):
        import_insightface(tmp_path / "n9.pth", obj, topo.flip_index, "x", store_dir=tmp_path,
                           arch="resnet18d")
    with pytest.raises(ModelStoreError, match="involution"):
        import_insightface(tmp_path / "n9.pth", obj, np.roll(np.arange(8), 1), "x", store_dir=tmp_path)


def test_repository_default_model_loads():
    from jmlr.paths import default_model_store

    store = default_model_store()
    if not (store / "index.json").is_file():
        pytest.skip("no model_store/index.json")
    m = load_model(store / default_model_name("cpu", store))
    v, p = m.predict(np.zeros((1, m.input_size, m.input_size, 3), np.uint8), flip_tta=True)
    assert v.shape == (1, m.num_vertices, 3) and np.isfinite(v).all() and np.isfinite(p).all()
    assert m.num_vertices == m.topology.mean_shape.shape[0]


# --- weight averaging (model soups) ---------------------------------------------------------

def test_average_state_dicts_weighted_mean_and_integer_buffers():
    from jmlr.store import average_state_dicts

    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 6.0]), "n": torch.tensor(7)}
    assert torch.equal(average_state_dicts([a, b])["w"], torch.tensor([2.0, 4.0]))
    out = average_state_dicts([a, b], weights=[3, 1])
    assert torch.allclose(out["w"], torch.tensor([1.0, 3.0]))
    assert out["n"].item() == 7 and out["n"].dtype == a["n"].dtype  # integers: the last state's
    with pytest.raises(ValueError, match="keys"):
        average_state_dicts([a, {"w": b["w"]}])
    with pytest.raises(ValueError, match="shapes"):
        average_state_dicts([a, {"w": torch.zeros(3), "n": b["n"]}])
    with pytest.raises(ValueError, match="weights"):
        average_state_dicts([a, b], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        average_state_dicts([a, b], weights=[-1.0, 2.0])


def _trained_like(tmp_path, topo_path, name, seed, seen):
    torch.manual_seed(seed)
    net = create_model(TINY, 8)
    with torch.no_grad():  # BN statistics that differ between the models, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return export_model(net.eval(), TINY, topo_path, tmp_path / "store", name,
                        extra={"images_seen_total": seen}, dtype=torch.float32)


def test_average_models_soup(tmp_path, topo_path, crops):
    from safetensors.torch import load_file

    from jmlr.store import average_models

    a = _trained_like(tmp_path, topo_path, "a", 0, 1000)
    b = _trained_like(tmp_path, topo_path, "b", 1, 3000)
    d = average_models([a, b], "soup", tmp_path / "store", dtype=torch.float32)
    wa, wb, ws = (load_file(str(p / "model.safetensors")) for p in (a, b, d))
    for k in ws:
        if ws[k].is_floating_point():
            torch.testing.assert_close(ws[k], (wa[k] + wb[k]) / 2)
    m = load_model(d)
    extra = m.manifest["extra"]
    assert [s["name"] for s in extra["averaged_from"]] == ["a", "b"]
    assert [s["weight"] for s in extra["averaged_from"]] == [0.5, 0.5]
    assert extra["images_seen_total"] == 3000  # the curve continues from the furthest source
    assert "weight average of a, b" in m.manifest["description"]
    v, p = m.predict(crops)
    assert np.isfinite(v).all() and np.isfinite(p).all()

    # a soup of one model with itself is that model
    same = average_models([a, a], "same", tmp_path / "store", dtype=torch.float32)
    va, pa = load_model(a).predict(crops)
    vs, ps = load_model(same).predict(crops)
    np.testing.assert_allclose(vs, va, atol=1e-6)
    np.testing.assert_allclose(ps, pa, atol=1e-4)

    # weights: all on b gives b
    only_b = average_models([a, b], "only_b", tmp_path / "store", weights=[0, 1], dtype=torch.float32)
    wo = load_file(str(only_b / "model.safetensors"))
    assert all(torch.equal(wo[k], wb[k]) for k in wb)


def test_average_models_refuses_what_does_not_fit(tmp_path, topo_path):
    from jmlr.store import average_models

    a = _trained_like(tmp_path, topo_path, "a", 0, 1000)
    with pytest.raises(ModelStoreError, match="at least two"):
        average_models([a], "x", tmp_path / "store")
    wider = dict(TINY, backbone=dict(TINY["backbone"], widths=[8, 8, 16, 32]))
    torch.manual_seed(0)
    other = export_model(create_model(wider, 8).eval(), wider, topo_path, tmp_path / "store", "other")
    with pytest.raises(ModelStoreError, match="architecture"):
        average_models([a, other], "x", tmp_path / "store")
    bigger = export_model(create_model(dict(TINY, input_size=2 * S), 8).eval(), dict(TINY, input_size=2 * S),
                          topo_path, tmp_path / "store", "bigger")
    with pytest.raises(ModelStoreError, match="input_size"):
        average_models([a, bigger], "x", tmp_path / "store")
    topo = _tiny_topology()
    moved = Topology(ict_index=topo.ict_index, triangles=topo.triangles, flip_index=topo.flip_index,
                     landmarks68=topo.landmarks68, mean_shape=topo.mean_shape * 1.1)
    torch.manual_seed(0)
    elsewhere = export_model(create_model(TINY, 8).eval(), TINY, moved.save(tmp_path / "moved.npz"),
                             tmp_path / "store", "elsewhere")
    with pytest.raises(ModelStoreError, match="topologies"):
        average_models([a, elsewhere], "x", tmp_path / "store")
    assert not (tmp_path / "store" / "x").exists()


def test_average_cli(tmp_path, topo_path):
    from jmlr.cli import main

    a = _trained_like(tmp_path, topo_path, "a", 0, 1000)
    b = _trained_like(tmp_path, topo_path, "b", 1, 2000)
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"score": 70.0}))
    assert main(["average", str(a), str(b), "--name", "soup", "--store", str(tmp_path / "store"),
                 "--weights", "1", "3", "--metrics", str(metrics), "--set-default"]) == 0
    m = load_model(tmp_path / "store" / "soup")
    assert [s["weight"] for s in m.manifest["extra"]["averaged_from"]] == [0.25, 0.75]
    assert m.manifest["metrics"] == {"score": 70.0}
    assert default_model_name("cpu", tmp_path / "store") == "soup"


def test_store_commands_report_bad_input_without_a_traceback(tmp_path, topo_path, capsys):
    from jmlr.cli import main

    a = _trained_like(tmp_path, topo_path, "a", 0, 1000)
    assert main(["average", str(a), str(tmp_path / "nope"), "--name", "s", "--store", str(tmp_path / "store")]) == 2
    assert "jmlr average: error:" in capsys.readouterr().err
    assert main(["average", str(a), str(a), "--name", "s", "--store", str(tmp_path / "store"),
                 "--weights", "1"]) == 2
    assert "weights" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--name", "e", "--store", str(tmp_path / "store")]) == 2
    assert "jmlr export: error:" in capsys.readouterr().err
    assert not (tmp_path / "store" / "s").exists() and not (tmp_path / "store" / "e").exists()

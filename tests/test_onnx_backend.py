"""The ONNX Runtime backends: export from the store, cache, fp32 parity with PyTorch, int8.

Both network families the store ships (ResNet-D, MobileNetV2 with its output affine) go
through the store's export path with random weights, so a graph that dropped the
normalisation, the output affine or the decoding would not match PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from jmlr.facemodel.topology import default_topology_path
from jmlr.inference import load_backend, resolve_backend
from jmlr.inference.onnx_export import OnnxCacheError, cache_paths, cached_onnx, quantize_int8
from jmlr.models import create_model
from jmlr.store import export_model, load_model

FAMILIES = {"resnet": ("jmlr_resnet18d", 64), "mobilenet": ("jmlr_mobilenetv2_centerface", 96)}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store with a randomly initialised small model of each family, its output affine
    set to something other than the identity."""
    d = tmp_path_factory.mktemp("store")
    for seed, (name, (arch, size)) in enumerate(FAMILIES.items()):
        torch.manual_seed(seed)
        net = create_model(arch, _num_vertices(), size)
        _calibrate_batchnorm(net, size)
        n5 = net.out_mean.numel()
        g = torch.Generator().manual_seed(seed)
        net.set_output_statistics(torch.randn(n5, generator=g) * 0.3, torch.rand(n5, generator=g) * 0.5 + 0.1,
                                  fc_std=0.05)
        export_model(net, net.config, default_topology_path(), d, name, dtype=torch.float32)
    return d


def _calibrate_batchnorm(net: torch.nn.Module, size: int) -> None:
    """Set BatchNorm running statistics from a few random batches: with the initial
    ones (mean 0, var 1) a random MobileNetV2's activations shrink ~10x per stage in eval
    mode, so its outputs do not depend on the input and parity would prove nothing."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(8, 3, size, size))
    net.eval()


def _num_vertices() -> int:
    from jmlr.facemodel.topology import Topology

    return Topology.load(default_topology_path()).num_vertices


@pytest.fixture(scope="module")
def crops() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(0)
    return {size: rng.integers(0, 256, size=(3, size, size, 3), dtype=np.uint8) for _, size in FAMILIES.values()}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ort_fp32_matches_torch(store, crops, tmp_path, family):
    torch_model = load_backend(store / family, "torch")
    ort_model = load_backend(store / family, "ort", cache_dir=tmp_path)
    x = crops[torch_model.input_size]
    for flip in (False, True):
        v_t, p_t = torch_model.predict(x, flip_tta=flip)
        v_o, p_o = ort_model.predict(x, flip_tta=flip)
        assert v_o.shape == v_t.shape and p_o.shape == p_t.shape and v_o.dtype == np.float32
        # the outputs vary with the input (random fc), so equal outputs are not a constant
        assert np.abs(v_t[0] - v_t[1]).max() > 1e-3
        np.testing.assert_allclose(v_o, v_t, atol=2e-6)  # metres: 2 µm
        np.testing.assert_allclose(p_o, p_t, atol=2e-3)  # crop px
    assert (ort_model.name, ort_model.input_size, ort_model.topology.num_vertices) == (
        torch_model.name, torch_model.input_size, torch_model.topology.num_vertices)
    # one crop (S, S, 3) as for the torch backend; a batch row does not depend on its neighbours
    v1, _ = ort_model.predict(x[0])
    np.testing.assert_allclose(v1[0], ort_model.predict(x)[0][0], atol=1e-6)


def test_cache_is_reused_and_checked(store, tmp_path):
    model = load_model(store / "resnet")
    path, made = cached_onnx(model, "fp32", tmp_path)
    assert made and path.is_file() and path.parent == tmp_path
    assert cached_onnx(model, "fp32", tmp_path) == (path, False)
    # a modified graph is not trusted: exported again
    path.write_bytes(path.read_bytes()[:-10])
    assert cached_onnx(model, "fp32", tmp_path) == (path, True)
    # another model version gets its own entry
    other = dict(model.manifest, version="2")
    assert cache_paths(other, "fp32", tmp_path)[0] != path


def test_int8_needs_calibration_and_stays_close(store, crops, tmp_path):
    model = load_model(store / "resnet")
    with pytest.raises(OnnxCacheError, match="export-onnx"):
        cached_onnx(model, "int8", tmp_path)
    fp32_path, _ = cached_onnx(model, "fp32", tmp_path)
    rng = np.random.default_rng(1)
    calib = rng.integers(0, 256, size=(16, 64, 64, 3), dtype=np.uint8)
    int8 = quantize_int8(fp32_path.read_bytes(), calib)
    import onnx

    graph = onnx.load_from_string(int8).graph
    ops = {n.op_type for n in graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # the head stays fp32: no Gemm/MatMul consumes a dequantised tensor
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not [n for n in graph.node if n.op_type in ("Gemm", "MatMul") and set(n.input) & dq_out]

    from jmlr.onnxrt import create_session

    sess8, sess32 = create_session(int8), create_session(fp32_path)
    x = crops[64]
    v8 = sess8.run(None, {"crops": x})[0]
    v32 = sess32.run(None, {"crops": x})[0]
    # int8 moves the outputs, by much less than they vary across inputs
    spread = np.abs(v32 - v32.mean(axis=0)).mean()
    assert 0 < np.abs(v8 - v32).mean() < 0.5 * spread


def test_backend_names():
    assert resolve_backend("auto", "cpu") == "ort"
    assert resolve_backend("auto", "cuda:0") == "torch"
    assert resolve_backend("ort-int8", "cpu") == "ort-int8"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("tensorrt", "cpu")


def test_expression_head_through_torch_ort_and_flip_tta(tmp_path, crops):
    """A model with an expression head: both backends give the same weights, in [0, 1],
    and flip-TTA averages them with the mirrored crop's, left and right swapped back."""
    from jmlr.facemodel.blendshapes import default_blendshape_basis_path, expression_flip_index
    from jmlr.inference import Ensemble, crop_faces

    with np.load(default_blendshape_basis_path()) as d:
        names = [str(n) for n in d["expression_names"]]
    torch.manual_seed(3)
    arch, size = FAMILIES["resnet"]
    net = create_model(dict(create_model(arch, _num_vertices(), size).config, expression_names=names),
                       _num_vertices(), size)
    _calibrate_batchnorm(net, size)
    with torch.no_grad():
        net.expression_fc.weight.normal_(std=0.02)
        net.expression_fc.bias.fill_(0.4)
    export_model(net, net.config, default_topology_path(), tmp_path / "store", "expr", dtype=torch.float32)
    torch_model = load_backend(tmp_path / "store" / "expr", "torch")
    ort_model = load_backend(tmp_path / "store" / "expr", "ort", cache_dir=tmp_path / "cache")
    assert torch_model.expression_names == ort_model.expression_names == tuple(names)
    x = crops[size]
    plain, mirrored = torch_model.infer(x), torch_model.infer(np.ascontiguousarray(x[:, :, ::-1]))
    e = plain.expression
    assert e.shape == (3, len(names)) and e.min() >= 0.0 and e.max() <= 1.0 and np.ptp(e, axis=0).max() > 0.01
    perm = expression_flip_index(names)
    both = torch_model.infer(x, flip_tta=True)
    np.testing.assert_allclose(both.expression, (e + mirrored.expression[:, perm]) / 2, atol=1e-6)
    for flip in (False, True):
        t, o = torch_model.infer(x, flip_tta=flip), ort_model.infer(x, flip_tta=flip)
        np.testing.assert_allclose(o.expression, t.expression, atol=1e-4)
        np.testing.assert_allclose(o.verts, t.verts, atol=2e-6)
    # The ensemble passes the weights on (averaged over members that predict the same ones).
    lm5 = np.array([[40.0, 40], [60, 40], [50, 52], [42, 62], [58, 62]])
    image = np.ascontiguousarray(np.tile(x[0], (2, 2, 1)))
    face_crops = {size: crop_faces(image, [lm5], size)}
    one = Ensemble([torch_model]).infer(face_crops)
    np.testing.assert_allclose(Ensemble([torch_model, ort_model]).infer(face_crops).expression, one.expression,
                               atol=1e-5)
    assert one.expression.shape == (1, len(names))

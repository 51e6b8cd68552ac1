"""Evaluate stored models on challenge-layout data, as the WCPA challenge scores them.

Pipeline per image: the 68 ground-truth landmarks give the five points of the crop (no
detector, as in the challenge); from there the path is `jmlr.inference`'s, as in the
service: crop -> the network predicts world vertices and crop points -> the points go
back to the image with ``M⁻¹`` -> PnP with the data's ``K`` gives ``R_t`` -> challenge
score and pose/vertex errors against the ground truth. The Fig. 1 baselines
(``task`` ``baseline_a``/``baseline_b`` in the manifest) give ``R_t`` directly, no PnP.

An ensemble averages the vertices and the image-space points of several models (same
topology) before PnP. ``oracle=True`` replaces the prediction by the ground truth
(vertices and projected points, through the same crop and PnP path): a test of the
pipeline, which must score 0.

The JSON keys are documented in ``docs/eval_json.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jmlr.data.align import crop_points, masked_full_image
from jmlr.data.datasets import load_challenge_samples, read_image_rgb
from jmlr.geometry.crop import landmarks5_from_68
from jmlr.geometry.intrinsics import Intrinsics
from jmlr.geometry.metrics import challenge_score, pose_metrics, size_error, vertex_errors
from jmlr.geometry.rotation import head_pose_euler
from jmlr.inference import Ensemble, FaceCrops, crop_faces, solve_poses, uncrop_points
from jmlr.inference.poses import PNP_STRIDE

YAW_BINS: tuple[tuple[str, float, float], ...] = (("0-30", 0.0, 30.0), ("30-60", 30.0, 60.0),
                                                    ("60+", 60.0, float("inf")))
METRIC_KEYS = ("score", "term_pose_shape", "term_pose", "term_shape", "mae_r_deg", "mae_yaw_deg",
               "mae_pitch_deg", "mae_roll_deg", "mae_t_mm", "mae_tz_mm", "add_mm", "vertex_mean_mm",
               "vertex_median_mm", "size_error_pct")


class EvalDataError(ValueError):
    """The data does not fit the model(s) (vertex count, topology, task mix)."""


class _EvalImages(torch.utils.data.Dataset):
    """Per sample: one crop (uint8 (S, S, 3)) and ``M`` per requested crop size, optionally
    the masked whole image per size, and the ground truth (float64)."""

    def __init__(self, samples, sizes: Sequence[int], whole: bool):
        self.samples, self.sizes, self.whole = list(samples), sorted(set(sizes)), whole

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        image = read_image_rgb(s.image_path)
        lm = np.asarray(s.landmarks68, np.float64)
        item = {"index": i, "verts": np.asarray(s.verts, np.float64), "R_t": np.asarray(s.R_t, np.float64),
                "width": image.shape[1], "height": image.shape[0]}
        for S in self.sizes:
            # No detector, as in the challenge: the crop is aligned on the ground truth's 5 points.
            c = crop_faces(image, landmarks5_from_68(lm)[None], S)
            item[f"crop{S}"], item[f"M{S}"] = c.crops[0], c.Ms[0]
            if self.whole:
                item[f"whole{S}"] = masked_full_image(image, lm, S)
        return item


def _collate(items: list[dict]) -> dict:
    return {k: np.stack([np.asarray(it[k]) for it in items]) for k in items[0]}


def _crops(b: dict, S: int) -> FaceCrops:
    return FaceCrops(b[f"M{S}"], b[f"crop{S}"])


# A predictor: batch -> (verts (B, N, 3) m, R_t (B, 4, 4) or None, image points (B, N, 2) or None).
Predictor = Callable[[dict], tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]]


def _oracle_predictor(K: np.ndarray, size: int) -> Predictor:
    # The ground truth through the same crop and way back: the pipeline must score 0.
    def predict(b: dict):
        gv, gR, Ms = b["verts"], b["R_t"], b[f"M{size}"]
        crop_pts = np.stack([crop_points(gv[i], gR[i], K, Ms[i]).astype(np.float64) for i in range(len(gv))])
        return gv, None, uncrop_points(Ms, crop_pts)
    return predict


def _pose_predictor(model) -> Predictor:
    # Baselines regress the pose: no PnP.
    def predict(b: dict):
        S = model.input_size
        out = model.run({k: b[f"crop{S}" if k == "image" else f"{k}{S}"] for k in model.task_spec.inputs})
        return out.verts, out.R_t, None
    return predict


def _ensemble_predictor(ensemble: Ensemble, flip_tta: bool) -> Predictor:
    def predict(b: dict):
        verts, pts = ensemble.predict({S: _crops(b, S) for S in ensemble.sizes}, flip_tta)
        return verts, None, pts
    return predict


@dataclass
class DatasetPredictions:
    """Ground truth and predictions of every sample (:func:`predict_dataset`).

    Attributes (lists of per-batch arrays until :meth:`arrays`): ``V_gt``, ``V_pr``
    (B, N, 3) head-frame m; ``Rt_gt``, ``Rt_pr`` (B, 4, 4) challenge poses; ``rms`` the PnP
    reprojection RMS per sample (NaN where PnP failed; empty for the baselines);
    ``t_infer`` seconds spent predicting; ``models`` the loaded models.
    """

    V_gt: list = field(default_factory=list)
    Rt_gt: list = field(default_factory=list)
    V_pr: list = field(default_factory=list)
    Rt_pr: list = field(default_factory=list)
    rms: list = field(default_factory=list)
    t_infer: float = 0.0
    models: list = field(default_factory=list)
    num_vertices: int = 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(V_gt, Rt_gt, V_pr, Rt_pr), each concatenated over the batches."""
        return (np.concatenate(self.V_gt), np.concatenate(self.Rt_gt), np.concatenate(self.V_pr),
                np.concatenate(self.Rt_pr))


def _load_models(model_dirs: Sequence[str | Path], device: str, oracle: bool, backend: str = "torch",
                 backend_options: Mapping[str, Any] | None = None) -> list:
    from jmlr.store import load_model

    if backend == "torch":
        models = [load_model(d, device=device) for d in model_dirs]  # baselines too
    else:  # JMLR models only: jmlr.inference.load_backend refuses the baselines
        from jmlr.inference import load_backend

        models = [load_backend(d, backend, device, **dict(backend_options or {})) for d in model_dirs]
    if not models and not oracle:
        raise ValueError("no model given (pass --model, or --oracle to test the pipeline)")
    if len(models) > 1 and not all(m.task_spec.pose_by_pnp for m in models):
        raise EvalDataError(f"only JMLR models can be ensembled, got tasks {sorted({m.task for m in models})}")
    return models


def _load_samples(data_root, lists, models: list, limit: int | None) -> tuple[list, np.ndarray, int]:
    samples, K = load_challenge_samples(data_root, lists, models[0].topology.landmarks68 if models else None)
    if limit is not None:
        samples = samples[: int(limit)]
    if not samples:
        raise EvalDataError(f"no samples in {data_root}")
    n_data = np.asarray(samples[0].verts).shape[0]
    if models and n_data != models[0].num_vertices:
        raise EvalDataError(
            f"the data has {n_data} vertices per face but model {models[0].name!r} predicts "
            f"{models[0].num_vertices} (its topology): evaluate on data written with that topology")
    return samples, np.asarray(K, np.float64), int(n_data)


def _predictor(models: list, oracle: bool, flip_tta: bool, K: np.ndarray) -> Predictor:
    if oracle:
        return _oracle_predictor(K, models[0].input_size if models else 256)
    if not models[0].task_spec.pose_by_pnp:
        return _pose_predictor(models[0])
    try:
        return _ensemble_predictor(Ensemble(models), flip_tta)
    except ValueError as exc:
        raise EvalDataError(str(exc)) from None


def _predict_all(loader, predict: Predictor, camera: Intrinsics, pnp_stride: int = PNP_STRIDE) -> DatasetPredictions:
    out = DatasetPredictions()
    for b in loader:
        t1 = time.perf_counter()
        verts, pose, pts = predict(b)
        out.t_infer += time.perf_counter() - t1
        if pose is None:
            res = solve_poses(verts, pts, camera, stride=pnp_stride)
            pose = np.stack([r.R_t for r in res])
            out.rms.extend(r.rms_px if r.success else np.nan for r in res)
        out.V_gt.append(b["verts"])
        out.Rt_gt.append(b["R_t"])
        out.V_pr.append(np.asarray(verts, np.float64))
        out.Rt_pr.append(np.asarray(pose, np.float64))
    return out


def _per_sample_metrics(V_gt, Rt_gt, V_pr, Rt_pr) -> dict[str, np.ndarray]:
    per = dict(challenge_score(V_gt, Rt_gt, V_pr, Rt_pr, reduce=False))
    per.update(pose_metrics(Rt_gt, Rt_pr, V_gt, reduce=False))
    ve = vertex_errors(V_gt, V_pr, reduce=False)
    per["vertex_mean_mm"], per["vertex_median_mm"] = ve["mean_mm"], ve["median_mm"]
    per.update(size_error(V_gt, V_pr, reduce=False))
    return per


def _summarise(per: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict:
    sel = slice(None) if mask is None else mask
    count = int(np.asarray(per["score"])[sel].size)
    out = {k: (float(np.mean(per[k][sel])) if count else None) for k in METRIC_KEYS}
    out["count"] = count
    return out


def predict_dataset(model_dirs: Sequence[str | Path], data_root: str | Path,
                    lists: Sequence[str | Path] | None = None, flip_tta: bool = False, limit: int | None = None,
                    oracle: bool = False, batch_size: int = 16, device: str = "cpu", num_workers: int = 0,
                    progress: bool = False, backend: str = "torch",
                    backend_options: Mapping[str, Any] | None = None,
                    pnp_stride: int = PNP_STRIDE) -> DatasetPredictions:
    """The predictions :func:`evaluate` scores (same arguments), sample by sample, for
    analyses of one's own (bench/size_ambiguity.py)."""
    from jmlr.inference import resolve_backend

    backend = resolve_backend(backend, device)
    models = _load_models(model_dirs, device, oracle, backend, backend_options)
    samples, K, n_data = _load_samples(data_root, lists, models, limit)
    predict = _predictor(models, oracle, flip_tta, K)
    sizes = [m.input_size for m in models] or [256]
    whole = any(not m.task_spec.pose_by_pnp for m in models)
    loader = torch.utils.data.DataLoader(_EvalImages(samples, sizes, whole), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers, collate_fn=_collate)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="eval", total=len(loader))
    got = _predict_all(loader, predict, Intrinsics.from_K(K), pnp_stride)
    got.models, got.num_vertices = models, int(n_data)
    return got


def evaluate(model_dirs: Sequence[str | Path], data_root: str | Path, lists: Sequence[str | Path] | None = None,
             flip_tta: bool = False, limit: int | None = None, oracle: bool = False, batch_size: int = 16,
             device: str = "cpu", num_workers: int = 0, progress: bool = False, backend: str = "torch",
             backend_options: Mapping[str, Any] | None = None, pnp_stride: int = PNP_STRIDE) -> dict:
    """Score models (an ensemble when several) on a challenge-layout folder.

    Args:
        model_dirs: model-store folders (or names in the default store); may be empty
            with ``oracle`` (crops of 256 px are used then).
        data_root: challenge-layout folder; ``K`` from ``resources/projection_matrix.txt``.
        lists: list CSVs; default every CSV in ``data_root/list`` (deduplicated).
        flip_tta: mirror test-time augmentation (JMLR models only).
        limit: evaluate the first ``limit`` samples only.
        oracle: predict the ground truth (pipeline test, scores 0).
        backend: how the models run (`jmlr.inference.BACKENDS`: ``torch``, ``ort``,
            ``ort-int8``, or ``auto``); other than ``torch``, JMLR models only.
        backend_options: passed to `jmlr.inference.load_backend` (``cache_dir``,
            ``calibration``, ``ort_options``).
        pnp_stride: PnP solves on every ``pnp_stride``-th point (`jmlr.inference.solve_poses`;
            the service's default, `PNP_STRIDE`).

    Returns:
        The result dict of ``docs/eval_json.md``.

    Raises:
        EvalDataError: vertex count or topology mismatch, or a baseline in an ensemble.
    """
    from jmlr.inference import resolve_backend

    if pnp_stride < 1:  # refused before any model is loaded
        raise ValueError(f"pnp_stride must be >= 1, got {pnp_stride}")
    t0 = time.perf_counter()
    got = predict_dataset(model_dirs, data_root, lists, flip_tta, limit, oracle, batch_size, device, num_workers,
                          progress, backend, backend_options, pnp_stride)
    models = got.models
    V_gt, Rt_gt, V_pr, Rt_pr = got.arrays()
    per = _per_sample_metrics(V_gt, Rt_gt, V_pr, Rt_pr)
    elapsed = time.perf_counter() - t0

    result = _summarise(per)
    abs_yaw = np.abs(head_pose_euler(Rt_gt)[0])
    result["by_yaw"] = {name: _summarise(per, (abs_yaw >= lo) & (abs_yaw < hi)) for name, lo, hi in YAW_BINS}
    rms = np.asarray(got.rms, np.float64)
    result.update({
        "images_per_s": len(V_gt) / elapsed,
        "inference_images_per_s": len(V_gt) / max(got.t_infer, 1e-9),
        "pnp_failures": int(np.isnan(rms).sum()) if rms.size else 0,
        "pnp_rms_px": float(np.nanmean(rms)) if rms.size and np.isfinite(rms).any() else None,
        "models": [str(m.path) for m in models],
        "model_names": [m.name for m in models],
        "task": "oracle" if oracle else (models[0].task if models else None),
        "flip_tta": bool(flip_tta),
        "pnp_stride": int(pnp_stride),
        "oracle": bool(oracle),
        "data": str(data_root),
        "lists": [str(p) for p in lists] if lists else None,
        "num_vertices": int(got.num_vertices),
        "device": str(device),
        "backend": None if oracle and not models else resolve_backend(backend, device),
    })
    return result

"""The model-store format: one folder per model.

::

    model_store/<name>/
        manifest.json       what the files are, how to feed and read the network
        model.safetensors   the network's state dict (fp16 or fp32; no pickle)
        topology.npz        jmlr.facemodel.Topology arrays (mesh the outputs index)

``manifest.json`` (``format_version`` 1)::

    format: "jmlr-model-store", format_version: 1
    name, version, task ("jmlr" or a baseline's task)
    architecture: {name: registry name, config: full config dict}
    input_size: S, num_vertices: N
    normalisation: {mean: [3], std: [3], color: "RGB"}   net input = (rgb/255 - mean)/std
    output: {layout, vertex_scale: 10, points: "normalised [-1,1]: p_px/S*2-1"}
    files: {weights: "model.safetensors", topology: "topology.npz"}
    sha256: {filename: hex digest}          every file in ``files`` is checked on load
    dtype: "float16" | "float32"
    training_data, metrics, licence, created (ISO 8601 UTC), extra
    blendshapes (optional): {head_thresholds: {ARKit group: t in [0, 1)}, chosen_on: str}
        the expression head's soft thresholds, chosen for these weights on held-out faces
        (bench/bench_blendshapes.py --write-thresholds); written after the weights, so
        not hashed
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "WEIGHTS_NAME", "TOPOLOGY_NAME",
    "ICT_ATTRIBUTION", "OUTPUT_SPEC", "ModelStoreError", "sha256_file", "read_manifest",
    "write_manifest", "validate_manifest", "head_thresholds", "write_head_thresholds",
]

FORMAT = "jmlr-model-store"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "model.safetensors"
TOPOLOGY_NAME = "topology.npz"

ICT_ATTRIBUTION = (
    "Trained on and/or uses a mesh derived from ICT-FaceKit, Copyright (c) 2020 USC "
    "Institute for Creative Technologies, MIT License (https://github.com/ICT-VGL/ICT-FaceKit)."
)

OUTPUT_SPEC = {
    "layout": "N*3 world vertices (metres x vertex_scale, xyz interleaved), then N*2 crop points (uv interleaved)",
    "vertex_scale": 10,
    "points": "normalised [-1,1]: p_px/S*2-1",
}

REQUIRED_KEYS = ("format_version", "name", "version", "task", "architecture", "input_size",
                 "normalisation", "output", "files", "sha256")


class ModelStoreError(RuntimeError):
    """A stored model is missing, tampered with, or in a format this code cannot read."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(model_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(model_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def validate_manifest(manifest: Any, where: str = "manifest.json") -> dict[str, Any]:
    """Check the structure (not the hashes); raise ``ModelStoreError`` naming the problem."""
    if not isinstance(manifest, dict):
        raise ModelStoreError(f"{where}: not a JSON object")
    if manifest.get("format", FORMAT) != FORMAT:
        raise ModelStoreError(f"{where}: format {manifest.get('format')!r} is not {FORMAT!r}")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelStoreError(f"{where}: missing keys {missing}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ModelStoreError(
            f"{where}: format_version {manifest['format_version']!r} unsupported "
            f"(this code reads {FORMAT_VERSION}); update jmlr or re-export the model")
    files = manifest["files"]
    if not isinstance(files, dict) or "weights" not in files or "topology" not in files:
        raise ModelStoreError(f"{where}: 'files' must name 'weights' and 'topology'")
    for role, fname in files.items():
        if not isinstance(fname, str) or Path(fname).name != fname:
            # Only bare names: a manifest must not point outside its own folder.
            raise ModelStoreError(f"{where}: files.{role} = {fname!r} is not a plain file name")
        if fname not in manifest["sha256"]:
            raise ModelStoreError(f"{where}: no sha256 for {fname}")
    arch = manifest["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("config"), dict):
        raise ModelStoreError(f"{where}: architecture.config must be the inline config dict")
    norm = manifest["normalisation"]
    if len(norm.get("mean", ())) != 3 or len(norm.get("std", ())) != 3:
        raise ModelStoreError(f"{where}: normalisation needs 3 mean and 3 std values")
    if str(norm.get("color", "RGB")).upper() != "RGB":
        raise ModelStoreError(f"{where}: only RGB input is supported, got {norm.get('color')!r}")
    if float(manifest["output"].get("vertex_scale", 10)) <= 0:
        raise ModelStoreError(f"{where}: output.vertex_scale must be positive")
    if "blendshapes" in manifest:
        _check_head_thresholds(manifest["blendshapes"], where)
    return manifest


def _check_head_thresholds(section: Any, where: str) -> None:
    from jmlr.facemodel.blendshapes import ARKIT_GROUPS  # numpy only; not needed by every reader

    per_group = section.get("head_thresholds") if isinstance(section, dict) else None
    if not isinstance(per_group, dict) or not per_group:
        raise ModelStoreError(f"{where}: blendshapes.head_thresholds must be an object of ARKit group -> threshold")
    unknown = sorted(set(per_group) - set(ARKIT_GROUPS))
    if unknown:
        raise ModelStoreError(f"{where}: blendshapes.head_thresholds names unknown groups {unknown} "
                              f"(known: {list(ARKIT_GROUPS)})")
    for group, t in per_group.items():
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) < 1.0:
            raise ModelStoreError(f"{where}: blendshapes.head_thresholds.{group} = {t!r} is not a number in [0, 1)")


def head_thresholds(manifest: dict[str, Any]) -> dict[str, float] | None:
    """The expression head's soft thresholds per ARKit group stored with a model
    (``blendshapes.head_thresholds``, validated on read), or None if it has none."""
    section = manifest.get("blendshapes")
    if section is None:
        return None
    _check_head_thresholds(section, str(manifest.get("name", MANIFEST_NAME)))
    return {str(g): float(t) for g, t in section["head_thresholds"].items()}


def write_head_thresholds(model_dir: str | Path, per_group: dict[str, float], chosen_on: str) -> Path:
    """Store ``per_group`` thresholds (ARKit group -> t in [0, 1)) in ``model_dir``'s
    manifest with a note of how they were chosen; other keys are kept as they are.

    Raises:
        ModelStoreError: an unreadable manifest, unknown groups or thresholds out of range.
    """
    manifest = read_manifest(model_dir)
    section = {"head_thresholds": {str(g): float(t) for g, t in per_group.items()}, "chosen_on": str(chosen_on)}
    _check_head_thresholds(section, str(Path(model_dir) / MANIFEST_NAME))
    manifest["blendshapes"] = section
    return write_manifest(Path(model_dir), manifest)


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ModelStoreError(f"{path}: missing (not a model-store folder?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelStoreError(f"{path}: not valid JSON ({exc})") from exc
    return validate_manifest(manifest, str(path))

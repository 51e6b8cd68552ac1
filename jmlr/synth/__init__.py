"""Synthetic faces in the WCPA challenge style, rendered from the ICT-FaceKit head.

Modules: `sampler` (identities, 33 facial actions, head poses), `appearance` (albedo,
light, backgrounds, camera effects), `render` (batched PyTorch z-buffer rasterizer),
`scene` (`SyntheticFaceGenerator`), `stream` (`SyntheticCropStream`, on-the-fly crops),
`layout` (challenge folder writer/reader), `dataset` (`synthesize_dataset`), `preview`
(contact sheets), `cli` (`jmlr synth`). See docs/synthetic_data.md.

Attribution: ICT-FaceKit, MIT License, Copyright (c) 2020 USC Institute for Creative
Technologies.

Names are imported lazily so that ``jmlr --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EXPRESSION_PRESETS": "sampler",
    "FACIAL_ACTIONS": "sampler",
    "PoseSampler": "sampler",
    "sample_identity": "sampler",
    "sample_expression": "sampler",
    "sample_pose": "sampler",
    "SyntheticFaceGenerator": "scene",
    "SceneParams": "scene",
    "SyntheticCropStream": "stream",
    "CropJitter": "stream",
    "ChallengeSample": "layout",
    "ChallengeSamples": "layout",
    "iter_samples": "layout",
    "load_sample": "layout",
    "read_list": "layout",
    "read_intrinsics": "layout",
    "synthesize_dataset": "dataset",
    "rasterize": "render",
    "render_mesh": "render",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

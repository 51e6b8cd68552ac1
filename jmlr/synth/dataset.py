"""Write a synthetic dataset in the WCPA challenge layout (`jmlr synth`).

Every subject has one identity and one appearance; each of its images picks a facial
action in turn (the 33 of `FACIAL_ACTIONS`), a pose, lights, a background and camera
effects. Each image is drawn from its own generator seeded by ``(seed, subject,
image)``, so the output depends only on the seed and the counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .appearance import encode_jpeg
from .layout import write_lists, write_resources, write_sample
from .sampler import FACIAL_ACTIONS
from .scene import SceneParams, SyntheticFaceGenerator, _project, numpy_threads_like_torch

__all__ = ["synthesize_dataset", "action_folder", "capture_action", "subject_id"]

_SUBJECT_STREAM = 1 << 30  # generator key of a subject's identity/appearance draw


def subject_id(index: int) -> str:
    return f"{index:05d}"


def action_folder(action: str) -> str:
    """Folder of a facial action: its 1-based number, like the challenge's folders."""
    return str(FACIAL_ACTIONS.index(action) + 1)


def capture_action(subject: int, k: int, per_subject: int) -> str:
    """The facial action of capture ``k`` of ``subject``. Actions run on across subjects, so
    that few captures per subject still cover all 33; with 33 per subject (the challenge's
    layout) every subject goes through them in order from the first."""
    return FACIAL_ACTIONS[(subject * per_subject + k) % len(FACIAL_ACTIONS)]


def synthesize_dataset(out: str | Path, generator: SyntheticFaceGenerator, subjects: int, per_subject: int,
                       seed: int = 0, batch: int = 8, progress: bool = True,
                       first_subject: int = 0) -> list[tuple[str, str, str]]:
    """Render ``subjects x per_subject`` captures into ``out``; returns the list rows.

    Also writes ``resources/`` and ``list/{all,train,val}.csv`` (val: the last tenth of
    the subjects, at least one when there are two or more).
    """
    out = Path(out)
    write_resources(out, generator.topology)
    jobs = [(s, k) for s in range(first_subject, first_subject + subjects) for k in range(per_subject)]
    subjects_cache: dict[int, tuple] = {}
    rows: list[tuple[str, str, str]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="img", desc="synth")
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        rngs, subj, acts = [], [], []
        for s, k in chunk:
            if s not in subjects_cache:
                subjects_cache.clear()  # subjects come in order; keep only the current one
                subjects_cache[s] = generator.sample_subject(np.random.default_rng([seed, s, _SUBJECT_STREAM]))
            rngs.append(np.random.default_rng([seed, s, k]))
            subj.append(subjects_cache[s])
            acts.append(capture_action(s, k, per_subject))
        with numpy_threads_like_torch(), torch.no_grad():
            params: SceneParams = generator.sample_params(rngs, len(chunk), subjects=subj, actions=acts)
            render = generator.render(params, rng=rngs)
            images = generator.finish(render, rngs, jpeg=False, params=params)
            verts = generator.topology_vertices_np(params.identity, params.expression)
            lm = _project(verts[:, generator.landmarks68].astype(np.float64), params.R_t.astype(np.float64),
                          generator.K)
        for i, (s, k) in enumerate(chunk):
            row = (subject_id(s), action_folder(acts[i]), f"{k:06d}")
            quality = int(rngs[i].integers(60, 96))
            write_sample(out, *row, encode_jpeg(images[i], quality), verts[i], params.R_t[i], lm[i],
                         identity=params.identity[i], expression=params.expression[i])
            rows.append(row)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    ids = sorted({r[0] for r in rows})
    n_val = max(1, len(ids) // 10) if len(ids) >= 2 else 0
    write_lists(out, rows, ids[len(ids) - n_val:])
    return rows

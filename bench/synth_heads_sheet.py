"""Before/after contact sheet of the head elements (not a test).

Renders the same captures (same seed: same identities, expressions, poses, lights and
backgrounds; the head elements draw from streams of their own) with the legacy heads
and with the current head config, and lays them out in pairs: legacy left, new right.
Every tile is a square around the projected ground-truth topology, enlarged so that
hair and shoulders show; every other pair has the ground-truth 68 landmarks drawn on
the new render (they must sit on the face whatever the hair covers).

    python bench/synth_heads_sheet.py --out docs/synth_contact_sheet_v2.jpg --count 12 --seed 3
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/synth_contact_sheet_v2.jpg")
    ap.add_argument("--count", type=int, default=12, help="captures (pairs of tiles)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--tile", type=int, default=224)
    ap.add_argument("--heads", default="default", help="the new head config (HeadConfig.parse)")
    ap.add_argument("--renderer", default="auto")
    ap.add_argument("--facemodel", default=None)
    args = ap.parse_args()

    import torch

    from jmlr.facemodel import FaceModel, Topology
    from jmlr.geometry.camera import project_points
    from jmlr.synth.heads import HeadConfig
    from jmlr.synth.preview import contact_sheet, face_tile
    from jmlr.synth.scene import SyntheticFaceGenerator, numpy_threads_like_torch

    torch.set_num_threads(1)
    fm, topo = FaceModel.load(args.facemodel), Topology.load()
    lm68 = np.asarray(topo.landmarks68)
    tiles = []
    renders = {}
    for name, heads in (("legacy", HeadConfig.legacy()), ("new", HeadConfig.parse(args.heads))):
        gen = SyntheticFaceGenerator(fm, topo, renderer=args.renderer, heads=heads)
        with numpy_threads_like_torch(), torch.no_grad():
            rngs = [np.random.default_rng([args.seed, i]) for i in range(args.count)]
            params = gen.sample_params(rngs, args.count)
            out = gen.render(params, rng=rngs)
            images = gen.finish(out, rngs, effects=False)
        verts = gen.topology_vertices_np(params.identity, params.expression)
        renders[name] = (images, verts, params.R_t, gen.K)
    images_old, verts, R_t, K = renders["legacy"]
    images_new, verts_new, _, _ = renders["new"]
    assert np.array_equal(verts, verts_new), "the head elements changed the ground truth"
    for i in range(args.count):
        pts = project_points(verts[i].astype(np.float64), R_t[i].astype(np.float64), K)
        old, _ = face_tile(images_old[i], pts, args.tile, margin=0.75)
        new, M = face_tile(images_new[i], pts, args.tile, margin=0.75)
        if i % 2 == 1:
            for x, y in pts[lm68] @ M[:, :2].T + M[:, 2]:
                cv2.circle(new, (int(round(x * 16)), int(round(y * 16))), 24, (255, 60, 60), -1, cv2.LINE_AA, 4)
        tiles += [old, new]
    sheet = contact_sheet(tiles, cols=4)
    cv2.imwrite(args.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

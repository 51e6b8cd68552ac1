"""Can a learned readout beat the blendshape fit? (issue 14; an experiment, not a test)

The service reads ARKit weights from the predicted mesh by a bounded least-squares fit
(`jmlr.facemodel.blendshapes`). This asks whether a readout *learned* on the network's
outputs reads more, at equal cost:

1. ``--train`` packed crops (`jmlr pack`) cut with the training run's alignment jitter
   (the detector's 5-point error) are run through the model; kept per crop: the predicted
   vertices (what the fit reads), the pooled backbone features (what the network's last
   layer reads) and the true expression weights. Cached in ``--features``.
2. Readouts fitted on them, each scored on the held-out faces of
   `bench/bench_blendshapes.py` (its ``--cache`` file: new identities, exact alignment;
   the features of those faces are computed here from its crops' renders again):

   - the fit (noise_m x l1 grid), the service's method;
   - ridge regression from the vertices, and from the pooled features;
   - a 2-layer MLP (256 hidden, sigmoid outputs) from the vertices and from the pooled
     features, trained with a loss that weights the inactive weights' error
     ``--inactive-weight`` times the active ones' (1: the two halves count alike;
     squared error: the mean).

   Errors: mean absolute error of the ARKit weights over the active (> 0.1) and the
   inactive (< 0.05) ones, as `bench/bench_blendshapes.py` reports them.

    python bench/blendshape_readout.py --packs data/pack_v2 data/pack_legacy --train 30000 \
        --cache runs/blendshapes_final_cache.npz --features runs/bs_head
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from bench_blendshapes import errors  # noqa: E402

from jmlr.data.align import AlignJitter  # noqa: E402
from jmlr.data.packed import PackedCrops  # noqa: E402
from jmlr.facemodel import FaceModel, Topology  # noqa: E402
from jmlr.facemodel.blendshapes import BlendshapeBasis, BlendshapeSolver, arkit_mapping  # noqa: E402
from jmlr.store import default_model_name, load_model  # noqa: E402
from jmlr.synth.stream import CropJitter, SyntheticCropStream  # noqa: E402


def pooled_features(model, crops: np.ndarray) -> np.ndarray:
    net = model.net
    with torch.inference_mode():
        return net.global_pool(net.forward_features(model.preprocess(crops))).flatten(1).numpy().astype(np.float32)


def training_features(model, packs, n: int, jitter: AlignJitter, seed: int) -> dict[str, np.ndarray]:
    pc = PackedCrops(packs, size=model.input_size, jitter=jitter)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(pc), n, replace=False))
    out: dict[str, list] = {"verts": [], "feat": [], "expression": []}
    t0 = time.perf_counter()
    for s in range(0, n, 64):
        items = [pc.sample(int(i), rng) for i in idx[s:s + 64]]
        crops = np.stack([it["image"] for it in items])
        v, _ = model.predict(crops)
        out["verts"].append(v.astype(np.float32))
        out["feat"].append(pooled_features(model, crops))
        out["expression"] += [pc.stored(int(i), "expression").astype(np.float32) for i in idx[s:s + 64]]
        if s % 6400 == 0:
            print(f"  {s}/{n} crops, {time.perf_counter() - t0:.0f} s", flush=True)
    return {"verts": np.concatenate(out["verts"]), "feat": np.concatenate(out["feat"]),
            "expression": np.stack(out["expression"]), "index": idx}


def held_out_features(model, n: int, seed: int) -> np.ndarray:
    """Pooled features of `bench_blendshapes.draw`'s faces (same stream, same seed)."""
    stream = SyntheticCropStream(FaceModel.load(), Topology.load(), size=model.input_size, batch_size=32, seed=seed,
                                 jitter=CropJitter.none(), effects=True)
    feats: list[np.ndarray] = []
    while sum(map(len, feats)) < n:
        b = stream.next_batch()
        crops = (b["image"].permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        feats.append(pooled_features(model, crops))
    return np.concatenate(feats)[:n]


def train_mlp(Z: np.ndarray, Y: np.ndarray, inactive_weight: float | None, steps: int, seed: int = 0):
    """inactive_weight None: squared error; else L1 with the inactive half weighted."""
    torch.manual_seed(seed)
    Zf, Yf = torch.tensor(Z, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(Z.shape[1], 256), torch.nn.GELU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, Y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps)
    for _ in range(steps):
        i = torch.randint(0, len(Zf), (256,))
        out, t = torch.sigmoid(net(Zf[i])), Yf[i]
        if inactive_weight is None:
            loss = ((out - t) ** 2).mean()
        else:
            act = (t > 0.1).float()
            e = (out - t).abs()
            loss = ((e * act).sum() / act.sum().clamp(min=1)
                    + inactive_weight * (e * (1 - act)).sum() / (1 - act).sum()) / (1 + inactive_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return lambda X: torch.sigmoid(net(torch.tensor(X, dtype=torch.float32))).detach().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--packs", nargs="+", default=["data/pack_v2", "data/pack_legacy"])
    ap.add_argument("--train", type=int, default=30000, help="packed crops to learn the readouts on")
    ap.add_argument("--jitter", type=float, nargs=3, default=[0.15, 10.0, 0.05], metavar=("SCALE", "DEG", "SHIFT"))
    ap.add_argument("--cache", required=True, help="bench/bench_blendshapes.py --cache file (held-out faces)")
    ap.add_argument("--bench-seed", type=int, default=14014, help="its --seed (validation; test is +1)")
    ap.add_argument("--features", default="runs/bs_head", help="folder for the cached features")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--inactive-weight", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--inputs", nargs="+", choices=["vertices", "pooled features"],
                    default=["vertices", "pooled features"])
    args = ap.parse_args()
    torch.set_num_threads(1)

    model = load_model(args.model or default_model_name("cpu"), "cpu")
    folder = Path(args.features)
    folder.mkdir(parents=True, exist_ok=True)
    train_path, held_path = folder / f"train_{args.train}.npz", folder / "held_out_features.npz"
    if not train_path.is_file():
        np.savez(train_path, **training_features(model, args.packs, args.train, AlignJitter(*args.jitter), 5))
    cache = np.load(args.cache)
    n_val, n_test = len(cache["val_pred"]), len(cache["test_pred"])
    if not held_path.is_file():
        np.savez(held_path, val_feat=held_out_features(model, n_val, args.bench_seed),
                 test_feat=held_out_features(model, n_test, args.bench_seed + 1))
    tr, ho = np.load(train_path), np.load(held_path)

    basis = BlendshapeBasis.load().for_topology(model.topology)
    names, to_arkit = arkit_mapping(basis.expression_names)
    truth = cache["test_expression"] @ to_arkit.T
    Y = tr["expression"].astype(np.float64)

    def as_arkit(expression: np.ndarray) -> np.ndarray:
        """Face-model expression weights (B, E) -> ARKit weights (B, A), in [0, 1]."""
        return np.clip(expression, 0, 1) @ to_arkit.T

    def report(case: str, arkit: np.ndarray) -> None:
        e = errors(arkit, truth, names)
        cells = " | ".join(f"{e[g]['active']:.3f} / {e[g]['inactive']:.3f}" for g in e)
        print(f"| {case} | {cells} |", flush=True)

    groups = ["all", "brows", "eyes", "jaw", "mouth", "cheeks/nose"]
    print(f"\nHeld-out test faces: {n_test}; readouts learned on {args.train} packed crops "
          f"(jitter {args.jitter}); model {model.name}.\n")
    print("| readout | " + " | ".join(groups) + " |")
    print("| --- | " + " | ".join("---" for _ in groups) + " |")
    V = cache["test_pred"].astype(np.float64)
    for mm, l1 in ((4.0, 1e-6), (4.0, 0.0), (8.0, 0.0), (1.0, 1e-5)):
        fit = BlendshapeSolver(basis, noise_m=mm * 1e-3, l1=l1)(V)
        report(f"fit, noise {mm:g} mm, l1 {l1:g}", fit.arkit)
    inputs = {
        "vertices": (tr["verts"].reshape(len(Y), -1), cache["test_pred"].reshape(n_test, -1)),
        "pooled features": (tr["feat"], ho["test_feat"]),
    }
    for label in args.inputs:
        X, Xt = inputs[label]
        X, Xt = X.astype(np.float64), Xt.astype(np.float64)
        mu, sd = X.mean(0), X.std(0) + 1e-6
        Z, Zt = (X - mu) / sd, (Xt - mu) / sd
        G = Z.T @ Z
        W = np.linalg.solve(G + 100.0 * np.eye(len(G)), Z.T @ (Y - Y.mean(0)))
        report(f"ridge (100) from the {label}", as_arkit(Zt @ W + Y.mean(0)))
        report(f"MLP from the {label}, squared error", as_arkit(train_mlp(Z, Y, None, args.steps)(Zt)))
        for w in args.inactive_weight:
            report(f"MLP from the {label}, L1, inactive x{w:g}", as_arkit(train_mlp(Z, Y, w, args.steps)(Zt)))


if __name__ == "__main__":
    main()

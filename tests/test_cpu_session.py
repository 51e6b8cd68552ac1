"""tools/cpu_session.sh, the campaign's session recipe, printed instead of run (PRINT_ONLY=1)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "cpu_session.sh"


def _print(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PRINT_ONLY": "1", "PY": sys.executable, "J": "jmlr", "OUT": str(tmp_path / "s"),
            "HELDOUT": str(tmp_path / "heldout"), **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=full, capture_output=True, text=True, timeout=60)


def _commands(out: str) -> list[list[str]]:
    return [shlex.split(line) for line in out.splitlines() if line and "cpu_session:" not in line]


def test_the_recipe_continues_the_shipped_model_and_ships_the_registered_average(tmp_path):
    r = _print(tmp_path, TAG="zz", NEW_PACKS="v:pack_new:11:40000 legacy:pack_old:12:30000",
               TRAIN_PACKS="pack_a pack_new", CYCLES="30,20,10")
    assert r.returncode == 0, r.stderr
    cmds = _commands(r.stdout)
    out = str(tmp_path / "s")
    synth = next(c for c in cmds if "synth" in c)  # the held-out set is missing: made with its seed
    assert synth[:3] == ["env", "JMLR_SYNTH_HEADS=legacy", "JMLR_SYNTH_WORLD=legacy"]
    assert synth[synth.index("--seed") + 1] == "777"
    packs = [c for c in cmds if c[:2] == ["jmlr", "pack"]]
    assert [(c[c.index("--out") + 1], c[c.index("--seed") + 1]) for c in packs] == [
        ("data/pack_new", "11"), ("data/pack_old", "12")]
    assert "--heads" not in packs[0] and packs[1][packs[1].index("--heads") + 1] == "legacy"
    train = next(c for c in cmds if c[:2] == ["jmlr", "train"])
    assert train[train.index("--init") + 1] == f"{out}/shipped"
    assert train[train.index("--cycles") + 1] == "30,20,10"
    assert "freeze_bn=false" in train  # BatchNorm on batch statistics unless FREEZE_BN=true
    assert train[train.index("--packs") + 1:train.index("--packs") + 3] == ["data/pack_a", "data/pack_new"]
    ends = [f"{out}/store/jmlr_mnv2_128_cpu_zz_c{k}" for k in (1, 2, 3)]
    averages = [c for c in cmds if c[:2] == ["jmlr", "average"]]
    candidate, shipping = averages[0], averages[-1]
    for c in (candidate, shipping):
        assert c[2:6] == [f"{out}/shipped", *ends]
        w = [float(x) for x in c[c.index("--weights") + 1:c.index("--weights") + 5]]
        assert w == [0.5, 0.5 / 3, 0.5 / 3, 0.5 / 3]
    assert shipping[shipping.index("--name") + 1] == "jmlr_mnv2_128_cpu" and "--set-default" in shipping
    assert shipping[shipping.index("--metrics") + 1] == f"{out}/eval_candidate.json"
    evals = {c[c.index("--json") + 1] for c in cmds if c[:2] == ["jmlr", "eval"]}
    assert {f"{out}/eval_c{k}.json" for k in (1, 2, 3)} | {f"{out}/eval_candidate.json"} <= evals


def test_the_recipe_refuses_an_unknown_pack_spec_and_a_missing_tag(tmp_path):
    r = _print(tmp_path, TAG="zz", NEW_PACKS="hd:pack_x:1:10", TRAIN_PACKS="pack_x")
    assert r.returncode == 2 and "unknown pack spec hd" in r.stderr
    env = {k: v for k, v in os.environ.items() if k != "TAG"}
    r = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env={**env, "PRINT_ONLY": "1", "TRAIN_PACKS": "p",
                       "OUT": str(tmp_path / "s")}, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "set TAG" in r.stderr


def test_freeze_bn_is_a_knob(tmp_path):
    r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", CYCLES="10", FREEZE_BN="true")
    assert r.returncode == 0, r.stderr
    train = next(c for c in _commands(r.stdout) if c[:2] == ["jmlr", "train"])
    assert "freeze_bn=true" in train and "freeze_bn=false" not in train


def test_the_weight_on_the_shipped_model_is_a_knob(tmp_path):
    r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", CYCLES="10,10,10", SHIPPED_WEIGHT="0.7")
    assert r.returncode == 0, r.stderr
    cmds = _commands(r.stdout)
    assert not any(str(tmp_path / "val") in c for c in cmds)
    for c in [c for c in cmds if c[:2] == ["jmlr", "average"] and "--weights" in c]:
        w = [float(x) for x in c[c.index("--weights") + 1:c.index("--weights") + 5]]
        assert w == [0.7] + [(1 - 0.7) / 3] * 3
    r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", SHIPPED_WEIGHT="1.2")
    assert r.returncode == 2 and "SHIPPED_WEIGHT must be in [0, 1) or val" in r.stderr


def test_a_weight_chosen_on_the_validation_set_never_on_the_held_out_one(tmp_path):
    val = str(tmp_path / "val")
    r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", CYCLES="10,10", SHIPPED_WEIGHT="val",
               SOUP_GRID="0.6 0.8", VALIDATION=val)
    assert r.returncode == 0, r.stderr
    cmds = _commands(r.stdout)
    out = str(tmp_path / "s")
    synth = next(c for c in cmds if "synth" in c and val in c)  # missing: made with its own seed
    assert synth[synth.index("--seed") + 1] == "778"
    soups = [c for c in cmds if c[:2] == ["jmlr", "average"] and c[c.index("--name") + 1].startswith("soup_w")]
    assert [[float(x) for x in c[c.index("--weights") + 1:c.index("--weights") + 4]] for c in soups] == [
        [w, (1 - w) / 2, (1 - w) / 2] for w in (0.6, 0.8)]
    scored = {(c[c.index("--model") + 1], c[c.index("--data") + 1]) for c in cmds if c[:2] == ["jmlr", "eval"]}
    assert {(f"{out}/store/soup_w0.6", val), (f"{out}/store/soup_w0.8", val)} <= scored
    assert not any(m.startswith(f"{out}/store/soup_w") and d != val for m, d in scored)
    candidate = next(c for c in cmds if c[:2] == ["jmlr", "average"] and c[c.index("--name") + 1] == "candidate")
    assert float(candidate[candidate.index("--weights") + 1]) == 0.6  # PRINT_ONLY cannot score: the grid's first


def test_the_validation_sets_seed_and_size_are_knobs(tmp_path):
    val = str(tmp_path / "val_l")
    r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", CYCLES="10", SHIPPED_WEIGHT="val", VALIDATION=val,
               VALIDATION_SEED="779", VALIDATION_SUBJECTS="120")
    assert r.returncode == 0, r.stderr
    synth = next(c for c in _commands(r.stdout) if "synth" in c and val in c)
    assert synth[synth.index("--seed") + 1] == "779"
    assert synth[synth.index("--subjects") + 1] == "120"
    heldout = next(c for c in _commands(r.stdout) if "synth" in c and str(tmp_path / "heldout") in c)
    assert heldout[heldout.index("--seed") + 1] == "777"  # the held-out set never moves


def test_a_validation_set_on_the_held_out_seed_is_refused_before_any_work(tmp_path):
    for seed, subjects in [("777", "40"), ("x", "40"), ("779", "0")]:
        r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", SHIPPED_WEIGHT="val", VALIDATION_SEED=seed,
                   VALIDATION_SUBJECTS=subjects)
        assert r.returncode == 2 and "VALIDATION_SEED must be a seed other than" in r.stderr, (seed, r.stderr)
        assert r.stdout == ""


def test_a_whole_scored_set_is_kept_and_a_cut_off_one_rendered_again(tmp_path):
    whole, cut = tmp_path / "heldout", tmp_path / "val"
    (whole / "list").mkdir(parents=True)
    (whole / "list" / "all.csv").write_text("subject,action,img_id\n")
    (cut / "image").mkdir(parents=True)  # images, and no list: the session ended while it rendered
    r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", CYCLES="10", SHIPPED_WEIGHT="val", VALIDATION=str(cut))
    assert r.returncode == 0, r.stderr
    cmds = _commands(r.stdout)
    assert not any("synth" in c and str(whole) in c for c in cmds)
    assert "validation set" in r.stdout and "unfinished, rendered again" in r.stdout
    remove = cmds.index(["rm", "-rf", str(cut)])
    synth = next(i for i, c in enumerate(cmds) if "synth" in c and str(cut) in c)
    assert remove < synth


def test_the_next_sessions_packs_are_rendered_after_the_ship(tmp_path):
    r = _print(tmp_path, TAG="zz", NEW_PACKS="v:pack_new:11:40000", TRAIN_PACKS="pack_new",
               CYCLES="10", NEXT_PACKS="v:pack_next:13:40000 legacy:pack_next_old:14:30000")
    assert r.returncode == 0, r.stderr
    cmds = _commands(r.stdout)
    packs = [i for i, c in enumerate(cmds) if c[:2] == ["jmlr", "pack"]]
    assert [cmds[i][cmds[i].index("--out") + 1] for i in packs] == [
        "data/pack_new", "data/pack_next", "data/pack_next_old"]
    ship = next(i for i, c in enumerate(cmds) if c[:2] == ["jmlr", "average"] and "--set-default" in c)
    assert packs[0] < ship < packs[1]  # the next session's packs come last: the ship does not wait on them
    assert cmds[packs[2]][cmds[packs[2]].index("--heads") + 1] == "legacy"


def test_malformed_packs_and_a_seed_given_twice_are_refused_before_any_work(tmp_path):
    for packs, message in [("v:pack_a:x:100", "a pack is SPEC:NAME:SEED:IMAGES"),
                           ("v:pack_a:5", "a pack is SPEC:NAME:SEED:IMAGES"),
                           ("hd:pack_a:5:100", "unknown pack spec hd")]:
        r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", NEXT_PACKS=packs)
        assert r.returncode == 2 and message in r.stderr, (packs, r.stderr)
        assert r.stdout == ""  # not even the held-out set
    r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", NEW_PACKS="v:pack_a:15:100",
               NEXT_PACKS="legacy:pack_b:15:100")
    assert r.returncode == 2 and "pack seed 15 given twice" in r.stderr


def test_a_pack_may_name_its_stored_size(tmp_path):
    r = _print(tmp_path, TAG="zz", NEW_PACKS="v:pack_sharp:11:100:184 legacy:pack_old:12:100",
               TRAIN_PACKS="pack_sharp pack_old", CYCLES="10")
    assert r.returncode == 0, r.stderr
    packs = {c[c.index("--out") + 1]: c for c in _commands(r.stdout) if c[:2] == ["jmlr", "pack"]}
    assert packs["data/pack_sharp"][packs["data/pack_sharp"].index("--size") + 1] == "184"
    assert packs["data/pack_old"][packs["data/pack_old"].index("--size") + 1] == "160"  # the default
    for packs, message in [("v:pack_a:5:100:96", "SIZE 96 is under the 128 px training crop"),
                           ("v:pack_a:5:100:big", "a pack is SPEC:NAME:SEED:IMAGES[:SIZE]")]:
        r = _print(tmp_path, TAG="zz", TRAIN_PACKS="pack_a", NEW_PACKS=packs)
        assert r.returncode == 2 and message in r.stderr, (packs, r.stderr)
        assert r.stdout == ""


def test_a_finished_pack_is_kept_and_an_unfinished_one_resumed(tmp_path):
    import json
    import shutil

    names = {"pack_zz_done": 2, "pack_zz_half": 1}  # chunks finished, of two
    folders = [REPO / "data" / n for n in names]
    try:
        for folder, done in zip(folders, names.values()):
            folder.mkdir(parents=True)
            (folder / "pack.json").write_text(json.dumps(
                {"format": "jmlr-pack-v1", "chunks": ["chunk_00000", "chunk_00001"], "size": 184}))
            for k in range(done):
                (folder / f"chunk_0000{k}").mkdir()
                (folder / f"chunk_0000{k}" / "chunk.json").write_text("{}")
        r = _print(tmp_path, TAG="zz", NEW_PACKS="v:pack_zz_done:91:2000:184 v:pack_zz_half:92:2000:184",
                   TRAIN_PACKS="pack_zz_done pack_zz_half", CYCLES="10")
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    assert "data/pack_zz_done exists: kept" in r.stdout
    assert "pack data/pack_zz_half (v, seed 92, 2000 crops of 184 px): resumed" in r.stdout
    packs = [c[c.index("--out") + 1] for c in _commands(r.stdout) if c[:2] == ["jmlr", "pack"]]
    assert packs == ["data/pack_zz_half"]

"""The ``jmlr`` command line's own behaviour: bad input is one line and exit code 2, never a
traceback; counts must be positive."""

from __future__ import annotations

import pytest

from jmlr.cli import main


@pytest.mark.parametrize("argv, says", [
    (["eval", "--model", "no-such-model", "--data", "."], "no such model folder"),
    (["eval", "--oracle", "--data", "no-such-dir"], "no-such-dir"),
    (["model-info", "no-such-arch"], "unknown model 'no-such-arch'"),
    (["train", "--config", "no-such-config"], "train config 'no-such-config' not found"),
])
def test_bad_input_is_one_line_and_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jmlr {argv[0]}: error: ") and says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_bug_keeps_its_traceback(monkeypatch):
    import jmlr.models.cli as model_cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(model_cli, "register", lambda sub: sub.add_parser("model-info").set_defaults(func=broken))
    with pytest.raises(ZeroDivisionError):
        main(["model-info"])


@pytest.mark.parametrize("argv", [
    ["pack", "--out", "x", "--images", "0"],
    ["synth", "--out", "x", "--subjects", "0"],
    ["synth", "--out", "x", "--per-subject", "-3"],
])
def test_counts_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err

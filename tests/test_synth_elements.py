"""The spec language shared by the head and world configs (`jmlr.synth.elements`)."""

import dataclasses

import pytest

from jmlr.synth.heads import HEADS_ENV, HeadConfig
from jmlr.synth.world import WORLD_ENV, WorldConfig

CASES = [(HeadConfig, HEADS_ENV, "hair", "makeup"), (WorldConfig, WORLD_ENV, "glasses", "hat")]


@pytest.mark.parametrize("cls, env, a, b", CASES)
def test_parse_keywords_overrides_and_json(cls, env, a, b):
    assert cls.parse(None) == cls.parse("") == cls.parse("default") == cls.parse("on") == cls()
    assert cls.parse("off") == cls.parse("legacy") == cls.legacy()
    assert not cls.legacy().any and cls().any
    assert cls.parse(f"{a}=0, {b} = 0.5") == dataclasses.replace(cls(), **{a: 0.0, b: 0.5})
    # the keyword applies wherever it stands; overrides apply on top of it
    only_a = dataclasses.replace(cls.legacy(), **{a: 1.0})
    assert cls.parse(f"legacy,{a}=1") == cls.parse(f"{a}=1,legacy") == only_a
    assert cls.parse(f'{{"{a}": 0.25}}') == dataclasses.replace(cls(), **{a: 0.25})


@pytest.mark.parametrize("cls, env, a, b", CASES)
def test_parse_refuses_bad_specs_with_the_element_named(cls, env, a, b):
    with pytest.raises(ValueError, match=r"unknown .* element 'wings'"):
        cls.parse("wings=1")
    with pytest.raises(ValueError, match=f"'{a}'.*probability"):
        cls.parse(f"{a}=lots")
    with pytest.raises(ValueError, match=f"outside \\[0, 1\\].*{a}"):
        cls.parse(f"{a}=1.5")
    with pytest.raises(ValueError, match="outside"):
        cls(**{b: -0.1})


@pytest.mark.parametrize("cls, env, a, b", CASES)
def test_from_env_reads_its_own_variable(monkeypatch, cls, env, a, b):
    monkeypatch.delenv(HEADS_ENV, raising=False)
    monkeypatch.delenv(WORLD_ENV, raising=False)
    assert cls.from_env() == cls()
    monkeypatch.setenv(env, f"legacy,{a}=1")
    assert cls.from_env() == dataclasses.replace(cls.legacy(), **{a: 1.0})
    other = WORLD_ENV if env == HEADS_ENV else HEADS_ENV
    monkeypatch.setenv(env, "")
    monkeypatch.setenv(other, "legacy")
    assert cls.from_env() == cls()

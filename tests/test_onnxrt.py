"""The ONNX Runtime session pool: as many calls at once as sessions, never more."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from jmlr import onnxrt
from jmlr.onnxrt import OrtOptions, SessionPool


class _FakeSession:
    """Counts how many calls run at once across all fakes."""

    lock = threading.Lock()
    running = 0
    most = 0

    def __init__(self, options: OrtOptions) -> None:
        self.options = options

    def run(self, output_names, feeds):
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
        time.sleep(0.02)
        with cls.lock:
            cls.running -= 1
        return [id(self)]


@pytest.fixture()
def fake_sessions(monkeypatch):
    _FakeSession.running = _FakeSession.most = 0
    monkeypatch.setattr(onnxrt, "create_session", lambda model, options: _FakeSession(options))
    monkeypatch.setattr(onnxrt.os, "cpu_count", lambda: 4)
    return _FakeSession


@pytest.mark.parametrize("size", [1, 2, 3])
def test_pool_runs_as_many_calls_at_once_as_it_has_sessions(fake_sessions, size):
    pool = SessionPool(b"model", OrtOptions(), size)
    with ThreadPoolExecutor(8) as ex:
        used = list(ex.map(lambda _: pool.run(None, {})[0], range(24)))
    assert fake_sessions.most == size
    assert len(set(used)) == size
    assert pool._free.qsize() == size  # every session came back


def test_pool_splits_the_cores_unless_threads_are_given(fake_sessions):
    assert [s.options.threads for s in SessionPool(b"m", OrtOptions(), 2).sessions] == [2, 2]
    assert SessionPool(b"m", OrtOptions(), 1).sessions[0].options.threads == 0  # ORT: one per core
    assert SessionPool(b"m", OrtOptions(threads=3), 2).sessions[0].options.threads == 3
    with pytest.raises(ValueError, match="at least one"):
        SessionPool(b"m", OrtOptions(), 0)


def test_a_failing_call_gives_its_session_back(fake_sessions, monkeypatch):
    pool = SessionPool(b"m", OrtOptions(), 1)
    monkeypatch.setattr(pool.sessions[0], "run", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        pool.run(None, {})
    assert pool._free.qsize() == 1


def test_a_lone_call_runs_on_the_wide_session_and_overlapping_calls_on_the_narrow_ones(fake_sessions):
    pool = SessionPool(b"m", OrtOptions(), 2, wide_when_idle=True)
    assert pool.wide_session is not None and pool.wide_session.options.threads == 0  # all cores
    assert [s.options.threads for s in pool.sessions] == [2, 2]
    # one call after another: nothing else in flight, so always the wide session
    assert {pool.run(None, {})[0] for _ in range(5)} == {id(pool.wide_session)}
    # many at once: the first may take the wide one, the others wait for narrow ones
    with ThreadPoolExecutor(8) as ex:
        used = list(ex.map(lambda _: pool.run(None, {})[0], range(24)))
    assert fake_sessions.most <= 3
    assert {id(s) for s in pool.sessions} <= set(used)
    assert used.count(id(pool.wide_session)) < len(used) // 2
    assert pool._free.qsize() == 2 and pool._in_flight == 0 and not pool._wide_free.locked()


def test_no_wide_session_for_a_single_session_or_by_default(fake_sessions):
    assert SessionPool(b"m", OrtOptions(), 1, wide_when_idle=True).wide_session is None
    assert SessionPool(b"m", OrtOptions(), 2).wide_session is None


def test_a_failing_wide_call_leaves_the_pool_usable(fake_sessions, monkeypatch):
    pool = SessionPool(b"m", OrtOptions(), 2, wide_when_idle=True)
    monkeypatch.setattr(pool.wide_session, "run", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        pool.run(None, {})
    assert pool._in_flight == 0 and not pool._wide_free.locked()

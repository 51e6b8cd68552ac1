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

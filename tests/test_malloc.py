"""glibc's malloc thresholds from Python: what `jmlr.malloc` sets is what glibc then does,
and the trainer sets it."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

_glibc_only = pytest.mark.skipif(platform.system() != "Linux" or not ctypes.util.find_library("c")
                                or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Allocates, touches and frees a 2 MB array 50 times; prints the minor page faults it took.
_LOOP = """
import resource, sys, numpy as np
from jmlr.malloc import keep_freed_memory, set_malloc_thresholds
assert (keep_freed_memory() if sys.argv[1] == "keep" else set_malloc_thresholds(mmap_bytes=1 << 20))
np.ones(1 << 18)  # numpy's own first-use allocations, outside the count
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    a = np.ones(1 << 18)  # 2 MB of float64, every page written
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _LOOP, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@_glibc_only
def test_kept_memory_is_reused_while_a_low_mmap_threshold_faults_every_block_in_again():
    mapped, kept = _faults("mmap"), _faults("keep")
    # Under a 1 MB mmap threshold each 2 MB block is a fresh mapping: 512 page faults a time.
    assert mapped > 50 * 256, mapped
    assert kept * 10 < mapped, (kept, mapped)


def test_a_training_run_keeps_freed_memory(monkeypatch):
    from jmlr.train import trainer

    calls = []
    monkeypatch.setattr(trainer, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    run = trainer._start_run({"device": "cpu", "threads": 0, "seed": 0, "topology": None})
    assert calls == [1] and run.device.type == "cpu"

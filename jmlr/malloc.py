"""glibc's malloc thresholds, set from Python (``mallopt``).

glibc serves a block above ``M_MMAP_THRESHOLD`` by ``mmap`` and unmaps it on free, and
gives the top of its heap back above ``M_TRIM_THRESHOLD``. A process that allocates and
frees blocks of a few MB in a loop (a training step's activations, a rendered image)
then faults every page of them in again each time. Raising both keeps freed memory in the
process for reuse; lowering the mmap threshold does the opposite, for a server that must
give memory back after a large request. No-op where ``mallopt`` is not glibc's (musl,
macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
# The highest mmap threshold glibc reaches by itself on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
KEEP_MMAP_THRESHOLD = 32 << 20


def set_malloc_thresholds(mmap_bytes: int | None = None, trim_bytes: int | None = None) -> bool:
    """Fix glibc's mmap and/or trim threshold (bytes; None leaves one as it is).

    Returns True when every given threshold was accepted, False when glibc refused one or
    the C library is not glibc. Fixing a threshold also stops glibc from moving it on its
    own (it raises the mmap threshold after the first large free).
    """
    try:
        # find_library needs ldconfig or a compiler, which slim images may lack.
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = True
        if trim_bytes is not None:
            ok = bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_bytes))) and ok
        if mmap_bytes is not None:
            ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_bytes))) and ok
    except (OSError, AttributeError):
        return False
    return ok


def keep_freed_memory() -> bool:
    """Keep freed blocks in the process (mmap threshold 32 MB, trim threshold 512 MB):
    for loops that free and reallocate the same large arrays (training steps, renderers)."""
    return set_malloc_thresholds(mmap_bytes=KEEP_MMAP_THRESHOLD, trim_bytes=512 << 20)

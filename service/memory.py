"""Give freed image memory back to the OS.

glibc serves large blocks by ``mmap`` (returned on free) only above a threshold that it
raises on its own, up to 32 MB, after the first large free. Pillow decodes in blocks of
up to 16 MB, so after one big image its blocks came from per-thread heaps and stayed
there: eight decompression bombs left 2.7 GB held after they were answered. A fixed
threshold keeps every large block on ``mmap``. No-op where ``mallopt`` is not glibc's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("service.memory")

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def return_large_blocks_to_os(threshold_bytes: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes``; True if it was set."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; freed image memory may stay in the process")
    return ok

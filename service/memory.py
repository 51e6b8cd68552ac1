"""Give freed image memory back to the OS.

glibc serves large blocks by ``mmap`` (returned on free) only above a threshold that it
raises on its own, up to 32 MB, after the first large free. Pillow decodes in blocks of
up to 16 MB, so after one big image its blocks came from per-thread heaps and stayed
there: eight decompression bombs left 2.7 GB held after they were answered. A fixed
threshold keeps every large block on ``mmap``. No-op where ``mallopt`` is not glibc's.
"""

from __future__ import annotations

import logging

from jmlr.malloc import set_malloc_thresholds

log = logging.getLogger("service.memory")


def return_large_blocks_to_os(threshold_bytes: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes``; True if it was set."""
    ok = set_malloc_thresholds(mmap_bytes=threshold_bytes)
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD) not applied (refused, or not glibc); "
                    "freed image memory may stay in the process")
    return ok

"""A bound on the pixels of images being decoded and held at once.

Decoding is where memory goes: a 105 kB PNG can decode to 36 Mpx (about 250 MB with
Pillow's buffer and the array), and eight of those at once took 2 GB. Each request
reserves its image's pixel count before decoding and returns it once its crops are cut;
requests beyond the budget wait their turn (first come, first served) for at most their
deadline. An image larger than the whole budget waits for the budget to be free, so it
still runs, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable


class PixelBudgetTimeout(Exception):
    """The deadline passed while waiting for decode room."""


class PixelBudget:
    """Weighted FIFO semaphore over pixels. Use from one event loop."""

    def __init__(self, budget: int, on_change: Callable[[int], None] | None = None) -> None:
        if budget < 1:
            raise ValueError("the pixel budget must be at least 1")
        self.budget = int(budget)
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()
        self._on_change = on_change

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.in_use)

    def _grant(self) -> None:
        # Strict FIFO: a big image at the head is not overtaken forever by small ones.
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if self.in_use + n > self.budget:
                break
            self._waiters.popleft()
            self.in_use += n
            fut.set_result(None)
        self._changed()

    async def acquire(self, pixels: int, timeout_s: float) -> int:
        """Reserve ``min(pixels, budget)``; returns the amount to ``release`` later.
        Raises ``PixelBudgetTimeout`` if it is not free within ``timeout_s``."""
        n = max(1, min(int(pixels), self.budget))
        if not self._waiters and self.in_use + n <= self.budget:
            self.in_use += n
            self._changed()
            return n
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), max(0.0, timeout_s))
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if fut.done() and not fut.cancelled():
                self.in_use -= n  # granted in the same instant it gave up: hand it back
            else:
                fut.cancel()
            self._grant()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise PixelBudgetTimeout(
                f"no room to decode {pixels} pixels in time ({self.in_use} of {self.budget} "
                f"in use, {len(self._waiters)} waiting)"
            ) from None
        return n

    def release(self, n: int) -> None:
        self.in_use -= n
        self._grant()

    @contextlib.asynccontextmanager
    async def reserve(self, pixels: int, timeout_s: float) -> AsyncIterator[None]:
        """``async with`` form of ``acquire``/``release``."""
        n = await self.acquire(pixels, timeout_s)
        try:
            yield
        finally:
            self.release(n)

"""Admission control: decide at the door, before reading a body, whether a request can
be served within its deadline.

The controller counts admitted requests still in flight and measures how fast they
finish while the service is busy (completions per busy second, smoothed). A newcomer is
expected to finish after about ``(in_flight + 1) / throughput`` seconds; when that is
beyond ``target_s`` (by default 3/4 of the request deadline, leaving room for its error),
or ``max_in_flight`` requests are already in, it is refused at once with a Retry-After
instead of queueing for a 504. Until the first measurement only ``max_in_flight`` limits,
and a request that finds nothing in flight is always admitted (so a slow machine serves
one at a time instead of none, and the measurement keeps being renewed).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    admitted: bool
    retry_after_s: float = 0.0
    reason: str = ""  # "capacity" (max_in_flight) or "latency" (expected wait beyond target)
    expected_s: float | None = None


class AdmissionController:
    def __init__(
        self,
        max_in_flight: int,
        target_s: float,
        window_s: float = 1.0,
        smoothing: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1 or target_s <= 0:
            raise ValueError("max_in_flight must be >= 1 and target_s > 0")
        self.max_in_flight = max_in_flight
        self.target_s = target_s
        self.window_s = window_s
        self.smoothing = smoothing
        self._clock = clock
        self._lock = threading.Lock()
        self.in_flight = 0
        self.throughput: float | None = None  # completions per busy second, smoothed
        self._window_start = clock()
        self._window_done = 0
        self._busy_s = 0.0
        self._last_change = self._window_start

    # ------------------------------------------------------------------ accounting
    def _tick(self, now: float) -> None:
        """Close the busy-time interval up to now, and the measurement window if it is over."""
        if self.in_flight > 0:
            self._busy_s += now - self._last_change
        self._last_change = now
        if now - self._window_start < self.window_s:
            return
        # Only windows that were mostly busy say anything about capacity.
        if self._busy_s >= 0.5 * (now - self._window_start) and self._window_done > 0:
            rate = self._window_done / self._busy_s
            a = self.smoothing
            self.throughput = rate if self.throughput is None else (1 - a) * self.throughput + a * rate
        self._window_start, self._window_done, self._busy_s = now, 0, 0.0

    def expected_s(self) -> float | None:
        """Expected time for one more request to finish, or None before any measurement."""
        if not self.throughput:
            return None
        return (self.in_flight + 1) / self.throughput

    # ------------------------------------------------------------------ decisions
    def try_admit(self) -> Decision:
        with self._lock:
            now = self._clock()
            self._tick(now)
            if self.in_flight >= self.max_in_flight:
                wait = self.in_flight / self.throughput if self.throughput else 1.0
                return Decision(False, max(1.0, wait - self.target_s), "capacity", self.expected_s())
            expected = self.expected_s()
            # With nothing in flight there is nothing to wait for: admit, whatever the
            # estimate says. This also keeps the estimate alive: refusing everything
            # would leave it stale (and every request refused) forever.
            if self.in_flight > 0 and expected is not None and expected > self.target_s:
                return Decision(False, max(1.0, expected - self.target_s), "latency", expected)
            self.in_flight += 1
            return Decision(True, expected_s=expected)

    def release(self, completed: bool = True) -> None:
        """One admitted request left. ``completed``: it did its work (counts towards the
        throughput); False for work that was dropped (client gone, deadline)."""
        with self._lock:
            now = self._clock()
            if completed:
                self._window_done += 1  # it was in flight up to now: it belongs to this window
            self._tick(now)
            self.in_flight -= 1

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))

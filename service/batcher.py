"""Dynamic batching of face crops across concurrent requests (after Triton's batcher).

A crop waits in one bounded queue; one worker thread takes a batch when either
``max_batch_size`` crops are waiting or the oldest crop has waited
``max_queue_delay``, whichever comes first, and runs the model off the event loop.
A full queue refuses new work at once (the caller answers 503 + Retry-After) rather
than letting latency grow without bound; crops whose request deadline has passed are
dropped before they cost a forward pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .metrics import Metrics

log = logging.getLogger("service.batcher")

# crops (B, S, S, 3) uint8, flip_tta -> per-crop outputs, each (B, ...) or None (a model
# without that output): (verts, points) or (verts, points, expression).
PredictFn = Callable[[np.ndarray, bool], Sequence[np.ndarray | None]]
Outputs = tuple[np.ndarray | None, ...]


class QueueFullError(Exception):
    """The batcher queue cannot take the crops; retry later."""


class DeadlineExceededError(Exception):
    """The request's deadline passed before its crops were inferred."""


class BatcherStoppedError(Exception):
    """The batcher was shut down."""


class InferenceError(Exception):
    """The model failed on a batch, or returned the wrong number of rows."""


@dataclass(eq=False)  # identity semantics: items hold arrays, and are found by identity
class _Item:
    crop: np.ndarray
    flip_tta: bool
    deadline: float  # time.monotonic()
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # set by the request when it gave up


def _post(item: _Item, value=None, exc: BaseException | None = None) -> None:
    """Hand a result to the item's event loop from the worker thread."""
    if item.abandoned:
        return
    # RuntimeError: the loop closed meanwhile (client gone, test over): nobody to tell.
    with contextlib.suppress(RuntimeError):
        item.loop.call_soon_threadsafe(_resolve, item.future, value, exc)


def _resolve(fut: asyncio.Future, value=None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class DynamicBatcher:
    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int = 8,
        max_queue_delay_s: float = 0.005,
        max_queue_size: int = 64,
        metrics: Metrics | None = None,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.metrics = metrics
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="jmlr-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._running = False
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for item in pending:
            _post(item, None, BatcherStoppedError("server shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def alive(self) -> bool:
        """True while the worker thread runs; readiness fails when it does not."""
        return self._running and self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ request side
    async def submit(self, crops: np.ndarray, flip_tta: bool, deadline: float) -> Outputs:
        """Infer crops (k, S, S, 3) uint8; returns the model's outputs for them, each with k
        rows: (verts (k, N, 3), points (k, N, 2)[, expression (k, E) or None]).

        Raises QueueFullError at once when the queue has no room for all k crops (a
        request is admitted whole or not at all), DeadlineExceededError when the
        deadline passes first.
        """
        if len(crops) == 0:
            raise ValueError("no crops")
        loop = asyncio.get_running_loop()
        items = [_Item(c, flip_tta, deadline, loop.create_future(), loop) for c in crops]
        with self._cond:
            if not self._running:
                raise BatcherStoppedError("the batcher is not running")
            if len(self._queue) + len(items) > self.max_queue_size:
                raise QueueFullError(
                    f"inference queue is full ({len(self._queue)}/{self.max_queue_size} crops waiting)"
                )
            self._queue.extend(items)
            self._set_depth()
            self._cond.notify_all()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(i.future for i in items)), timeout=max(0.0, deadline - time.monotonic())
            )
        except asyncio.TimeoutError:
            raise DeadlineExceededError("the request deadline passed while waiting for inference") from None
        finally:
            with self._cond:
                for i in items:
                    i.abandoned = True
                # Give the room back now rather than when the worker next looks.
                if any(not i.future.done() for i in items):
                    self._queue = deque(q for q in self._queue if not q.abandoned)
                    self._set_depth()
        return tuple(None if results[0][j] is None else np.stack([r[j] for r in results])
                     for j in range(len(results[0])))

    # ------------------------------------------------------------------ worker side
    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._queue))

    def _take_batch(self) -> list[_Item] | None:
        with self._cond:
            while self._running and not self._queue:
                self._cond.wait()
            if not self._running:
                return None
            # Wait for a full batch, but never longer than the delay since the oldest arrived.
            oldest = self._queue[0].enqueued
            while self._running and len(self._queue) < self.max_batch_size:
                remaining = oldest + self.max_queue_delay_s - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if not self._running:
                return None
            # One forward pass has one flip_tta setting: batch the head's kind, leave the rest queued.
            flip = self._queue[0].flip_tta
            batch: list[_Item] = []
            rest: deque[_Item] = deque()
            now = time.monotonic()
            while self._queue:
                item = self._queue.popleft()
                if item.abandoned or item.deadline <= now:
                    _post(item, None, DeadlineExceededError("deadline passed in the queue"))
                elif item.flip_tta == flip and len(batch) < self.max_batch_size:
                    batch.append(item)
                else:
                    rest.append(item)
            self._queue = rest
            self._set_depth()
            return batch

    def _loop(self) -> None:
        while True:
            try:
                batch = self._take_batch()
            except Exception:  # a bug in the queue logic must not kill the worker for good
                log.exception("batcher worker: taking a batch failed")
                time.sleep(0.01)
                continue
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        start = time.monotonic()
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch))
            for item in batch:
                self.metrics.queue_wait.observe(start - item.enqueued)
        try:
            outputs = tuple(self.predict(np.stack([i.crop for i in batch]), batch[0].flip_tta))
            # A model that returns fewer (or more) rows than crops would hand one request
            # another's face, or none; refuse the whole batch instead.
            rows = [len(o) for o in outputs if o is not None]
            if len(outputs) < 2 or outputs[0] is None or outputs[1] is None or any(r != len(batch) for r in rows):
                raise InferenceError(
                    f"the model returned {len(outputs)} outputs with {rows} rows for a batch of {len(batch)} crops"
                )
        except Exception as exc:  # surface to every waiting request, keep the worker alive
            log.exception("inference failed for a batch of %d", len(batch))
            err = exc if isinstance(exc, InferenceError) else InferenceError(f"{type(exc).__name__}: {exc}")
            for item in batch:
                _post(item, None, err)
            return
        for k, item in enumerate(batch):
            _post(item, tuple(None if o is None else o[k] for o in outputs))

"""The keyed work queue shared by all controllers of the process (yoke's one global queue).

The manager (``core.controller``) puts ``QueueKey`` items in and its workers
take them out. Guarantees, as in yoke's ``pkg/k8s/ctrl`` and client-go's
workqueue: an item waiting in the queue is not added twice; an item is never
handed to two workers at once (an add while it is processed marks it dirty and
it comes back once when ``done`` is called); items come out in FIFO order;
``add_after`` keeps one timer per item (the earlier wins) and the timer is
cancelled when the item starts processing. ``done`` turns the outcome of a
reconcile into a requeue: errors back off ``min(2**attempts, 900)`` seconds
with ±10 % jitter, rounded to whole seconds. Time (``Clock``) and jitter
(``random.Random``) are injectable for tests.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from atc.model.clock import Clock, MonotonicClock
from atc_controller import metrics

MAX_BACKOFF_SECONDS = 900.0
BACKOFF_JITTER = 0.10


@dataclass(frozen=True)
class QueueKey:
    """One unit of work: a controller's name and the key of the object it reconciles."""

    controller: str
    key: str

    def __str__(self) -> str:
        return f"{self.controller} {self.key}"


class OutcomeKind(enum.Enum):
    SUCCESS = "success"
    ERROR = "error"
    TERMINAL = "terminal"


@dataclass(frozen=True)
class Outcome:
    """How processing an item ended; ``requeue_after`` (seconds) overrides the backoff when > 0."""

    kind: OutcomeKind
    requeue_after: float | None = None

    @classmethod
    def success(cls, requeue_after: float | None = None) -> Outcome:
        """Done; ``requeue_after`` > 0 looks again then, ``0`` after the current backoff."""
        return cls(OutcomeKind.SUCCESS, requeue_after)

    @classmethod
    def error(cls, requeue_after: float | None = None) -> Outcome:
        """A retryable failure: requeued after ``requeue_after`` or the backoff."""
        return cls(OutcomeKind.ERROR, requeue_after)

    @classmethod
    def terminal(cls, requeue_after: float | None = None) -> Outcome:
        """A non-retryable failure: requeued only when ``requeue_after`` > 0."""
        return cls(OutcomeKind.TERMINAL, requeue_after)


class QueueShutDownError(Exception):
    """Raised by ``WorkQueue.get`` once the queue is shut down."""


def backoff_delay(attempts: int, rng: random.Random) -> float:
    """``min(2**attempts, 900)`` seconds with ±10 % jitter, rounded half up to whole seconds (yoke's curve)."""
    base = min(2.0 ** min(attempts, 64), MAX_BACKOFF_SECONDS)
    jittered = base * (1.0 - BACKOFF_JITTER + 2.0 * BACKOFF_JITTER * rng.random())
    return float(math.floor(jittered + 0.5))


@dataclass
class _Timer:
    due: float
    task: asyncio.Task[None]


class WorkQueue:
    """Deduplicating FIFO of ``QueueKey`` with per-item timers, backoff and controller-runtime metrics."""

    def __init__(self, *, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self._clock: Clock = clock or MonotonicClock()
        self._rng = rng or random.Random()
        self._ready: deque[QueueKey] = deque()
        self._queued_at: dict[QueueKey, float] = {}
        self._processing: dict[QueueKey, float] = {}
        self._dirty: set[QueueKey] = set()
        self._timers: dict[QueueKey, _Timer] = {}
        self._attempts: dict[QueueKey, int] = {}
        self._instrumented: set[str] = set()
        self._wakeup = asyncio.Event()
        self._shut_down = False

    # --- adding -------------------------------------------------------------------------------------------------

    def add(self, item: QueueKey) -> None:
        """Enqueue ``item`` now, unless it is already waiting; while it is processed, mark it dirty instead."""
        if self._shut_down or item in self._queued_at:
            return
        self._instrument(item.controller)
        if item in self._processing:
            if item not in self._dirty:
                self._dirty.add(item)
                metrics.WORKQUEUE_ADDS.labels(item.controller).inc()
            return
        metrics.WORKQUEUE_ADDS.labels(item.controller).inc()
        self._push(item)

    def add_after(self, item: QueueKey, delay: float) -> None:
        """Enqueue ``item`` after ``delay`` seconds; of two pending timers for one item the earlier wins."""
        if self._shut_down:
            return
        if delay <= 0:
            self.add(item)
            return
        due = self._clock.now() + delay
        timer = self._timers.get(item)
        if timer is not None:
            if timer.due <= due:
                return
            timer.task.cancel()
        task = asyncio.get_running_loop().create_task(self._fire_at(item, due), name=f"workqueue timer {item}")
        self._timers[item] = _Timer(due, task)

    async def _fire_at(self, item: QueueKey, due: float) -> None:
        await self._clock.sleep(max(0.0, due - self._clock.now()))
        timer = self._timers.get(item)
        if timer is not None and timer.task is asyncio.current_task():
            del self._timers[item]
        self.add(item)

    def _push(self, item: QueueKey) -> None:
        self._queued_at[item] = self._clock.now()
        self._ready.append(item)
        metrics.WORKQUEUE_DEPTH.labels(item.controller).inc()
        self._wakeup.set()

    # --- processing ---------------------------------------------------------------------------------------------

    async def get(self) -> QueueKey:
        """Wait for the next ready item (FIFO) and mark it as being processed; raises once shut down."""
        while True:
            if self._shut_down:
                raise QueueShutDownError
            if self._ready:
                return self._start(self._ready.popleft())
            self._wakeup.clear()
            await self._wakeup.wait()

    def _start(self, item: QueueKey) -> QueueKey:
        now = self._clock.now()
        queued_at = self._queued_at.pop(item)
        metrics.WORKQUEUE_DEPTH.labels(item.controller).dec()
        metrics.WORKQUEUE_QUEUE_DURATION.labels(item.controller).observe(now - queued_at)
        self._cancel_timer(item)
        self._processing[item] = now
        return item

    def done(self, item: QueueKey, outcome: Outcome) -> float | None:
        """Finish processing ``item``; returns the requeue delay in seconds (``None``: not requeued)."""
        try:
            started = self._processing.pop(item)
        except KeyError:
            raise ValueError(f"{item} is not being processed") from None
        metrics.WORKQUEUE_WORK_DURATION.labels(item.controller).observe(self._clock.now() - started)
        delay = self._requeue_delay(item, outcome)
        was_dirty = item in self._dirty
        self._dirty.discard(item)
        if self._shut_down:
            return delay
        if delay is not None:
            self.add_after(item, delay)
        if was_dirty:
            self._push(item)
        return delay

    def _requeue_delay(self, item: QueueKey, outcome: Outcome) -> float | None:
        attempts = self._attempts.pop(item, 0)
        explicit = outcome.requeue_after if outcome.requeue_after and outcome.requeue_after > 0 else None
        if outcome.kind is OutcomeKind.SUCCESS:
            if outcome.requeue_after is None:
                return None
            return explicit if explicit is not None else backoff_delay(attempts, self._rng)
        if outcome.kind is OutcomeKind.TERMINAL and explicit is None:
            return None
        self._attempts[item] = attempts + 1
        metrics.WORKQUEUE_RETRIES.labels(item.controller).inc()
        return explicit if explicit is not None else backoff_delay(attempts, self._rng)

    # --- housekeeping -------------------------------------------------------------------------------------------

    def attempts(self, item: QueueKey) -> int:
        """How many error requeues ``item`` has had since its last success."""
        return self._attempts.get(item, 0)

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    def forget_controller(self, name: str) -> None:
        """Drop everything of controller ``name`` that waits, is scheduled or is marked dirty."""
        self._drop_waiting(lambda item: item.controller == name)
        for item in [item for item in self._timers if item.controller == name]:
            self._cancel_timer(item)
        self._dirty = {item for item in self._dirty if item.controller != name}
        self._attempts = {item: n for item, n in self._attempts.items() if item.controller != name}

    def shutdown(self) -> None:
        """Stop accepting items, drop waiting and scheduled ones and wake every ``get``."""
        self._shut_down = True
        self._drop_waiting(lambda item: True)
        for item in list(self._timers):
            self._cancel_timer(item)
        self._dirty.clear()
        self._wakeup.set()

    def _drop_waiting(self, matches: Callable[[QueueKey], bool]) -> None:
        kept: deque[QueueKey] = deque()
        for item in self._ready:
            if matches(item):
                del self._queued_at[item]
                metrics.WORKQUEUE_DEPTH.labels(item.controller).dec()
            else:
                kept.append(item)
        self._ready = kept

    def _cancel_timer(self, item: QueueKey) -> None:
        timer = self._timers.pop(item, None)
        if timer is not None:
            timer.task.cancel()

    # --- metrics --------------------------------------------------------------------------------------------------

    def _instrument(self, controller: str) -> None:
        """Let the in-progress gauges of ``controller`` read this queue at scrape time."""
        if controller in self._instrumented:
            return
        self._instrumented.add(controller)
        metrics.WORKQUEUE_UNFINISHED_WORK.labels(controller).set_function(lambda: self._unfinished_seconds(controller))
        metrics.WORKQUEUE_LONGEST_RUNNING_PROCESSOR.labels(controller).set_function(
            lambda: self._longest_running_seconds(controller)
        )

    def _running_seconds(self, controller: str) -> list[float]:
        now = self._clock.now()
        return [now - started for item, started in self._processing.items() if item.controller == controller]

    def _unfinished_seconds(self, controller: str) -> float:
        return sum(self._running_seconds(controller))

    def _longest_running_seconds(self, controller: str) -> float:
        return max(self._running_seconds(controller), default=0.0)

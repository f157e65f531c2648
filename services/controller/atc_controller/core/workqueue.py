"""The keyed work queue of one controller (client-go's rate-limited workqueue; one per controller).

``core.queues.ControllerQueues`` creates one ``WorkQueue`` for every controller the
manager (``core.controller``) registers and takes keys from the queues in turn.
Guarantees, as in yoke's ``pkg/k8s/ctrl`` and client-go's workqueue: a key
waiting in the queue is not added twice; a key is never handed out twice at once
(an add while it is processed marks it dirty and it comes back once when ``done``
is called); keys come out in FIFO order; ``add_after`` keeps one timer per key
(the earlier wins) and the timer is cancelled when the key starts processing.
``done`` turns the outcome of a reconcile into a requeue: errors back off
``min(2**attempts, 900)`` seconds with ±10 % jitter, rounded to whole seconds.
The controller-runtime ``workqueue_*`` metrics are labelled with the queue's name.
Time (``Clock``) and jitter (``random.Random``) are injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
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
_GAUGES_READ_ON_SCRAPE = (
    metrics.WORKQUEUE_DEPTH,
    metrics.WORKQUEUE_UNFINISHED_WORK,
    metrics.WORKQUEUE_LONGEST_RUNNING_PROCESSOR,
)


class OutcomeKind(enum.Enum):
    SUCCESS = "success"
    ERROR = "error"
    TERMINAL = "terminal"


@dataclass(frozen=True)
class Outcome:
    """How processing a key ended; ``requeue_after`` (seconds) overrides the backoff when > 0."""

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
    """Deduplicating FIFO of one controller's keys with per-key timers, backoff and controller-runtime metrics.

    ``on_ready`` is called each time a key becomes ready to be taken (``ControllerQueues`` uses it to
    give the controller a turn).
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._clock: Clock = clock or MonotonicClock()
        self._rng = rng or random.Random()
        self._on_ready = on_ready or (lambda: None)
        self._ready: deque[str] = deque()
        self._backlog: deque[str] = deque()  # may hold stale entries: a key counts only while in _in_backlog
        self._in_backlog: set[str] = set()
        self._queued_at: dict[str, float] = {}
        self._processing: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._timers: dict[str, _Timer] = {}
        self._attempts: dict[str, int] = {}
        self._shut_down = False
        self._publish_gauges()

    # --- adding -------------------------------------------------------------------------------------------------

    def add(self, key: str, *, backlog: bool = False) -> None:
        """Enqueue ``key`` now, unless it is already waiting; while it is processed, mark it dirty instead.

        ``backlog``: a key with nothing new to act on (the initial list of a cache, a periodic resync)
        waits behind every other ready key, so a change made during a long backlog is not stuck
        behind it. A key waiting in the backlog moves ahead when a change comes for it.
        """
        if self._shut_down:
            return
        if key in self._queued_at:
            if not backlog and key in self._in_backlog:
                self._in_backlog.discard(key)
                self._ready.append(key)
            return
        if key in self._processing:
            if key not in self._dirty:
                self._dirty.add(key)
                metrics.WORKQUEUE_ADDS.labels(self.name).inc()
            return
        metrics.WORKQUEUE_ADDS.labels(self.name).inc()
        self._push(key, backlog=backlog)

    def add_after(self, key: str, delay: float) -> None:
        """Enqueue ``key`` after ``delay`` seconds; of two pending timers for one key the earlier wins."""
        if self._shut_down:
            return
        if delay <= 0:
            self.add(key)
            return
        due = self._clock.now() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.due <= due:
                return
            timer.task.cancel()
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._fire_at(key, due), name=f"workqueue timer {self.name} {key}")
        self._timers[key] = _Timer(due, task)

    async def _fire_at(self, key: str, due: float) -> None:
        await self._clock.sleep(max(0.0, due - self._clock.now()))
        timer = self._timers.get(key)
        if timer is not None and timer.task is asyncio.current_task():
            del self._timers[key]
        self.add(key)

    def _push(self, key: str, *, backlog: bool = False) -> None:
        self._queued_at[key] = self._clock.now()
        if backlog:
            self._in_backlog.add(key)
            self._backlog.append(key)
        else:
            self._ready.append(key)
        self._on_ready()

    # --- processing ---------------------------------------------------------------------------------------------

    def take(self) -> str | None:
        """The next ready key (FIFO, the backlog last), now marked as being processed; ``None`` when none is."""
        key = self._next_key()
        if key is None:
            return None
        now = self._clock.now()
        metrics.WORKQUEUE_QUEUE_DURATION.labels(self.name).observe(now - self._queued_at.pop(key))
        self._cancel_timer(key)
        self._processing[key] = now
        return key

    def _next_key(self) -> str | None:
        if self._ready:
            return self._ready.popleft()
        while self._backlog:
            key = self._backlog.popleft()
            if key in self._in_backlog:
                self._in_backlog.discard(key)
                return key
        return None

    def done(self, key: str, outcome: Outcome) -> float | None:
        """Finish processing ``key``; returns the requeue delay in seconds (``None``: not requeued)."""
        try:
            started = self._processing.pop(key)
        except KeyError:
            raise ValueError(f"{self.name} {key} is not being processed") from None
        metrics.WORKQUEUE_WORK_DURATION.labels(self.name).observe(self._clock.now() - started)
        delay = self._requeue_delay(key, outcome)
        was_dirty = key in self._dirty
        self._dirty.discard(key)
        if self._shut_down:
            return delay
        if delay is not None:
            self.add_after(key, delay)
        if was_dirty:
            self._push(key)
        return delay

    def _requeue_delay(self, key: str, outcome: Outcome) -> float | None:
        attempts = self._attempts.pop(key, 0)
        explicit = outcome.requeue_after if outcome.requeue_after and outcome.requeue_after > 0 else None
        if outcome.kind is OutcomeKind.SUCCESS:
            if outcome.requeue_after is None:
                return None
            return explicit if explicit is not None else backoff_delay(attempts, self._rng)
        if outcome.kind is OutcomeKind.TERMINAL and explicit is None:
            return None
        self._attempts[key] = attempts + 1
        metrics.WORKQUEUE_RETRIES.labels(self.name).inc()
        return explicit if explicit is not None else backoff_delay(attempts, self._rng)

    # --- state --------------------------------------------------------------------------------------------------

    def attempts(self, key: str) -> int:
        """How many error requeues ``key`` has had since its last success."""
        return self._attempts.get(key, 0)

    def __len__(self) -> int:
        """How many keys are ready to be taken."""
        return len(self._ready) + len(self._in_backlog)

    @property
    def in_flight(self) -> int:
        """How many keys are being processed (taken, not yet ``done``)."""
        return len(self._processing)

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    # --- shutting down ------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting keys; drop waiting, scheduled and dirty ones and the attempt counts.

        Keys in flight can still be marked ``done``; they are not requeued.
        """
        self._shut_down = True
        self._queued_at.clear()
        self._ready.clear()
        self._backlog.clear()
        self._in_backlog.clear()
        for key in list(self._timers):
            self._cancel_timer(key)
        self._dirty.clear()
        self._attempts.clear()

    def reopen(self) -> None:
        """Accept keys again (its controller is registered again while reconciles of the old one still run)."""
        self._shut_down = False

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.task.cancel()

    # --- metrics --------------------------------------------------------------------------------------------------

    def _publish_gauges(self) -> None:
        """Let the depth and in-progress gauges of this queue's name read this queue at scrape time."""
        metrics.WORKQUEUE_DEPTH.labels(self.name).set_function(lambda: float(len(self)))
        metrics.WORKQUEUE_UNFINISHED_WORK.labels(self.name).set_function(lambda: sum(self._running_seconds()))
        metrics.WORKQUEUE_LONGEST_RUNNING_PROCESSOR.labels(self.name).set_function(
            lambda: max(self._running_seconds(), default=0.0)
        )

    def withdraw_gauges(self) -> None:
        """Remove the gauges of this queue's name (its controller is gone); counters and histograms stay."""
        for gauge in _GAUGES_READ_ON_SCRAPE:
            with contextlib.suppress(KeyError):
                gauge.remove(self.name)

    def _running_seconds(self) -> list[float]:
        now = self._clock.now()
        return [now - started for started in self._processing.values()]

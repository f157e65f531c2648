"""The work queues of all controllers, and the round-robin in which the manager's workers take from them.

``core.controller.Manager`` opens one ``WorkQueue`` (``core.workqueue``) for each
controller it registers (airway, flight, clusterflight and one
``instance:<airway>`` per Airway) and forgets it when the controller is
unregistered. Its workers call ``get``: controllers with ready keys take turns,
one key per turn, so a controller with one ready key waits at most one round
behind a controller with thousands (docs/controller.md, "The core"). How many
keys are processed at once is bounded only by the number of workers.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from atc.model.clock import Clock, MonotonicClock

from .workqueue import Outcome, WorkQueue


@dataclass(frozen=True)
class QueueKey:
    """One unit of work: a controller's name and the key of the object it reconciles."""

    controller: str
    key: str

    def __str__(self) -> str:
        return f"{self.controller} {self.key}"


class QueueShutDownError(Exception):
    """Raised by ``ControllerQueues.get`` once the queues are shut down."""


class ControllerQueues:
    """One ``WorkQueue`` per controller; ``get`` hands out ready keys round-robin across controllers."""

    def __init__(self, *, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self._clock: Clock = clock or MonotonicClock()
        self._rng = rng
        self._queues: dict[str, WorkQueue] = {}
        self._retired: dict[str, WorkQueue] = {}  # forgotten while keys of them were still being processed
        self._turns: deque[str] = deque()  # controllers with ready keys, in the order of their next turn
        self._waiting_for_turn: set[str] = set()
        self._wakeup = asyncio.Event()
        self._shut_down = False

    # --- controllers --------------------------------------------------------------------------------------------

    def open(self, name: str) -> None:
        """Give controller ``name`` a queue (nothing once shut down: the next queues open it again).

        A controller registered again while keys of its forgotten queue are still processed gets that
        queue back, so a key is never processed twice at once.
        """
        if self._shut_down or name in self._queues:
            return
        queue = self._retired.pop(name, None)
        if queue is None:
            queue = WorkQueue(name, clock=self._clock, rng=self._rng, on_ready=self._turn_giver(name))
        queue.reopen()
        self._queues[name] = queue

    def forget(self, name: str) -> None:
        """Drop the queue of controller ``name``: its waiting, scheduled and dirty keys are gone.

        Keys being processed may still be marked ``done``; the queue is let go after the last one.
        """
        queue = self._queues.pop(name, None)
        if queue is None:
            return
        queue.shutdown()
        if queue.in_flight:
            self._retired[name] = queue
        else:
            queue.withdraw_gauges()

    def queue(self, name: str) -> WorkQueue | None:
        """The open queue of controller ``name``, if it has one."""
        return self._queues.get(name)

    @property
    def names(self) -> list[str]:
        """The controllers with an open queue."""
        return sorted(self._queues)

    # --- adding -------------------------------------------------------------------------------------------------

    def add(self, item: QueueKey, *, backlog: bool = False) -> None:
        """Enqueue ``item`` in its controller's queue (``backlog``: behind the rest, see ``WorkQueue.add``).

        Ignored when the controller has no queue.
        """
        queue = self._queues.get(item.controller)
        if queue is not None:
            queue.add(item.key, backlog=backlog)

    def add_after(self, item: QueueKey, delay: float) -> None:
        """Enqueue ``item`` after ``delay`` seconds; ignored when the controller has no queue."""
        queue = self._queues.get(item.controller)
        if queue is not None:
            queue.add_after(item.key, delay)

    # --- processing ---------------------------------------------------------------------------------------------

    async def get(self) -> QueueKey:
        """Wait for a ready key and take it from the controller whose turn it is; raises once shut down."""
        while True:
            if self._shut_down:
                raise QueueShutDownError
            item = self._take_next_turn()
            if item is not None:
                return item
            self._wakeup.clear()
            await self._wakeup.wait()

    def _take_next_turn(self) -> QueueKey | None:
        while self._turns:
            name = self._turns.popleft()
            queue = self._queues.get(name)
            key = queue.take() if queue is not None else None
            if queue is None or key is None:
                self._waiting_for_turn.discard(name)
                continue
            if len(queue):
                self._turns.append(name)
            else:
                self._waiting_for_turn.discard(name)
            return QueueKey(name, key)
        return None

    def _turn_giver(self, name: str) -> Callable[[], None]:
        """What a queue calls when a key of it becomes ready: the controller gets a turn, a worker wakes."""

        def give_turn() -> None:
            if name not in self._waiting_for_turn:
                self._waiting_for_turn.add(name)
                self._turns.append(name)
            self._wakeup.set()

        return give_turn

    def done(self, item: QueueKey, outcome: Outcome) -> float | None:
        """Finish processing ``item``; returns the requeue delay in seconds (``None``: not requeued)."""
        queue = self._queue_of(item.controller)
        if queue is None:
            raise ValueError(f"{item} is not being processed")
        delay = queue.done(item.key, outcome)
        if queue is self._retired.get(item.controller) and not queue.in_flight:
            del self._retired[item.controller]
            queue.withdraw_gauges()
        return delay

    def attempts(self, item: QueueKey) -> int:
        """How many error requeues ``item`` has had since its last success."""
        queue = self._queue_of(item.controller)
        return queue.attempts(item.key) if queue is not None else 0

    def _queue_of(self, name: str) -> WorkQueue | None:
        """The queue that hands out and takes back the keys of ``name``: its open one, else its retired one."""
        queue = self._queues.get(name)
        return queue if queue is not None else self._retired.get(name)

    def __len__(self) -> int:
        """How many keys are ready, over all controllers."""
        return sum(len(queue) for queue in self._queues.values())

    # --- shutting down ------------------------------------------------------------------------------------------

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    @property
    def all_open(self) -> bool:
        """Not shut down, and every controller's queue accepts keys."""
        return not self._shut_down and not any(queue.is_shut_down for queue in self._queues.values())

    def shutdown(self) -> None:
        """Stop handing out and accepting keys: every queue drops what waits, and every ``get`` wakes."""
        self._shut_down = True
        for queue in [*self._queues.values(), *self._retired.values()]:
            queue.shutdown()
        self._turns.clear()
        self._waiting_for_turn.clear()
        self._wakeup.set()

"""The manager: N workers that take keys off the controllers' work queues and run the registered reconcilers.

The service's startup code creates one ``Manager(workers=CONCURRENCY)``,
registers the Airway, Flight and ClusterFlight reconcilers, and the Airway
reconciler registers and unregisters the instance controller of each Airway
at run time (yoke's ``Register`` / ``ShutdownGK``). Each registered controller
has its own queue; the workers take ready keys from them round-robin
(``core.queues``). Reflector handlers and the webhook-signal watcher call
``enqueue``. ``reconcile_handler`` is the one place
where a reconcile's result or exception becomes a requeue decision, metrics
and the log lines ``processing event`` / ``reconcile successful`` /
``error processing event``. Exceptions never kill a worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from atc.k8s.client import KubeError
from atc.model.clock import Clock, MonotonicClock
from atc_controller import metrics

from .queues import ControllerQueues, QueueKey, QueueShutDownError
from .results import RequeueAfterError, Result, TerminalError
from .workqueue import Outcome, OutcomeKind

log = logging.getLogger("atc.controller")

_EXPECTED_ERRORS = (TerminalError, RequeueAfterError, KubeError)


class Reconciler(Protocol):
    """Brings the object named by ``key`` to its desired state; raises to be retried."""

    async def reconcile(self, key: str) -> Result: ...


@dataclass(frozen=True)
class KeyParts:
    """A queue key split for logging: ``<namespace>/<Kind.group>:<name>`` or ``<namespace>/<name>``."""

    namespace: str
    group_kind: str
    name: str


def split_key(key: str) -> KeyParts:
    """Split a reconcile key; cluster-scoped keys have an empty namespace."""
    namespace, slash, rest = key.partition("/")
    if not slash:
        namespace, rest = "", key
    group_kind, colon, name = rest.partition(":")
    if colon and group_kind[:1].isupper():
        return KeyParts(namespace, group_kind, name)
    return KeyParts(namespace, "", rest)


@dataclass(frozen=True)
class _Run:
    """What one reconcile call produced."""

    outcome: Outcome
    error: Exception | None
    elapsed: float


def result_label(outcome: Outcome) -> str:
    """controller-runtime's ``result`` label: success, error, requeue or requeue_after."""
    if outcome.kind is not OutcomeKind.SUCCESS:
        return "error"
    if outcome.requeue_after is None:
        return "success"
    return "requeue_after" if outcome.requeue_after > 0 else "requeue"


class Manager:
    """Owns a work queue per controller and ``workers`` worker tasks; runs reconcilers registered by name."""

    def __init__(self, workers: int, *, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._worker_count = workers
        self._clock: Clock = clock or MonotonicClock()
        self._rng = rng
        self._reconcilers: dict[str, Reconciler] = {}
        self._queues = self._new_queues()
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    def _new_queues(self) -> ControllerQueues:
        """Fresh queues, one open for every registered controller."""
        queues = ControllerQueues(clock=self._clock, rng=self._rng)
        for name in self._reconcilers:
            queues.open(name)
        return queues

    @property
    def queues(self) -> ControllerQueues:
        return self._queues

    @property
    def workers(self) -> int:
        return self._worker_count

    @property
    def running(self) -> bool:
        return not self._idle.is_set()

    # --- registry -----------------------------------------------------------------------------------------------

    def register(self, name: str, reconciler: Reconciler) -> None:
        """Give controller ``name`` a queue whose keys go to ``reconciler``; a name can be registered once."""
        if name in self._reconcilers:
            raise ValueError(f"controller {name!r} is already registered")
        self._reconcilers[name] = reconciler
        self._queues.open(name)

    def unregister(self, name: str) -> None:
        """Drop controller ``name`` and its queue (waiting and scheduled keys); a running reconcile finishes."""
        self._reconcilers.pop(name, None)
        self._queues.forget(name)

    def is_registered(self, name: str) -> bool:
        return name in self._reconcilers

    @property
    def controllers(self) -> list[str]:
        return sorted(self._reconcilers)

    def enqueue(self, name: str, key: str, *, backlog: bool = False) -> None:
        """Queue ``key`` for controller ``name`` (dropped with a warning when ``name`` is not registered).

        ``backlog``: nothing new happened to the object (a cache's initial list, a resync); it waits
        behind the keys of changes.
        """
        if self._accepts(name, key):
            self._queues.add(QueueKey(name, key), backlog=backlog)

    def enqueue_after(self, name: str, key: str, delay: float) -> None:
        """Queue ``key`` for controller ``name`` in ``delay`` seconds."""
        if self._accepts(name, key):
            self._queues.add_after(QueueKey(name, key), delay)

    def _accepts(self, name: str, key: str) -> bool:
        if name in self._reconcilers:
            return True
        log.warning("dropping event of unregistered controller", extra={"controller": name, "key": key})
        return False

    # --- running ------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the workers until ``stop`` (or cancellation, which stops at once).

        Items enqueued while the manager is not running wait in fresh queues for the next ``run``.
        """
        if not self._idle.is_set():
            raise RuntimeError("manager is already running")
        self._idle.clear()
        if self._queues.is_shut_down:
            self._queues = self._new_queues()
        queues = self._queues
        self._worker_tasks = [
            asyncio.create_task(self._work(queues), name=f"reconcile worker {n}") for n in range(self._worker_count)
        ]
        log.info("starting workers", extra={"workers": self._worker_count})
        try:
            await asyncio.gather(*self._worker_tasks, return_exceptions=True)
        finally:
            queues.shutdown()
            await self._cancel_workers()
            if self._queues is queues:
                self._queues = self._new_queues()
            self._idle.set()
            log.info("all workers finished")

    async def stop(self, *, now: bool = False) -> None:
        """Stop taking items; wait for running reconciles to finish, or cancel them at once when ``now``.

        A manager that is not running has nothing to stop: its queues, fresh for the next ``run``, stay
        open. (After a lost Lease the leader's clean-up calls this once ``run`` has already ended; shutting
        those fresh queues would drop every item the next term's reflectors list.)
        """
        if self._idle.is_set():
            return
        self._queues.shutdown()
        if now:
            await self._cancel_workers()
        await self._idle.wait()

    async def _cancel_workers(self) -> None:
        tasks, self._worker_tasks = self._worker_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _work(self, queues: ControllerQueues) -> None:
        while True:
            try:
                item = await queues.get()
            except QueueShutDownError:
                return
            await self.reconcile_handler(queues, item)

    # --- one item -----------------------------------------------------------------------------------------------

    async def reconcile_handler(self, queues: ControllerQueues, item: QueueKey) -> None:
        """Reconcile one item taken from ``queues`` and tell its queue how it went.

        An item only comes out of the queue of a registered controller; when that controller is
        unregistered (or replaced) during the reconcile, the outcome is not requeued.
        """
        reconciler = self._reconcilers[item.controller]
        fields = self._log_fields(queues, item)
        log.info("processing event", extra=fields)
        run = await self._reconcile(item, reconciler)
        outcome = run.outcome if self._reconcilers.get(item.controller) is reconciler else Outcome.success()
        delay = queues.done(item, outcome)
        self._count(item.controller, run.outcome)
        self._log_result(fields, run, delay)

    async def _reconcile(self, item: QueueKey, reconciler: Reconciler) -> _Run:
        started = self._clock.now()
        active = metrics.ACTIVE_WORKERS.labels(item.controller)
        active.inc()
        try:
            outcome, error = await self._call(reconciler, item.key)
        finally:
            active.dec()
            elapsed = self._clock.now() - started
            metrics.RECONCILE_TIME.labels(item.controller).observe(elapsed)
        return _Run(outcome, error, elapsed)

    @staticmethod
    async def _call(reconciler: Reconciler, key: str) -> tuple[Outcome, Exception | None]:
        try:
            result = await reconciler.reconcile(key)
            if not isinstance(result, Result):
                raise TypeError(f"reconcile returned {type(result).__name__}, not Result")
        except TerminalError as exc:
            return Outcome.terminal(exc.requeue_after), exc
        except RequeueAfterError as exc:
            return Outcome.error(exc.requeue_after), exc
        except Exception as exc:
            return Outcome.error(), exc
        return Outcome.success(result.requeue_after), None

    @staticmethod
    def _count(controller: str, outcome: Outcome) -> None:
        metrics.RECONCILE_TOTAL.labels(controller, result_label(outcome)).inc()
        if outcome.kind is not OutcomeKind.SUCCESS:
            metrics.RECONCILE_ERRORS.labels(controller).inc()
        if outcome.kind is OutcomeKind.TERMINAL:
            metrics.TERMINAL_RECONCILE_ERRORS.labels(controller).inc()

    @staticmethod
    def _log_fields(queues: ControllerQueues, item: QueueKey) -> dict[str, Any]:
        parts = split_key(item.key)
        fields: dict[str, Any] = {
            "controller": item.controller,
            "namespace": parts.namespace,
            "objectName": parts.name,
            "reconcileID": str(uuid.uuid4()),
            "attempt": queues.attempts(item),
        }
        if parts.group_kind:
            fields["groupKind"] = parts.group_kind
        return fields

    @staticmethod
    def _log_result(fields: dict[str, Any], run: _Run, delay: float | None) -> None:
        extra = {**fields, "elapsed": round(run.elapsed, 3)}
        if delay is not None:
            extra["requeueAfter"] = delay
        if run.error is None:
            log.info("reconcile successful", extra=extra)
            return
        extra["error"] = str(run.error) or type(run.error).__name__
        if isinstance(run.error, TerminalError):
            extra["terminal"] = True
        unexpected = not isinstance(run.error, _EXPECTED_ERRORS)
        log.error("error processing event", extra=extra, exc_info=run.error if unexpected else None)

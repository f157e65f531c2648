"""Writes the child-changed Events (``atc.k8s.signals``) off the admission path.

``SignalWriter.submit(change)`` puts the change on a bounded queue and returns
at once (it waits, at most ``full_wait`` seconds, only when the queue is full;
then the signal is dropped and logged). ``run()`` starts a few workers that
POST each Event, retrying API failures that may pass (connection errors, 429,
5xx) with backoff; every Event that cannot be written is logged with its
instance and child. ``close(timeout)`` lets the queue drain at shutdown.

The resources router submits; the server runs and closes the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.signals import ChildChange, child_changed_event
from atc.model.backoff import Backoff

from . import metrics

log = logging.getLogger("atc.webhook.signals")

WORKERS = 4
ATTEMPTS = 5
FIRST_RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 5.0
FULL_WAIT_SECONDS = 1.0
_RETRYABLE_STATUS = frozenset({0, 429, 500, 502, 503, 504})


def _describe(change: ChildChange) -> dict[str, str]:
    return {"instance": f"{change.instance_kind} {change.instance_key}", "child": change.child_ref}


class SignalWriter:
    """A bounded queue of child changes and the workers that record them as Events."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        reporting_instance: str,
        queue_size: int = 1000,
        workers: int = WORKERS,
        attempts: int = ATTEMPTS,
        full_wait: float = FULL_WAIT_SECONDS,
    ) -> None:
        self._kube = kube
        self._reporting_instance = reporting_instance
        self._queue: asyncio.Queue[ChildChange] = asyncio.Queue(maxsize=queue_size)
        self._workers = workers
        self._attempts = attempts
        self._full_wait = full_wait

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def submit(self, change: ChildChange) -> bool:
        """Queue ``change``; False (and logged) when the queue stayed full for ``full_wait`` seconds."""
        try:
            self._queue.put_nowait(change)
            return True
        except asyncio.QueueFull:
            pass
        try:
            await asyncio.wait_for(self._queue.put(change), self._full_wait)
            return True
        except TimeoutError:
            metrics.SIGNALS.labels(result="dropped").inc()
            log.error("signal queue full, child change not recorded", extra=_describe(change))
            return False

    async def run(self) -> None:
        """Write queued Events until cancelled."""
        workers = [asyncio.create_task(self._work(), name=f"signal writer {i}") for i in range(self._workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the queued Events to be written."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        if self.pending:
            log.error("shutting down with unwritten child-changed Events", extra={"pending": self.pending})

    async def _work(self) -> None:
        while True:
            change = await self._queue.get()
            try:
                await self.write(change)
            finally:
                self._queue.task_done()

    async def write(self, change: ChildChange) -> bool:
        """POST the Event for ``change``, retrying what may pass; False (logged) when it could not be written."""
        event = child_changed_event(change, reporting_instance=self._reporting_instance)
        path = f"/api/v1/namespaces/{event['metadata']['namespace']}/events"
        backoff = Backoff(FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS)
        for attempt in range(1, self._attempts + 1):
            try:
                await self._kube.request("POST", path, body=event)
            except KubeError as exc:
                if exc.status not in _RETRYABLE_STATUS or attempt == self._attempts:
                    metrics.SIGNALS.labels(result="failed").inc()
                    log.error("failed to record child change", extra={**_describe(change), "error": str(exc)})
                    return False
                await asyncio.sleep(backoff.next_delay())
                continue
            metrics.SIGNALS.labels(result="created").inc()
            return True
        return False

"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's ``leaderelection`` does it.

The service's startup code wraps everything only the leader may do (running
the manager's workers) in ``LeaderElector.run(lead)``. The elector creates
the Lease or takes it over once the current holder has not renewed it for
``leaseDurationSeconds`` (measured on the local monotonic clock from when this
elector last saw the Lease change, so clock skew between pods does not
matter), using the Lease's resourceVersion for optimistic concurrency. The
leader renews every ``retry_period`` (one PUT of the Lease it last wrote; it reads the Lease only
when that is refused); when renewing fails for
``renew_deadline`` it cancels ``lead`` at once and competes again (or raises
``LeadershipLostError`` with ``exit_on_loss``). ``stop`` ends a term
gracefully and releases the Lease so another replica takes over within one
retry period. ``leader_election_master_status{name}`` is 1 while leading.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from atc.k8s.client import KubeClient, KubeError
from atc.model.clock import Clock, MonotonicClock
from atc.model.types import Object
from atc_controller import metrics

log = logging.getLogger("atc.controller.leader")

LEASES_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
LEASE_API_VERSION = "coordination.k8s.io/v1"


class LeadershipLostError(Exception):
    """Renewing the Lease failed for longer than the renew deadline (raised only with ``exit_on_loss``)."""


class _TermEnd(enum.Enum):
    LOST = "lost"
    STOPPED = "stopped"
    FINISHED = "finished"


def micro_time(moment: datetime.datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds, e.g. ``2026-11-23T10:00:00.000000Z``."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    """Competes for the Lease ``namespace/name`` as ``identity`` and runs ``lead`` while holding it."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Clock | None = None,
        exit_on_loss: bool = False,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._kube = kube
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._clock: Clock = clock or MonotonicClock()
        self._exit_on_loss = exit_on_loss
        self._collection = LEASES_PATH.format(namespace=namespace)
        self._path = f"{self._collection}/{name}"
        self._observed_spec: Object | None = None
        self._observed_at = 0.0
        self._held: Object | None = None  # the Lease as this elector last wrote it, while it holds it
        self._leading = False
        self._stopped = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def holder(self) -> str:
        """The holder of the Lease as last observed ("" if none)."""
        return str((self._observed_spec or {}).get("holderIdentity") or "")

    def stop(self) -> None:
        """End gracefully: stop competing, or cancel ``lead`` and release the Lease."""
        self._stopped.set()

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Acquire, lead, renew; returns after ``stop`` or when ``lead`` returns (its exception propagates)."""
        status = metrics.LEADER_ELECTION_MASTER_STATUS.labels(self.name)
        status.set(0)
        while await self._acquire():
            status.set(1)
            try:
                end = await self._hold(lead)
            finally:
                self._leading = False
                self._held = None
                status.set(0)
            if end is not _TermEnd.LOST:
                return
            log.error("leadership lost", extra={"lease": self.name, "identity": self.identity})
            if self._exit_on_loss:
                raise LeadershipLostError(f"lost Lease {self.namespace}/{self.name}")

    # --- acquiring ----------------------------------------------------------------------------------------------

    async def _acquire(self) -> bool:
        """Try every retry period until this elector holds the Lease (True) or is stopped (False)."""
        log.info("attempting to acquire leader lease", extra={"lease": self.name, "identity": self.identity})
        while not self._stopped.is_set():
            if await self._bounded(self._try_acquire_or_renew(), self._renew_deadline):
                self._leading = True
                log.info("successfully acquired lease", extra={"lease": self.name, "identity": self.identity})
                return True
            await self._pause(self._retry_period)
        return False

    async def _try_acquire_or_renew(self) -> bool:
        """One round of client-go's ``tryAcquireOrRenew``: True when this elector holds a fresh Lease.

        Fast path, as client-go's: a holder renews with one PUT of the Lease it last wrote (its
        resourceVersion makes the update optimistic). Only when that fails (someone else wrote the
        Lease: 409, or any error) does it read the Lease first. An idle leader so sends one request
        per retry period instead of two.
        """
        if self._held is not None and await self._renew_held(self._held):
            return True
        try:
            lease = await self._kube.get(self._path)
        except KubeError as exc:
            if not exc.not_found:
                raise
            return await self._create_lease()
        self._observe(lease)
        spec: Object = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        if holder and holder != self.identity and not self._observed_expired(spec):
            return False
        lease["spec"] = self._next_spec(spec, holder)
        self._hold_written(await self._kube.request("PUT", self._path, body=lease))
        return True

    async def _renew_held(self, held: Object) -> bool:
        """PUT the held Lease with a new renewTime; False (and forget it) when the write is refused."""
        lease = {**held, "spec": self._next_spec(held.get("spec") or {}, self.identity)}
        try:
            written = await self._kube.request("PUT", self._path, body=lease)
        except KubeError as exc:
            self._held = None
            log.debug("fast lease renewal refused", extra={"lease": self.name, "error": str(exc)})
            return False
        self._hold_written(written)
        return True

    def _hold_written(self, lease: Object) -> None:
        """Remember a Lease this elector wrote as holder (for the next fast renewal)."""
        self._observe(lease)
        self._held = lease if (lease.get("spec") or {}).get("holderIdentity") == self.identity else None

    async def _create_lease(self) -> bool:
        spec = {**self._next_spec({}, ""), "leaseTransitions": 0}
        body = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        self._hold_written(await self._kube.request("POST", self._collection, body=body))
        return True

    def _next_spec(self, spec: Object, holder: str) -> Object:
        now = micro_time(_utc_now())
        renewing = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self._lease_duration)),
            "acquireTime": spec.get("acquireTime") if renewing and spec.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": transitions if renewing else transitions + 1,
        }

    def _observe(self, lease: Object) -> None:
        """Remember the Lease's spec and when (local clock) it last changed."""
        spec = lease.get("spec") or {}
        if spec != self._observed_spec:
            self._observed_spec = spec
            self._observed_at = self._clock.now()

    def _observed_expired(self, spec: Object) -> bool:
        duration = float(spec.get("leaseDurationSeconds") or self._lease_duration)
        return self._clock.now() >= self._observed_at + duration

    # --- leading ------------------------------------------------------------------------------------------------

    async def _hold(self, lead: Callable[[], Awaitable[None]]) -> _TermEnd:
        """Run ``lead`` and renew the Lease until it is lost, ``stop`` is called or ``lead`` returns."""
        task = asyncio.create_task(self._call(lead), name=f"leader {self.name}")
        try:
            end = await self._renew_until_done(task)
        finally:
            await _cancel(task)
        if end is not _TermEnd.LOST:
            await self._release()
        if end is _TermEnd.FINISHED:
            task.result()
        return end

    @staticmethod
    async def _call(lead: Callable[[], Awaitable[None]]) -> None:
        await lead()

    async def _renew_until_done(self, task: asyncio.Task[None]) -> _TermEnd:
        last_renewal = self._clock.now()
        while True:
            await self._pause(self._retry_period, task)
            if task.done():
                return _TermEnd.FINISHED
            if self._stopped.is_set():
                return _TermEnd.STOPPED
            remaining = last_renewal + self._renew_deadline - self._clock.now()
            if await self._bounded(self._try_acquire_or_renew(), max(remaining, 0.001)):
                last_renewal = self._clock.now()
            elif self.holder not in ("", self.identity) or self._clock.now() - last_renewal >= self._renew_deadline:
                return _TermEnd.LOST

    async def _release(self) -> None:
        """Hand the Lease back (empty holder) so another replica can take it at once."""
        self._held = None
        try:
            lease = await asyncio.wait_for(self._kube.get(self._path), self._renew_deadline)
            spec: Object = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = micro_time(_utc_now())
            lease["spec"] = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            self._observe(
                await asyncio.wait_for(self._kube.request("PUT", self._path, body=lease), self._renew_deadline)
            )
            log.info("released lease", extra={"lease": self.name, "identity": self.identity})
        except (KubeError, TimeoutError) as exc:
            log.warning("failed to release lease", extra={"lease": self.name, "error": str(exc)})

    # --- waiting ------------------------------------------------------------------------------------------------

    async def _bounded(self, attempt: Awaitable[bool], timeout: float) -> bool:
        """Run one acquire/renew round; failures (errors, conflicts, timeouts) count as not acquired."""
        try:
            return await asyncio.wait_for(attempt, timeout)
        except (KubeError, TimeoutError) as exc:
            log.debug("lease attempt failed", extra={"lease": self.name, "error": str(exc) or type(exc).__name__})
        except Exception:
            log.exception("lease attempt failed unexpectedly", extra={"lease": self.name})
        return False

    async def _pause(self, seconds: float, *wake_on: asyncio.Future[Any]) -> None:
        """Sleep ``seconds``, waking early on ``stop`` or when one of ``wake_on`` finishes."""
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait([sleeper, stopped, *wake_on], return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopped.cancel()


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; its own errors are logged, not raised."""
    if task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await task
        except Exception:
            log.exception("lead task failed while being cancelled")

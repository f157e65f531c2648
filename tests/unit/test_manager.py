"""The manager: reconcilers run on N workers, errors never kill a worker, registry, stop modes, metrics, logs.

Requeue timers use a clock whose sleeps never end, so retries stay out of the
way; reconciles run for real on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from support import eventually

from atc_controller.core.controller import KeyParts, Manager, split_key
from atc_controller.core.results import RequeueAfterError, Result, TerminalError
from atc_controller.metrics import REGISTRY


class TimersNeverFire:
    """Real time for measurements; requeue timers wait forever."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


class Recorder:
    """A reconciler that records keys and runs ``behaviour`` for each."""

    def __init__(self, behaviour: Callable[[str], Awaitable[Result]] | None = None) -> None:
        self.keys: list[str] = []
        self.behaviour = behaviour

    async def reconcile(self, key: str) -> Result:
        self.keys.append(key)
        if self.behaviour is None:
            return Result()
        return await self.behaviour(key)


@pytest.fixture
def name() -> str:
    return f"ctl-{uuid.uuid4().hex[:8]}"


def manager_with(workers: int) -> Manager:
    return Manager(workers, clock=TimersNeverFire())


@asynccontextmanager
async def running(manager: Manager) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(manager.run())
    try:
        yield task
    finally:
        await manager.stop(now=True)
        await asyncio.wait_for(task, 5)


async def until(condition: Callable[[], bool], what: str) -> None:
    async def probe() -> bool:
        return condition()

    await eventually(probe, timeout=5, interval=0.01, what=what)


def reconcile_total(name: str, result: str) -> float:
    return REGISTRY.get_sample_value("controller_runtime_reconcile_total", {"controller": name, "result": result}) or 0


def test_keys_split_into_namespace_kind_and_name() -> None:
    assert split_key("ns/Backend.examples.com:c4ts") == KeyParts("ns", "Backend.examples.com", "c4ts")
    assert split_key("/Airway.yoke.cd:backends") == KeyParts("", "Airway.yoke.cd", "backends")
    assert split_key("/ClusterRole.rbac.authorization.k8s.io:system:x") == KeyParts(
        "", "ClusterRole.rbac.authorization.k8s.io", "system:x"
    )
    assert split_key("ns/web") == KeyParts("ns", "", "web")
    assert split_key("cluster-thing") == KeyParts("", "", "cluster-thing")


async def test_registered_reconcilers_get_their_keys(name: str) -> None:
    manager = manager_with(2)
    first, second = Recorder(), Recorder()
    manager.register(name, first)
    manager.register(f"{name}-2", second)
    async with running(manager):
        manager.enqueue(name, "ns/a")
        manager.enqueue(f"{name}-2", "ns/b")
        manager.enqueue(name, "ns/c")
        await until(lambda: len(first.keys) == 2 and len(second.keys) == 1, "all keys reconciled")
    assert sorted(first.keys) == ["ns/a", "ns/c"]
    assert second.keys == ["ns/b"]


async def test_a_name_is_registered_once(name: str) -> None:
    manager = manager_with(1)
    manager.register(name, Recorder())
    with pytest.raises(ValueError, match="already registered"):
        manager.register(name, Recorder())


async def test_exceptions_do_not_kill_the_worker(name: str) -> None:
    async def behaviour(key: str) -> Result:
        if key == "ns/bad":
            raise RuntimeError("boom")
        if key == "ns/wrong":
            return None  # type: ignore[return-value]
        return Result()

    manager = manager_with(1)
    reconciler = Recorder(behaviour)
    manager.register(name, reconciler)
    async with running(manager):
        for key in ("ns/bad", "ns/wrong", "ns/good"):
            manager.enqueue(name, key)
        await until(lambda: reconciler.keys == ["ns/bad", "ns/wrong", "ns/good"], "the good key after the bad ones")
    assert reconcile_total(name, "error") == 2
    assert reconcile_total(name, "success") == 1


async def test_unregister_drops_queued_items(name: str, caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()

    async def blocked(key: str) -> Result:
        await gate.wait()
        return Result()

    manager = manager_with(1)
    blocker, dropped = Recorder(blocked), Recorder()
    manager.register(f"{name}-blocker", blocker)
    manager.register(name, dropped)
    async with running(manager):
        manager.enqueue(f"{name}-blocker", "ns/wait")
        await until(lambda: blocker.keys == ["ns/wait"], "the worker is busy")
        manager.enqueue(name, "ns/a")
        manager.enqueue(name, "ns/b")
        manager.unregister(name)
        manager.enqueue(name, "ns/late")
        gate.set()
        await until(lambda: "dropping event of unregistered controller" in caplog.text, "the late item dropped")
    assert dropped.keys == []
    assert not manager.is_registered(name)


async def test_unregister_drops_the_controllers_queue(name: str) -> None:
    manager = manager_with(1)
    manager.register(name, Recorder())
    assert manager.queues.queue(name) is not None
    manager.unregister(name)
    assert manager.queues.queue(name) is None
    assert name not in manager.queues.names


async def test_a_controller_registered_again_does_not_reconcile_a_key_the_old_one_still_runs(name: str) -> None:
    """An Airway's instance controller replaced (``instance:<airway>`` unregistered and registered again)."""
    gate = asyncio.Event()
    running_now: set[str] = set()
    overlaps: list[str] = []

    def tracking(gated: bool) -> Callable[[str], Awaitable[Result]]:
        async def behaviour(key: str) -> Result:
            if key in running_now:
                overlaps.append(key)
            running_now.add(key)
            if gated:
                await gate.wait()
            running_now.discard(key)
            return Result()

        return behaviour

    manager = manager_with(2)
    old, new = Recorder(tracking(gated=True)), Recorder(tracking(gated=False))
    manager.register(name, old)
    async with running(manager):
        manager.enqueue(name, "ns/a")
        await until(lambda: old.keys == ["ns/a"], "the old controller reconciles ns/a")
        manager.unregister(name)
        manager.register(name, new)
        manager.enqueue(name, "ns/a")
        manager.enqueue(name, "ns/b")
        await until(lambda: new.keys == ["ns/b"], "the new controller reconciles another key at once")
        await asyncio.sleep(0.05)
        assert new.keys == ["ns/b"], "ns/a waits for the old reconcile"
        gate.set()
        await until(lambda: new.keys == ["ns/b", "ns/a"], "ns/a reconciled by the new controller after the old run")
    assert overlaps == []


async def test_a_busy_controller_does_not_delay_the_others(name: str) -> None:
    """1,000 keys of one Airway queued before another's single key: that key is among the first reconciled."""
    workers = 4
    order: list[str] = []

    async def record(key: str) -> Result:
        order.append(key)
        await asyncio.sleep(0)
        return Result()

    manager = manager_with(workers)
    busy, quiet = Recorder(record), Recorder(record)
    manager.register(f"{name}-busy", busy)
    manager.register(f"{name}-quiet", quiet)
    for n in range(1000):
        manager.enqueue(f"{name}-busy", f"ns/busy-{n}")
    manager.enqueue(f"{name}-quiet", "ns/quiet")
    async with running(manager):
        await until(lambda: len(order) == 1001, "every key reconciled")
    assert order.index("ns/quiet") < workers + 1


async def test_a_key_enqueued_while_a_busy_controller_runs_waits_at_most_a_round(name: str) -> None:
    workers = 3
    order: list[str] = []
    enqueued_at: list[int] = []

    async def busy(key: str) -> Result:
        order.append(key)
        if len(order) == 100:
            manager.enqueue(f"{name}-quiet", "ns/quiet")
            enqueued_at.append(len(order))
        await asyncio.sleep(0)
        return Result()

    async def quiet(key: str) -> Result:
        order.append(key)
        return Result()

    manager = manager_with(workers)
    manager.register(f"{name}-busy", Recorder(busy))
    manager.register(f"{name}-quiet", Recorder(quiet))
    for n in range(500):
        manager.enqueue(f"{name}-busy", f"ns/busy-{n}")
    async with running(manager):
        await until(lambda: len(order) == 501, "every key reconciled")
    assert order.index("ns/quiet") - enqueued_at[0] < workers + 1


async def test_every_queue_is_open_while_running_and_fresh_after_a_stop(name: str) -> None:
    manager = manager_with(1)
    manager.register(name, Recorder())
    async with running(manager):
        await until(lambda: manager.running, "the manager runs")
        assert manager.queues.all_open
        first_term = manager.queues
    assert not manager.running
    assert first_term.is_shut_down
    assert manager.queues is not first_term
    assert manager.queues.all_open, "ready for the next run"
    assert manager.queues.names == [name]


async def test_graceful_stop_waits_for_the_running_reconcile(name: str) -> None:
    gate = asyncio.Event()
    finished: list[str] = []

    async def slow(key: str) -> Result:
        await gate.wait()
        finished.append(key)
        return Result()

    manager = manager_with(2)
    reconciler = Recorder(slow)
    manager.register(name, reconciler)
    run = asyncio.create_task(manager.run())
    manager.enqueue(name, "ns/a")
    await until(lambda: reconciler.keys == ["ns/a"], "reconcile started")
    stopping = asyncio.create_task(manager.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop waits for the running reconcile"
    manager.enqueue(name, "ns/b")
    gate.set()
    await asyncio.wait_for(stopping, 5)
    await asyncio.wait_for(run, 5)
    assert finished == ["ns/a"]
    assert reconciler.keys == ["ns/a"], "nothing new is taken after stop"


async def test_immediate_stop_cancels_running_reconciles(name: str) -> None:
    cancelled: list[str] = []

    async def forever(key: str) -> Result:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(key)
            raise
        return Result()

    manager = manager_with(2)
    reconciler = Recorder(forever)
    manager.register(name, reconciler)
    run = asyncio.create_task(manager.run())
    manager.enqueue(name, "ns/a")
    manager.enqueue(name, "ns/b")
    await until(lambda: len(reconciler.keys) == 2, "both reconciles started")
    await asyncio.wait_for(manager.stop(now=True), 1)
    await asyncio.wait_for(run, 1)
    assert sorted(cancelled) == ["ns/a", "ns/b"]
    assert REGISTRY.get_sample_value("controller_runtime_active_workers", {"controller": name}) == 0


async def test_the_manager_runs_again_after_a_stop(name: str) -> None:
    manager = manager_with(1)
    reconciler = Recorder()
    manager.register(name, reconciler)
    for key in ("ns/first", "ns/second"):
        async with running(manager):
            manager.enqueue(name, key)
            await until(lambda key=key: key in reconciler.keys, f"{key} reconciled")  # type: ignore[misc]
    assert reconciler.keys == ["ns/first", "ns/second"]


async def test_a_lost_term_leaves_a_queue_the_next_term_can_fill(name: str) -> None:
    """What the leader does when its Lease is lost: ``run`` is cancelled, then the clean-up calls ``stop``.

    The next term's reflectors enqueue everything they list before the manager runs again; those
    items must be reconciled (they used to land in a queue the late ``stop`` had shut down).
    """
    manager = manager_with(1)
    reconciler = Recorder()
    manager.register(name, reconciler)
    term = asyncio.create_task(manager.run())
    await until(lambda: manager.running, "the first term runs")
    term.cancel()  # the Lease is lost: leading is cancelled
    with pytest.raises(asyncio.CancelledError):
        await term
    await asyncio.wait_for(manager.stop(now=True), 1)  # the clean-up after the term
    manager.enqueue(name, "ns/listed-by-the-next-term")
    async with running(manager):
        await until(lambda: reconciler.keys == ["ns/listed-by-the-next-term"], "the listed item reconciled")


async def test_no_more_concurrent_reconciles_than_workers(name: str) -> None:
    active = 0
    peak = 0

    async def busy(key: str) -> Result:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return Result()

    manager = manager_with(3)
    reconciler = Recorder(busy)
    manager.register(name, reconciler)
    async with running(manager):
        for n in range(12):
            manager.enqueue(name, f"ns/k{n}")
        await until(lambda: len(reconciler.keys) == 12 and active == 0, "all keys reconciled")
    assert peak == 3


async def test_results_are_counted_with_controller_runtime_labels(name: str) -> None:
    async def by_key(key: str) -> Result:
        match key:
            case "ns/after":
                return Result(requeue_after=30)
            case "ns/soon":
                return Result(requeue_after=0)
            case "ns/error":
                raise RuntimeError("retry me")
            case "ns/later":
                raise RequeueAfterError("not yet", requeue_after=20)
            case "ns/terminal":
                raise TerminalError("module not allowed")
        return Result()

    manager = manager_with(2)
    reconciler = Recorder(by_key)
    manager.register(name, reconciler)
    keys = ["ns/ok", "ns/after", "ns/soon", "ns/error", "ns/later", "ns/terminal"]
    async with running(manager):
        for key in keys:
            manager.enqueue(name, key)
        await until(lambda: len(reconciler.keys) == len(keys), "every key reconciled")
        await until(lambda: reconcile_total(name, "error") == 3, "results counted")
    assert [reconcile_total(name, result) for result in ("success", "requeue_after", "requeue", "error")] == [
        1,
        1,
        1,
        3,
    ]
    errors = REGISTRY.get_sample_value("controller_runtime_reconcile_errors_total", {"controller": name})
    terminal = REGISTRY.get_sample_value("controller_runtime_terminal_reconcile_errors_total", {"controller": name})
    timed = REGISTRY.get_sample_value("controller_runtime_reconcile_time_seconds_count", {"controller": name})
    assert (errors, terminal, timed) == (3, 1, 6)


async def test_each_reconcile_logs_with_its_own_id(name: str, caplog: pytest.LogCaptureFixture) -> None:
    async def by_key(key: str) -> Result:
        if key.endswith(":bad"):
            raise RequeueAfterError("not ready", requeue_after=12)
        return Result()

    manager = manager_with(1)
    manager.register(name, Recorder(by_key))
    caplog.set_level(logging.INFO, logger="atc.controller")
    async with running(manager):
        manager.enqueue(name, "team/Backend.examples.com:good")
        manager.enqueue(name, "team/Backend.examples.com:bad")
        await until(lambda: "error processing event" in caplog.text, "both reconciles logged")
    records = [r for r in caplog.records if getattr(r, "controller", None) == name]
    assert [r.getMessage() for r in records] == [
        "processing event",
        "reconcile successful",
        "processing event",
        "error processing event",
    ]
    assert [(r.__dict__["namespace"], r.__dict__["objectName"], r.__dict__["groupKind"]) for r in records[2:]] == [
        ("team", "bad", "Backend.examples.com")
    ] * 2
    assert records[0].__dict__["reconcileID"] == records[1].__dict__["reconcileID"]
    assert records[0].__dict__["reconcileID"] != records[2].__dict__["reconcileID"]
    assert records[3].__dict__["requeueAfter"] == 12
    assert records[3].__dict__["error"] == "not ready"
    assert "elapsed" in records[1].__dict__

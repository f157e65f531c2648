"""The queues of all controllers: one per controller, taken from round-robin, forgotten with their controller.

A busy controller must not delay the others: controllers with ready keys take
turns, one key per turn. Dedupe and "never the same key twice at once" hold per
controller, also across a controller unregistered and registered again while
one of its keys is still being processed.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from fakes import FakeClock, settle

from atc_controller.core.queues import ControllerQueues, QueueKey, QueueShutDownError
from atc_controller.core.workqueue import Outcome
from atc_controller.metrics import REGISTRY


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queues(clock: FakeClock) -> ControllerQueues:
    return ControllerQueues(clock=clock, rng=random.Random(7))


@pytest.fixture
def prefix() -> str:
    """Controller names of this test only, so metric values of other tests do not mix in."""
    return f"test-{uuid.uuid4().hex[:8]}"


def opened(queues: ControllerQueues, prefix: str, *suffixes: str) -> list[str]:
    names = [f"{prefix}-{suffix}" for suffix in suffixes]
    for name in names:
        queues.open(name)
    return names


async def take(queues: ControllerQueues) -> QueueKey:
    return await asyncio.wait_for(queues.get(), 1)


async def take_all(queues: ControllerQueues) -> list[QueueKey]:
    """Take every ready key, marking each done at once (as workers that finish immediately would)."""
    taken = []
    while len(queues):
        item = await take(queues)
        queues.done(item, Outcome.success())
        taken.append(item)
    return taken


async def test_controllers_with_ready_keys_take_turns(queues: ControllerQueues, prefix: str) -> None:
    a, b, c = opened(queues, prefix, "a", "b", "c")
    for key in ("1", "2", "3"):
        queues.add(QueueKey(a, key))
    queues.add(QueueKey(b, "1"))
    queues.add(QueueKey(c, "1"))
    queues.add(QueueKey(c, "2"))
    assert [(item.controller, item.key) for item in await take_all(queues)] == [
        (a, "1"),
        (b, "1"),
        (c, "1"),
        (a, "2"),
        (c, "2"),
        (a, "3"),
    ]


async def test_one_key_queued_behind_a_thousand_of_another_controller_comes_second(
    queues: ControllerQueues, prefix: str
) -> None:
    busy, quiet = opened(queues, prefix, "busy", "quiet")
    for n in range(1000):
        queues.add(QueueKey(busy, f"ns/{n}"))
    queues.add(QueueKey(quiet, "ns/only"))
    order = await take_all(queues)
    assert order.index(QueueKey(quiet, "ns/only")) == 1
    assert [item.key for item in order if item.controller == busy] == [f"ns/{n}" for n in range(1000)]


async def test_a_controller_that_becomes_ready_mid_round_waits_at_most_one_round(
    queues: ControllerQueues, prefix: str
) -> None:
    a, b, c = opened(queues, prefix, "a", "b", "c")
    for n in range(5):
        queues.add(QueueKey(a, f"{n}"))
        queues.add(QueueKey(b, f"{n}"))
    first = await take(queues)
    queues.add(QueueKey(c, "late"))
    rest = [await take(queues) for _ in range(3)]
    assert [item.controller for item in (first, *rest)] == [a, b, a, c]


async def test_the_same_key_of_two_controllers_is_two_items(queues: ControllerQueues, prefix: str) -> None:
    a, b = opened(queues, prefix, "a", "b")
    queues.add(QueueKey(a, "ns/x"))
    queues.add(QueueKey(b, "ns/x"))
    queues.add(QueueKey(a, "ns/x"))
    assert len(queues) == 2
    assert {await take(queues), await take(queues)} == {QueueKey(a, "ns/x"), QueueKey(b, "ns/x")}


async def test_a_key_being_processed_is_not_handed_out_again_until_done(queues: ControllerQueues, prefix: str) -> None:
    (a,) = opened(queues, prefix, "a")
    queues.add(QueueKey(a, "ns/x"))
    first = await take(queues)
    queues.add(QueueKey(a, "ns/x"))
    second = asyncio.create_task(queues.get())
    await settle()
    assert not second.done(), "no second worker gets the key while it is processed"
    queues.done(first, Outcome.success())
    assert await asyncio.wait_for(second, 1) == QueueKey(a, "ns/x")


async def test_a_waiting_worker_wakes_when_a_key_is_added(queues: ControllerQueues, prefix: str) -> None:
    (a,) = opened(queues, prefix, "a")
    getter = asyncio.create_task(queues.get())
    await settle()
    assert not getter.done()
    queues.add(QueueKey(a, "ns/x"))
    assert await asyncio.wait_for(getter, 1) == QueueKey(a, "ns/x")


async def test_a_requeue_timer_gives_its_controller_a_turn(
    queues: ControllerQueues, clock: FakeClock, prefix: str
) -> None:
    (a,) = opened(queues, prefix, "a")
    queues.add(QueueKey(a, "ns/x"))
    item = await take(queues)
    assert queues.done(item, Outcome.error()) == 1
    assert queues.attempts(item) == 1
    getter = asyncio.create_task(queues.get())
    await clock.advance(1)
    assert await asyncio.wait_for(getter, 1) == item


async def test_keys_of_a_controller_without_a_queue_are_ignored(queues: ControllerQueues, prefix: str) -> None:
    queues.add(QueueKey(f"{prefix}-unknown", "ns/x"))
    queues.add_after(QueueKey(f"{prefix}-unknown", "ns/x"), 1)
    assert len(queues) == 0
    assert queues.names == []


async def test_forget_drops_the_controllers_queue_and_nothing_else(
    queues: ControllerQueues, clock: FakeClock, prefix: str
) -> None:
    gone, kept = opened(queues, prefix, "gone", "kept")
    queues.add(QueueKey(gone, "ns/a"))
    queues.add(QueueKey(kept, "ns/a"))
    queues.add(QueueKey(gone, "ns/b"))
    queues.add_after(QueueKey(gone, "ns/c"), 5)
    queues.forget(gone)
    queues.add(QueueKey(gone, "ns/late"))
    await clock.advance(5)
    assert queues.names == [kept]
    assert queues.queue(gone) is None
    assert await take_all(queues) == [QueueKey(kept, "ns/a")]
    assert REGISTRY.get_sample_value("workqueue_depth", {"name": gone}) is None, "its gauges are withdrawn"
    assert REGISTRY.get_sample_value("workqueue_adds_total", {"name": gone}) == 2


async def test_a_key_in_flight_when_its_controller_is_forgotten_is_not_requeued(
    queues: ControllerQueues, clock: FakeClock, prefix: str
) -> None:
    (a,) = opened(queues, prefix, "a")
    queues.add(QueueKey(a, "ns/x"))
    item = await take(queues)
    queues.forget(a)
    assert REGISTRY.get_sample_value("workqueue_longest_running_processor_seconds", {"name": a}) == 0
    queues.done(item, Outcome.error())
    await clock.advance(3600)
    assert len(queues) == 0
    assert REGISTRY.get_sample_value("workqueue_depth", {"name": a}) is None, "let go after its last key"
    with pytest.raises(ValueError, match="not being processed"):
        queues.done(item, Outcome.success())


async def test_a_controller_registered_again_never_runs_a_key_twice_at_once(
    queues: ControllerQueues, prefix: str
) -> None:
    (a,) = opened(queues, prefix, "a")
    queues.add(QueueKey(a, "ns/x"))
    old_run = await take(queues)
    queues.forget(a)
    queues.open(a)
    queues.add(QueueKey(a, "ns/x"))
    queues.add(QueueKey(a, "ns/y"))
    assert await take(queues) == QueueKey(a, "ns/y"), "the new registration serves other keys at once"
    assert len(queues) == 0, "ns/x waits for the old run"
    queues.done(old_run, Outcome.error())
    assert await take(queues) == QueueKey(a, "ns/x")
    assert queues.attempts(QueueKey(a, "ns/x")) == 1


async def test_shutdown_wakes_every_waiting_worker_and_refuses_keys(queues: ControllerQueues, prefix: str) -> None:
    (a,) = opened(queues, prefix, "a")
    getters = [asyncio.create_task(queues.get()) for _ in range(3)]
    await settle()
    assert queues.all_open
    queues.shutdown()
    for getter in getters:
        with pytest.raises(QueueShutDownError):
            await asyncio.wait_for(getter, 1)
    queues.add(QueueKey(a, "ns/x"))
    queues.open(f"{prefix}-b")
    assert (len(queues), queues.names, queues.all_open) == (0, [a], False)

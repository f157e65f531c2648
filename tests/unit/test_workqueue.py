"""The shared work queue: dedupe, one worker per key, FIFO, timers, backoff, forgetting, metrics.

Time is a ``FakeClock`` advanced by hand, so backoff delays of minutes run in
microseconds and timer order is exact.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from fakes import FakeClock, settle

from atc_controller.core.workqueue import Outcome, QueueKey, QueueShutDownError, WorkQueue, backoff_delay
from atc_controller.metrics import REGISTRY


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue:
    return WorkQueue(clock=clock, rng=random.Random(7))


@pytest.fixture
def controller() -> str:
    """A controller name of its own, so metric values of other tests do not mix in."""
    return f"test-{uuid.uuid4().hex[:8]}"


def item(controller: str, key: str) -> QueueKey:
    return QueueKey(controller, key)


async def take(queue: WorkQueue) -> QueueKey:
    return await asyncio.wait_for(queue.get(), 1)


def sample(metric: str, controller: str) -> float:
    return REGISTRY.get_sample_value(metric, {"name": controller}) or 0.0


async def test_an_item_waiting_is_not_added_twice(queue: WorkQueue, controller: str) -> None:
    queue.add(item(controller, "ns/a"))
    queue.add(item(controller, "ns/a"))
    assert len(queue) == 1
    assert await take(queue) == item(controller, "ns/a")
    assert len(queue) == 0


async def test_items_come_out_in_fifo_order(queue: WorkQueue, controller: str) -> None:
    keys = ["ns/c", "ns/a", "ns/b"]
    for key in keys:
        queue.add(item(controller, key))
    assert [(await take(queue)).key for _ in keys] == keys


async def test_an_item_added_while_processed_comes_back_once_after_done(queue: WorkQueue, controller: str) -> None:
    a = item(controller, "ns/a")
    queue.add(a)
    assert await take(queue) == a
    queue.add(a)
    queue.add(a)
    assert len(queue) == 0, "never handed to a second worker while processed"
    assert queue.done(a, Outcome.success()) is None
    assert len(queue) == 1
    assert await take(queue) == a
    queue.done(a, Outcome.success())
    assert len(queue) == 0


async def test_done_for_an_item_not_processed_is_an_error(queue: WorkQueue, controller: str) -> None:
    with pytest.raises(ValueError, match="not being processed"):
        queue.done(item(controller, "ns/a"), Outcome.success())


async def test_add_after_keeps_the_earlier_timer(queue: WorkQueue, clock: FakeClock, controller: str) -> None:
    a, b = item(controller, "ns/a"), item(controller, "ns/b")
    queue.add_after(a, 10)
    queue.add_after(a, 5)
    queue.add_after(b, 5)
    queue.add_after(b, 10)
    await clock.advance(4.9)
    assert len(queue) == 0
    await clock.advance(0.1)
    assert [await take(queue), await take(queue)] == [a, b]
    queue.done(a, Outcome.success())
    queue.done(b, Outcome.success())
    await clock.advance(10)
    assert len(queue) == 0, "the later timers were dropped"


async def test_a_timer_is_cancelled_when_the_item_starts_processing(
    queue: WorkQueue, clock: FakeClock, controller: str
) -> None:
    a = item(controller, "ns/a")
    queue.add_after(a, 5)
    queue.add(a)
    assert await take(queue) == a
    await clock.advance(5)
    queue.done(a, Outcome.success())
    assert len(queue) == 0


def test_backoff_curve_doubles_to_fifteen_minutes_with_ten_percent_jitter() -> None:
    rng = random.Random(42)
    delays = [backoff_delay(attempts, rng) for attempts in range(14)]
    assert delays == [1, 2, 4, 8, 17, 33, 69, 117, 252, 464, 849, 901, 815, 846]
    for attempts, delay in enumerate(delays):
        base = min(2**attempts, 900)
        assert base * 0.9 - 0.5 <= delay <= base * 1.1 + 0.5
        assert delay == int(delay)


async def test_errors_requeue_with_growing_backoff(queue: WorkQueue, clock: FakeClock, controller: str) -> None:
    a = item(controller, "ns/a")
    queue.add(a)
    delays = []
    for _ in range(13):
        assert await take(queue) == a
        delay = queue.done(a, Outcome.error())
        assert delay is not None
        delays.append(delay)
        await clock.advance(delay)
    assert delays == [1, 2, 4, 7, 16, 31, 58, 128, 232, 505, 823, 826, 886]
    assert queue.attempts(a) == 13
    assert sample("workqueue_retries_total", controller) == 13


async def test_success_resets_the_attempts(queue: WorkQueue, clock: FakeClock, controller: str) -> None:
    a = item(controller, "ns/a")
    queue.add(a)
    for expected in (1, 2, 4):
        await take(queue)
        assert queue.done(a, Outcome.error()) == expected
        await clock.advance(expected)
    await take(queue)
    assert queue.done(a, Outcome.success()) is None
    assert queue.attempts(a) == 0
    queue.add(a)
    await take(queue)
    assert queue.done(a, Outcome.error()) == 1


async def test_terminal_errors_are_not_retried(queue: WorkQueue, clock: FakeClock, controller: str) -> None:
    a = item(controller, "ns/a")
    queue.add(a)
    await take(queue)
    assert queue.done(a, Outcome.terminal()) is None
    await clock.advance(3600)
    assert len(queue) == 0
    assert queue.attempts(a) == 0


async def test_terminal_errors_with_requeue_after_are_retried(
    queue: WorkQueue, clock: FakeClock, controller: str
) -> None:
    a = item(controller, "ns/a")
    queue.add(a)
    await take(queue)
    assert queue.done(a, Outcome.terminal(requeue_after=30)) == 30
    await clock.advance(30)
    assert await take(queue) == a


async def test_requeue_after_given_with_an_error_wins_over_backoff(
    queue: WorkQueue, clock: FakeClock, controller: str
) -> None:
    a = item(controller, "ns/a")
    queue.add(a)
    await take(queue)
    assert queue.done(a, Outcome.error(requeue_after=7.5)) == 7.5
    assert queue.attempts(a) == 1
    await clock.advance(7.4)
    assert len(queue) == 0
    await clock.advance(0.1)
    assert await take(queue) == a


async def test_success_with_requeue_after(queue: WorkQueue, clock: FakeClock, controller: str) -> None:
    a = item(controller, "ns/a")
    queue.add(a)
    await take(queue)
    assert queue.done(a, Outcome.success(requeue_after=60)) == 60
    await clock.advance(60)
    await take(queue)
    assert queue.done(a, Outcome.success(requeue_after=0)) == 1, "0 means: again after the current backoff"


async def test_forget_controller_drops_its_waiting_and_scheduled_items(
    queue: WorkQueue, clock: FakeClock, controller: str
) -> None:
    other = f"{controller}-other"
    queue.add(item(controller, "ns/a"))
    queue.add(item(other, "ns/a"))
    queue.add(item(controller, "ns/b"))
    queue.add_after(item(controller, "ns/c"), 5)
    queue.forget_controller(controller)
    await clock.advance(5)
    assert len(queue) == 1
    assert await take(queue) == item(other, "ns/a")
    assert sample("workqueue_depth", controller) == 0


async def test_shutdown_wakes_waiting_getters(queue: WorkQueue, controller: str) -> None:
    getter = asyncio.create_task(queue.get())
    await settle()
    queue.shutdown()
    with pytest.raises(QueueShutDownError):
        await asyncio.wait_for(getter, 1)
    queue.add(item(controller, "ns/a"))
    assert len(queue) == 0


async def test_metrics_follow_the_queue(queue: WorkQueue, clock: FakeClock, controller: str) -> None:
    a, b = item(controller, "ns/a"), item(controller, "ns/b")
    queue.add(a)
    queue.add(b)
    queue.add(a)
    assert sample("workqueue_depth", controller) == 2
    assert sample("workqueue_adds_total", controller) == 2
    await clock.advance(3)
    await take(queue)
    assert sample("workqueue_depth", controller) == 1
    assert sample("workqueue_queue_duration_seconds_count", controller) == 1
    assert sample("workqueue_queue_duration_seconds_sum", controller) == 3
    await clock.advance(2)
    await take(queue)
    await clock.advance(4)
    assert sample("workqueue_longest_running_processor_seconds", controller) == 6
    assert sample("workqueue_unfinished_work_seconds", controller) == 6 + 4
    queue.done(a, Outcome.error())
    assert sample("workqueue_work_duration_seconds_count", controller) == 1
    assert sample("workqueue_work_duration_seconds_sum", controller) == 6
    assert sample("workqueue_retries_total", controller) == 1
    queue.done(b, Outcome.success())
    assert sample("workqueue_unfinished_work_seconds", controller) == 0
    assert sample("workqueue_longest_running_processor_seconds", controller) == 0

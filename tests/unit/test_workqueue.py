"""One controller's work queue: dedupe, one worker per key, FIFO, timers, backoff, shutdown, metrics.

Time is a ``FakeClock`` advanced by hand, so backoff delays of minutes run in
microseconds and timer order is exact. How the queues of several controllers
share the workers is in ``test_controller_queues.py``.
"""

from __future__ import annotations

import random
import uuid

import pytest
from fakes import FakeClock

from atc_controller.core.workqueue import Outcome, WorkQueue, backoff_delay
from atc_controller.metrics import REGISTRY


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def controller() -> str:
    """A controller name of its own, so metric values of other tests do not mix in."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def queue(clock: FakeClock, controller: str) -> WorkQueue:
    return WorkQueue(controller, clock=clock, rng=random.Random(7))


def take(queue: WorkQueue) -> str:
    key = queue.take()
    assert key is not None, "a key is ready"
    return key


def sample(metric: str, controller: str) -> float:
    return REGISTRY.get_sample_value(metric, {"name": controller}) or 0.0


async def test_a_key_waiting_is_not_added_twice(queue: WorkQueue) -> None:
    queue.add("ns/a")
    queue.add("ns/a")
    assert len(queue) == 1
    assert take(queue) == "ns/a"
    assert len(queue) == 0
    assert queue.take() is None


async def test_keys_come_out_in_fifo_order(queue: WorkQueue) -> None:
    keys = ["ns/c", "ns/a", "ns/b"]
    for key in keys:
        queue.add(key)
    assert [take(queue) for _ in keys] == keys


async def test_a_change_goes_ahead_of_the_backlog(queue: WorkQueue) -> None:
    for index in range(1000):
        queue.add(f"ns/old-{index}", backlog=True)
    queue.add("ns/new")
    assert len(queue) == 1001
    assert take(queue) == "ns/new"
    assert take(queue) == "ns/old-0"


async def test_a_change_to_a_key_in_the_backlog_moves_it_ahead_once(queue: WorkQueue) -> None:
    for key in ("ns/a", "ns/b", "ns/c"):
        queue.add(key, backlog=True)
    queue.add("ns/c")
    assert len(queue) == 3
    assert [take(queue) for _ in range(3)] == ["ns/c", "ns/a", "ns/b"]
    assert queue.take() is None


async def test_a_key_taken_after_a_move_and_queued_again_is_handed_out_once(queue: WorkQueue) -> None:
    queue.add("ns/a", backlog=True)
    queue.add("ns/a")  # moved ahead; its old backlog entry stays behind, stale
    assert take(queue) == "ns/a"
    queue.done("ns/a", Outcome.success())
    queue.add("ns/a", backlog=True)
    assert take(queue) == "ns/a"
    assert queue.take() is None
    assert len(queue) == 0


async def test_a_key_added_while_processed_comes_back_once_after_done(queue: WorkQueue) -> None:
    queue.add("ns/a")
    assert take(queue) == "ns/a"
    queue.add("ns/a")
    queue.add("ns/a")
    assert len(queue) == 0, "never handed to a second worker while processed"
    assert queue.in_flight == 1
    assert queue.done("ns/a", Outcome.success()) is None
    assert len(queue) == 1
    assert take(queue) == "ns/a"
    queue.done("ns/a", Outcome.success())
    assert (len(queue), queue.in_flight) == (0, 0)


async def test_done_for_a_key_not_processed_is_an_error(queue: WorkQueue) -> None:
    with pytest.raises(ValueError, match="not being processed"):
        queue.done("ns/a", Outcome.success())


async def test_each_key_that_becomes_ready_is_announced(clock: FakeClock, controller: str) -> None:
    announcements: list[str] = []
    queue = WorkQueue(controller, clock=clock, on_ready=lambda: announcements.append("ready"))
    queue.add("ns/a")
    queue.add("ns/a")  # already waiting: nothing new is ready
    queue.add_after("ns/b", 5)
    assert len(announcements) == 1
    await clock.advance(5)
    assert len(announcements) == 2
    take(queue)
    queue.add("ns/a")  # dirty while processed: ready only once done
    assert len(announcements) == 2
    queue.done("ns/a", Outcome.success())
    assert len(announcements) == 3
    assert [take(queue), take(queue)] == ["ns/b", "ns/a"]


async def test_add_after_keeps_the_earlier_timer(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after("ns/a", 10)
    queue.add_after("ns/a", 5)
    queue.add_after("ns/b", 5)
    queue.add_after("ns/b", 10)
    await clock.advance(4.9)
    assert len(queue) == 0
    await clock.advance(0.1)
    assert [take(queue), take(queue)] == ["ns/a", "ns/b"]
    queue.done("ns/a", Outcome.success())
    queue.done("ns/b", Outcome.success())
    await clock.advance(10)
    assert len(queue) == 0, "the later timers were dropped"


async def test_a_timer_is_cancelled_when_the_key_starts_processing(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after("ns/a", 5)
    queue.add("ns/a")
    assert take(queue) == "ns/a"
    await clock.advance(5)
    queue.done("ns/a", Outcome.success())
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
    queue.add("ns/a")
    delays = []
    for _ in range(13):
        assert take(queue) == "ns/a"
        delay = queue.done("ns/a", Outcome.error())
        assert delay is not None
        delays.append(delay)
        await clock.advance(delay)
    assert delays == [1, 2, 4, 7, 16, 31, 58, 128, 232, 505, 823, 826, 886]
    assert queue.attempts("ns/a") == 13
    assert sample("workqueue_retries_total", controller) == 13


async def test_success_resets_the_attempts(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("ns/a")
    for expected in (1, 2, 4):
        take(queue)
        assert queue.done("ns/a", Outcome.error()) == expected
        await clock.advance(expected)
    take(queue)
    assert queue.done("ns/a", Outcome.success()) is None
    assert queue.attempts("ns/a") == 0
    queue.add("ns/a")
    take(queue)
    assert queue.done("ns/a", Outcome.error()) == 1


async def test_terminal_errors_are_not_retried(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("ns/a")
    take(queue)
    assert queue.done("ns/a", Outcome.terminal()) is None
    await clock.advance(3600)
    assert len(queue) == 0
    assert queue.attempts("ns/a") == 0


async def test_terminal_errors_with_requeue_after_are_retried(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("ns/a")
    take(queue)
    assert queue.done("ns/a", Outcome.terminal(requeue_after=30)) == 30
    await clock.advance(30)
    assert take(queue) == "ns/a"


async def test_requeue_after_given_with_an_error_wins_over_backoff(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("ns/a")
    take(queue)
    assert queue.done("ns/a", Outcome.error(requeue_after=7.5)) == 7.5
    assert queue.attempts("ns/a") == 1
    await clock.advance(7.4)
    assert len(queue) == 0
    await clock.advance(0.1)
    assert take(queue) == "ns/a"


async def test_success_with_requeue_after(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("ns/a")
    take(queue)
    assert queue.done("ns/a", Outcome.success(requeue_after=60)) == 60
    await clock.advance(60)
    take(queue)
    assert queue.done("ns/a", Outcome.success(requeue_after=0)) == 1, "0 means: again after the current backoff"


async def test_shutdown_drops_waiting_scheduled_and_dirty_keys(
    queue: WorkQueue, clock: FakeClock, controller: str
) -> None:
    queue.add("ns/running")
    take(queue)
    queue.add("ns/running")  # dirty
    queue.add("ns/waiting")
    queue.add_after("ns/scheduled", 5)
    queue.shutdown()
    assert queue.is_shut_down
    assert (len(queue), sample("workqueue_depth", controller)) == (0, 0)
    queue.add("ns/late")
    await clock.advance(5)
    assert queue.done("ns/running", Outcome.error()) is not None, "the delay is reported"
    await clock.advance(3600)
    assert (len(queue), queue.in_flight) == (0, 0), "nothing is requeued after a shutdown"


async def test_a_reopened_queue_accepts_keys_again(queue: WorkQueue) -> None:
    queue.shutdown()
    queue.reopen()
    queue.add("ns/a")
    assert take(queue) == "ns/a"


async def test_metrics_follow_the_queue(queue: WorkQueue, clock: FakeClock, controller: str) -> None:
    queue.add("ns/a")
    queue.add("ns/b")
    queue.add("ns/a")
    assert sample("workqueue_depth", controller) == 2
    assert sample("workqueue_adds_total", controller) == 2
    await clock.advance(3)
    take(queue)
    assert sample("workqueue_depth", controller) == 1
    assert sample("workqueue_queue_duration_seconds_count", controller) == 1
    assert sample("workqueue_queue_duration_seconds_sum", controller) == 3
    await clock.advance(2)
    take(queue)
    await clock.advance(4)
    assert sample("workqueue_longest_running_processor_seconds", controller) == 6
    assert sample("workqueue_unfinished_work_seconds", controller) == 6 + 4
    queue.done("ns/a", Outcome.error())
    assert sample("workqueue_work_duration_seconds_count", controller) == 1
    assert sample("workqueue_work_duration_seconds_sum", controller) == 6
    assert sample("workqueue_retries_total", controller) == 1
    queue.done("ns/b", Outcome.success())
    assert sample("workqueue_unfinished_work_seconds", controller) == 0
    assert sample("workqueue_longest_running_processor_seconds", controller) == 0


async def test_withdrawn_gauges_leave_the_registry_and_counters_stay(queue: WorkQueue, controller: str) -> None:
    queue.add("ns/a")
    queue.withdraw_gauges()
    for gauge in (
        "workqueue_depth",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
    ):
        assert REGISTRY.get_sample_value(gauge, {"name": controller}) is None
    assert sample("workqueue_adds_total", controller) == 1

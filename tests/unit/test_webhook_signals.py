"""The child-changed Event (``atc.k8s.signals``) and the webhook's background writer (``atc_webhook.signals``)."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from webhook_fakes import FakeKube

from atc.k8s.client import KubeError
from atc.k8s.signals import SIGNAL_SELECTOR, ChildChange, child_changed_event, parse_child_changed
from atc_webhook import metrics
from atc_webhook.signals import SignalWriter

CHANGE = ChildChange(
    instance_api_version="examples.com/v1",
    instance_kind="Backend",
    instance_namespace="",
    instance_name="cluster-wide",
    instance_uid="uid-1",
    child_ref="/Namespace:team",
    child_resource_version="77",
    operation="DELETE",
    username="system:serviceaccount:ops:bot",
)


def test_a_cluster_scoped_instance_gets_its_event_in_default() -> None:
    now = datetime.datetime(2026, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    event = child_changed_event(CHANGE, reporting_instance="pod-7", now=now)
    assert event["metadata"]["namespace"] == "default"
    assert event["metadata"]["name"].startswith("cluster-wide.")
    assert event["involvedObject"] == {
        "apiVersion": "examples.com/v1",
        "kind": "Backend",
        "name": "cluster-wide",
        "uid": "uid-1",
    }
    assert (event["firstTimestamp"], event["lastTimestamp"], event["count"]) == (
        "2026-05-01T12:00:00Z",
        "2026-05-01T12:00:00Z",
        1,
    )
    assert event["source"] == {"component": "atc-webhook"}
    assert event["reportingInstance"] == "pod-7"
    assert event["message"] == "DELETE of /Namespace:team by system:serviceaccount:ops:bot"
    assert SIGNAL_SELECTOR == "atc.yoke.cd/signal=child-changed"


def test_event_names_are_unique_and_fit() -> None:
    long = ChildChange(**{**CHANGE.__dict__, "instance_name": "x" * 253})
    names = {child_changed_event(long)["metadata"]["name"] for _ in range(20)}
    assert len(names) == 20
    assert all(len(name) <= 253 for name in names)


def test_parse_round_trips_and_ignores_other_events() -> None:
    assert parse_child_changed(child_changed_event(CHANGE)) == CHANGE
    assert parse_child_changed({"metadata": {"labels": {}}, "reason": "Pulled"}) is None


def signals(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("atc_webhook_signals_total", {"result": result}) or 0.0


async def test_transient_failures_are_retried() -> None:
    kube = FakeKube()
    kube.post_failures = [KubeError(503, "unavailable"), KubeError(0, "connection reset")]
    writer = SignalWriter(kube, reporting_instance="pod")
    created = signals("created")
    assert await writer.write(CHANGE)
    [(path, event)] = kube.posted
    assert path == "/api/v1/namespaces/default/events"
    assert event["reason"] == "SubresourceChanged"
    assert signals("created") == created + 1


async def test_a_rejected_event_is_logged_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKube()
    kube.post_failures = [KubeError(403, 'namespaces "gone" is being terminated')]
    failed = signals("failed")
    assert not await SignalWriter(kube, reporting_instance="pod").write(CHANGE)
    assert kube.posted == []
    assert signals("failed") == failed + 1
    assert "failed to record child change" in caplog.text


async def test_a_full_queue_drops_after_waiting(caplog: pytest.LogCaptureFixture) -> None:
    writer = SignalWriter(FakeKube(), reporting_instance="pod", queue_size=1, full_wait=0.01)
    dropped = signals("dropped")
    assert await writer.submit(CHANGE)
    assert not await writer.submit(CHANGE)
    assert signals("dropped") == dropped + 1
    assert "signal queue full" in caplog.text


async def test_queued_events_are_written_before_close_returns() -> None:
    kube = FakeKube()
    writer = SignalWriter(kube, reporting_instance="pod", workers=2)
    running = asyncio.create_task(writer.run())
    for _ in range(10):
        await writer.submit(CHANGE)
    await writer.close(5)
    assert len(kube.posted) == 10
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)

"""The reflector against a scripted API: pagination, relist diffs, bookmarks, 410, retries, resync.

``FakeKube`` serves LIST pages from an in-memory collection and WATCH streams
from a queue the test feeds; ``FakeClock`` records and releases the
reflector's sleeps, so retry delays and resync periods are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import pytest
from fakes import FakeClock, settle

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.reflector import EventType, Reflector, changed_beyond_status, retry_backoff
from atc.model.types import Object

PATH = "/api/v1/namespaces/ns/configmaps"
END_OF_STREAM = object()


def configmap(name: str, version: str, data: str = "", namespace: str = "ns") -> Object:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": version}, "data": {"v": data}}


def bookmark(version: str) -> Object:
    return {"type": "BOOKMARK", "object": {"kind": "ConfigMap", "metadata": {"resourceVersion": version}}}


def gone_event() -> Object:
    status = {"kind": "Status", "status": "Failure", "code": 410, "reason": "Expired", "message": "too old"}
    return {"type": "ERROR", "object": status}


class FakeKube(KubeClient):
    """LIST pages of ``objects`` (continue token = offset) and WATCH streams fed through ``stream``."""

    def __init__(self) -> None:
        self.objects: list[Object] = []
        self.list_version = "1"
        self.list_queries: list[Mapping[str, str]] = []
        self.list_failures: list[Exception] = []
        self.watch_queries: list[Mapping[str, str]] = []
        self.stream: asyncio.Queue[object] = asyncio.Queue()

    async def get(self, path: str, *, query: Mapping[str, str] | None = None) -> Object:
        assert path == PATH
        query = dict(query or {})
        self.list_queries.append(query)
        if self.list_failures:
            raise self.list_failures.pop(0)
        start, limit = int(query.get("continue") or 0), int(query["limit"])
        page = [dict(obj, metadata=dict(obj["metadata"])) for obj in self.objects[start : start + limit]]
        more = start + limit < len(self.objects)
        metadata = {"resourceVersion": self.list_version, **({"continue": str(start + limit)} if more else {})}
        return {"apiVersion": "v1", "kind": "ConfigMapList", "metadata": metadata, "items": page}

    async def watch(
        self,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        timeout_seconds: int = 300,
        accept: str = "application/json",
    ) -> AsyncIterator[Object]:
        self.watch_queries.append(dict(query or {}))
        while True:
            item = await self.stream.get()
            if item is END_OF_STREAM:
                return
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, dict)
            yield item


class Events:
    """A handler that records ``(type, name, old resourceVersion)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    def __call__(self, event_type: EventType, obj: Object, old: Object | None) -> None:
        old_version = old["metadata"]["resourceVersion"] if old else None
        self.seen.append((event_type, obj["metadata"]["name"], old_version))

    def take(self) -> list[tuple[str, str, str | None]]:
        seen, self.seen = self.seen, []
        return seen


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def reflector(kube: FakeKube, clock: FakeClock, events: Events) -> AsyncIterator[Reflector]:
    reflector = Reflector(kube, PATH, name="configmaps", handler=events, page_size=2, clock=clock)
    yield reflector
    reflector.stop()


async def started(reflector: Reflector) -> asyncio.Task[None]:
    task = asyncio.create_task(reflector.run())
    await settle()
    return task


async def test_a_paginated_list_fills_the_cache_and_syncs(kube: FakeKube, reflector: Reflector, events: Events) -> None:
    kube.objects = [configmap(f"c{n}", str(n)) for n in range(5)]
    kube.list_version = "9"
    task = await started(reflector)
    assert reflector.synced.is_set()
    assert [q.get("continue") for q in kube.list_queries] == [None, "2", "4"]
    assert {q["limit"] for q in kube.list_queries} == {"2"}
    assert events.take() == [("ADDED", f"c{n}", None) for n in range(5)]
    assert len(reflector) == 5
    cached = reflector.get("ns", "c3")
    assert cached is not None
    assert (cached["apiVersion"], cached["kind"]) == ("v1", "ConfigMap")
    assert reflector.get("ns", "missing") is None
    assert [obj["metadata"]["name"] for obj in reflector.list("ns")] == [f"c{n}" for n in range(5)]
    assert reflector.list("other") == []
    assert kube.watch_queries == [{"allowWatchBookmarks": "true", "resourceVersion": "9"}]
    reflector.stop()
    await asyncio.wait_for(task, 1)


async def test_watch_events_update_the_cache(kube: FakeKube, reflector: Reflector, events: Events) -> None:
    kube.objects = [configmap("a", "1")]
    task = await started(reflector)
    events.take()
    for event in (
        {"type": "ADDED", "object": configmap("b", "2")},
        {"type": "MODIFIED", "object": configmap("a", "3", "x")},
        {"type": "DELETED", "object": configmap("b", "4")},
    ):
        kube.stream.put_nowait(event)
    await settle()
    assert events.take() == [("ADDED", "b", None), ("MODIFIED", "a", "1"), ("DELETED", "b", "2")]
    assert [obj["metadata"]["name"] for obj in reflector.list()] == ["a"]
    assert reflector.resource_version == "4"
    reflector.stop()
    await asyncio.wait_for(task, 1)


async def test_bookmarks_advance_the_resource_version_for_the_next_watch(
    kube: FakeKube, reflector: Reflector, events: Events
) -> None:
    kube.list_version = "5"
    task = await started(reflector)
    kube.stream.put_nowait(bookmark("50"))
    kube.stream.put_nowait(END_OF_STREAM)
    await settle()
    assert reflector.resource_version == "50"
    assert [q["resourceVersion"] for q in kube.watch_queries] == ["5", "50"]
    assert len(kube.list_queries) == 1, "an ended stream is re-watched, not relisted"
    assert events.take() == []
    reflector.stop()
    await asyncio.wait_for(task, 1)


@pytest.mark.parametrize("gone", [gone_event(), KubeError(410, "too old resource version", "Expired")])
async def test_gone_relists_and_emits_the_difference(
    kube: FakeKube, reflector: Reflector, events: Events, gone: object
) -> None:
    kube.objects = [configmap("a", "1"), configmap("b", "2"), configmap("c", "3")]
    task = await started(reflector)
    events.take()
    kube.objects = [configmap("a", "1"), configmap("b", "7", "changed"), configmap("d", "8")]
    kube.list_version = "8"
    kube.stream.put_nowait(gone)
    await settle()
    assert [q.get("continue") for q in kube.list_queries] == [None, "2", None, "2"], "listed again, in pages"
    assert events.take() == [("MODIFIED", "b", "2"), ("ADDED", "d", None), ("DELETED", "c", "3")]
    assert sorted(obj["metadata"]["name"] for obj in reflector.list()) == ["a", "b", "d"]
    assert kube.watch_queries[-1]["resourceVersion"] == "8"
    reflector.stop()
    await asyncio.wait_for(task, 1)


async def test_failures_are_retried_with_backoff(
    kube: FakeKube, reflector: Reflector, clock: FakeClock, events: Events
) -> None:
    kube.list_failures = [KubeError(503, "unavailable"), KubeError(0, "connection refused")]
    task = await started(reflector)
    assert not reflector.synced.is_set()
    await clock.advance(0.5)
    await clock.advance(1.0)
    assert reflector.synced.is_set()
    assert clock.sleeps == [0.5, 1.0]
    for _ in range(3):
        kube.stream.put_nowait(KubeError(500, "etcd hiccup"))
        await settle()
        await clock.advance(clock.sleeps[-1])
    assert clock.sleeps == [0.5, 1.0, 0.5, 1.0, 2.0], "a successful list resets the backoff"
    assert len(kube.list_queries) == 3, "two failed lists, one good; watch errors re-watch without a list"
    assert len(kube.watch_queries) == 4
    assert {q["resourceVersion"] for q in kube.watch_queries} == {"1"}
    kube.stream.put_nowait({"type": "ADDED", "object": configmap("a", "2")})
    kube.stream.put_nowait(KubeError(500, "again"))
    await settle()
    assert clock.sleeps[-1] == 0.5, "an event resets the backoff"
    assert not task.done()
    reflector.stop()
    await asyncio.wait_for(task, 1)


def test_retry_backoff_doubles_to_thirty_seconds() -> None:
    backoff = retry_backoff()
    assert [backoff.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 0.5


async def test_resync_emits_every_cached_object_each_period(kube: FakeKube, clock: FakeClock) -> None:
    kube.objects = [configmap("a", "1"), configmap("b", "2")]
    events = Events()
    reflector = Reflector(kube, PATH, name="configmaps", handler=events, resync_period=30, clock=clock)
    task = await started(reflector)
    events.take()
    await clock.advance(29)
    assert events.take() == []
    await clock.advance(1)
    assert events.take() == [("RESYNC", "a", None), ("RESYNC", "b", None)]
    await clock.advance(30)
    assert len(events.take()) == 2
    reflector.stop()
    await asyncio.wait_for(task, 1)


async def test_a_failing_handler_does_not_stop_the_reflector(kube: FakeKube, clock: FakeClock) -> None:
    handled: list[str] = []

    async def handler(event_type: EventType, obj: Object, old: Object | None) -> None:
        if obj["metadata"]["name"] == "bad":
            raise RuntimeError("handler bug")
        handled.append(obj["metadata"]["name"])

    kube.objects = [configmap("bad", "1"), configmap("good", "2")]
    reflector = Reflector(kube, PATH, name="configmaps", handler=handler, clock=clock)
    task = await started(reflector)
    kube.stream.put_nowait({"type": "ADDED", "object": configmap("later", "3")})
    await settle()
    assert handled == ["good", "later"]
    assert len(reflector) == 3
    reflector.stop()
    await asyncio.wait_for(task, 1)


async def test_selectors_go_on_list_and_watch(kube: FakeKube, clock: FakeClock, events: Events) -> None:
    reflector = Reflector(
        kube, PATH, name="signals", handler=events, label_selector="a=b", field_selector="metadata.name=x", clock=clock
    )
    task = await started(reflector)
    assert kube.list_queries[0]["labelSelector"] == "a=b"
    assert kube.watch_queries[0]["fieldSelector"] == "metadata.name=x"
    reflector.stop()
    await asyncio.wait_for(task, 1)


def test_changed_beyond_status_ignores_status_and_bookkeeping() -> None:
    old: Object = {
        "apiVersion": "examples.com/v1",
        "kind": "Backend",
        "metadata": {"name": "b", "generation": 1, "resourceVersion": "1", "managedFields": [{"manager": "x"}]},
        "spec": {"replicas": 1},
        "status": {"ready": False},
    }
    status_only = {
        **old,
        "metadata": {"name": "b", "generation": 2, "resourceVersion": "2", "managedFields": []},
        "status": {"ready": True},
    }
    assert not changed_beyond_status(old, status_only)
    assert changed_beyond_status(old, {**old, "spec": {"replicas": 2}})
    labelled = {**old, "metadata": {**old["metadata"], "labels": {"team": "a"}}}
    assert changed_beyond_status(old, labelled)
    assert old["status"] == {"ready": False}, "inputs are not modified"

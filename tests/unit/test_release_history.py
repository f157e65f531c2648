"""A release's history from the watch-backed cache: no LIST, and never older than this process's own writes."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from webhook_fakes import revision_secret

from atc.k8s.client import KubeClient
from atc.model.types import Object
from atc.release.history import CachedHistory
from atc.release.revisions import revision_from_metadata

RELEASE, NAMESPACE = "examples.com.Backend.ns.b", "ns"


class ListingApi:
    """The API server's answer to a LIST of revision Secrets; counts the calls."""

    def __init__(self, secrets: list[Object]) -> None:
        self.secrets = secrets
        self.lists = 0

    async def request(self, method: str, path: str, **kwargs: Any) -> Object:
        assert method == "GET"
        self.lists += 1
        return {"items": [{"metadata": secret["metadata"]} for secret in self.secrets]}


def secret(name: str, version: int, *, active_at: str = "2026-01-01T00:00:00Z") -> Object:
    stages = [[{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"v": "1"}}]]
    return revision_secret(name, NAMESPACE, RELEASE, stages, active_at=active_at, version=str(version))


def synced_cache(api: ListingApi, *listed: Object, catch_up: float = 1.0) -> CachedHistory:
    cache = CachedHistory(cast(KubeClient, api), catch_up_seconds=catch_up)
    for item in listed:
        cache._on_event("ADDED", item, None)
    cache.reflector.synced.set()
    return cache


async def test_a_synced_cache_answers_without_a_list() -> None:
    api = ListingApi([])
    cache = synced_cache(api, secret("yoke.a", 5))
    release = await cache.release(RELEASE, NAMESPACE)
    assert [revision.name for revision in release.history] == ["yoke.a"]
    assert release.active is not None
    stages = await cache.stages(release.active)
    assert stages[0][0]["data"] == {"v": "1"}
    assert api.lists == 0


async def test_before_the_first_list_the_api_server_answers() -> None:
    api = ListingApi([secret("yoke.a", 5)])
    cache = CachedHistory(cast(KubeClient, api))
    release = await cache.release(RELEASE, NAMESPACE)
    assert [revision.name for revision in release.history] == ["yoke.a"]
    assert api.lists == 1


async def test_a_read_waits_for_the_watch_to_show_our_own_write() -> None:
    api = ListingApi([])
    cache = synced_cache(api, secret("yoke.a", 5))
    cache.wrote(revision_from_metadata(secret("yoke.b", 9)["metadata"], NAMESPACE, RELEASE))
    reading = asyncio.create_task(cache.release(RELEASE, NAMESPACE))
    await asyncio.sleep(0.05)
    assert not reading.done(), "the cache does not show yoke.b yet"
    cache._on_event("ADDED", secret("yoke.b", 9, active_at="2026-01-02T00:00:00Z"), None)
    release = await reading
    assert release.active is not None
    assert release.active.name == "yoke.b"
    assert api.lists == 0


async def test_a_read_waits_for_the_watch_to_show_our_deletes() -> None:
    api = ListingApi([])
    old, new = secret("yoke.a", 5), secret("yoke.b", 6, active_at="2026-01-02T00:00:00Z")
    cache = synced_cache(api, old, new)
    cache.deleted(RELEASE, NAMESPACE, ["yoke.a"])
    reading = asyncio.create_task(cache.release(RELEASE, NAMESPACE))
    await asyncio.sleep(0.05)
    assert not reading.done()
    cache._on_event("DELETED", old, old)
    assert [revision.name for revision in (await reading).history] == ["yoke.b"]


async def test_a_watch_that_does_not_catch_up_falls_back_to_a_list() -> None:
    api = ListingApi([secret("yoke.a", 5), secret("yoke.b", 9)])
    cache = synced_cache(api, secret("yoke.a", 5), catch_up=0.05)
    cache.wrote(revision_from_metadata(secret("yoke.b", 9)["metadata"], NAMESPACE, RELEASE))
    release = await cache.release(RELEASE, NAMESPACE)
    assert sorted(revision.name for revision in release.history) == ["yoke.a", "yoke.b"]
    assert api.lists == 1
    await cache.release(RELEASE, NAMESPACE)
    assert api.lists == 2, "until the watch shows the write, every read lists (without waiting again)"
    cache._on_event("ADDED", secret("yoke.b", 9), None)
    await cache.release(RELEASE, NAMESPACE)
    assert api.lists == 2


async def test_a_failing_watch_sends_reads_to_the_api_server() -> None:
    api = ListingApi([secret("yoke.a", 5)])
    cache = synced_cache(api, secret("yoke.a", 5))
    cache.reflector.last_error = ConnectionError("watch broken")
    await cache.release(RELEASE, NAMESPACE)
    assert api.lists == 1


async def test_an_older_version_does_not_satisfy_the_expectation() -> None:
    api = ListingApi([secret("yoke.a", 12)])
    cache = synced_cache(api, secret("yoke.a", 5), catch_up=0.05)
    cache.wrote(revision_from_metadata(secret("yoke.a", 12)["metadata"], NAMESPACE, RELEASE))
    await cache.release(RELEASE, NAMESPACE)
    assert api.lists == 1


async def test_forget_expects_the_whole_history_gone() -> None:
    api = ListingApi([])
    old = secret("yoke.a", 5)
    cache = synced_cache(api, old, catch_up=0.05)
    cache.forget(RELEASE, NAMESPACE)
    cache._on_event("DELETED", old, old)
    assert (await cache.release(RELEASE, NAMESPACE)).history == []
    assert api.lists == 0


async def test_a_fresh_reflector_starts_from_an_empty_cache() -> None:
    api = ListingApi([])
    cache = synced_cache(api, secret("yoke.a", 5))
    cache.fresh_reflector()
    assert len(cache) == 0
    assert not cache.reflector.synced.is_set()

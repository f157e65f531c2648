"""The reflector and leader election against the real API server.

The reflector lists and watches ConfigMaps of a test namespace (with a label
selector and short watch streams, so re-watching is exercised) and reports
real creates, updates and deletes. Two electors in one process compete for a
Lease with short timings (3 s / 2 s / 0.5 s): exactly one leads, a leader that
stops renewing is replaced once the Lease expires, a graceful stop hands over
within about one retry period, and a leader that finds the Lease taken gives
up at once.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from support import eventually

from atc.k8s.client import MERGE_PATCH, KubeClient
from atc.k8s.reflector import EventType, Reflector
from atc.model.types import Object
from atc_controller.core.leader import LeaderElector, LeadershipLostError, micro_time
from atc_controller.metrics import REGISTRY

pytestmark = pytest.mark.cluster

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 3.0, 2.0, 0.5
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# --- reflector ------------------------------------------------------------------------------------------------------


def configmap(namespace: str, name: str, value: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"test": "reflector"}},
        "data": {"value": value},
    }


async def test_the_reflector_follows_real_configmaps(kube_client: KubeClient, namespace: str) -> None:
    collection = f"/api/v1/namespaces/{namespace}/configmaps"
    await kube_client.request("POST", collection, body=configmap(namespace, "before", "1"))
    unlabelled = {**configmap(namespace, "unlabelled", "x"), "metadata": {"name": "unlabelled"}}
    await kube_client.request("POST", collection, body=unlabelled)
    seen: list[tuple[EventType, str, str, str | None]] = []

    def record(event_type: EventType, obj: Object, old: Object | None) -> None:
        old_value = old["data"]["value"] if old else None
        seen.append((event_type, obj["metadata"]["name"], obj["data"]["value"], old_value))

    # short streams: the server ends each watch after 1 s and the reflector watches again
    reflector = Reflector(
        kube_client,
        collection,
        name="configmaps",
        handler=record,
        label_selector="test=reflector",
        page_size=1,
        watch_timeout_seconds=1,
    )
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(reflector.synced.wait(), 30)
        assert seen == [("ADDED", "before", "1", None)]
        await asyncio.sleep(2.5)

        await kube_client.request("POST", collection, body=configmap(namespace, "after", "1"))
        await kube_client.request(
            "PATCH", f"{collection}/after", body={"data": {"value": "2"}}, content_type=MERGE_PATCH
        )
        await kube_client.request("DELETE", f"{collection}/before")

        async def all_seen() -> bool:
            return len(seen) == 4

        await eventually(all_seen, timeout=15, interval=0.1, what="three more events")
        assert seen[1:] == [
            ("ADDED", "after", "1", None),
            ("MODIFIED", "after", "2", "1"),
            ("DELETED", "before", "1", "1"),
        ]
        assert [obj["metadata"]["name"] for obj in reflector.list()] == ["after"]
        cached = reflector.get(namespace, "after")
        assert cached is not None
        assert cached["data"] == {"value": "2"}
        assert int(reflector.resource_version) >= int(cached["metadata"]["resourceVersion"])
    finally:
        reflector.stop()
        await asyncio.wait_for(task, 5)


# --- leader election ------------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One elector running in a task, with events for when its ``lead`` starts and is cancelled."""

    elector: LeaderElector
    leading: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def lead(self) -> None:
        self.leading.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def start(self) -> Candidate:
        self.task = asyncio.create_task(self.elector.run(self.lead))
        return self

    async def end(self) -> None:
        self.elector.stop()
        assert self.task is not None
        if not self.task.done():
            await asyncio.wait_for(asyncio.shield(self.task), 10)


def elector(kube: KubeClient, namespace: str, identity: str, **options: Any) -> LeaderElector:
    return LeaderElector(
        kube,
        namespace,
        "atc-leader",
        identity,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY_PERIOD,
        **options,
    )


@pytest.fixture
async def candidates(kube_client: KubeClient, namespace: str) -> AsyncIterator[list[Candidate]]:
    both = [Candidate(elector(kube_client, namespace, identity)).start() for identity in ("replica-a", "replica-b")]
    yield both
    for candidate in both:
        if candidate.task is not None and not candidate.task.done():
            candidate.task.cancel()
    await asyncio.gather(*(c.task for c in both if c.task is not None), return_exceptions=True)


def lease_path(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/atc-leader"


async def read_lease(kube: KubeClient, namespace: str) -> Object:
    return await kube.get(lease_path(namespace))


async def the_leader(candidates: list[Candidate]) -> Candidate:
    async def probe() -> Candidate | None:
        leaders = [c for c in candidates if c.elector.is_leader]
        assert len(leaders) <= 1, "two leaders at once"
        return leaders[0] if leaders else None

    return await eventually(probe, timeout=15, interval=0.05, what="a leader")


async def test_exactly_one_candidate_leads(
    candidates: list[Candidate], kube_client: KubeClient, namespace: str
) -> None:
    leader = await the_leader(candidates)
    await asyncio.wait_for(leader.leading.wait(), 5)
    await asyncio.sleep(LEASE_DURATION + 1)
    assert [c.elector.is_leader for c in candidates].count(True) == 1
    assert leader.elector.is_leader, "the leader renews and keeps the Lease"
    follower = next(c for c in candidates if c is not leader)
    assert not follower.leading.is_set()
    spec = (await read_lease(kube_client, namespace))["spec"]
    assert spec["holderIdentity"] == leader.elector.identity
    assert spec["leaseDurationSeconds"] == 3
    assert spec["leaseTransitions"] == 0
    assert MICRO_TIME.match(spec["renewTime"])
    assert MICRO_TIME.match(spec["acquireTime"])
    assert spec["renewTime"] > spec["acquireTime"]


async def test_a_leader_that_stops_renewing_is_replaced_after_the_lease_expires(
    candidates: list[Candidate], kube_client: KubeClient, namespace: str
) -> None:
    leader = await the_leader(candidates)
    follower = next(c for c in candidates if c is not leader)
    assert leader.task is not None
    leader.task.cancel()  # the process dies: no more renewals, no release
    gone_at = time.monotonic()
    await asyncio.wait_for(follower.leading.wait(), LEASE_DURATION + RETRY_PERIOD + 2)
    took = time.monotonic() - gone_at
    assert LEASE_DURATION - RETRY_PERIOD - 0.3 <= took <= LEASE_DURATION + RETRY_PERIOD + 1.0
    spec = (await read_lease(kube_client, namespace))["spec"]
    assert spec["holderIdentity"] == follower.elector.identity
    assert spec["leaseTransitions"] == 1


async def test_a_graceful_stop_releases_the_lease_for_the_other_replica(
    candidates: list[Candidate], kube_client: KubeClient, namespace: str
) -> None:
    leader = await the_leader(candidates)
    follower = next(c for c in candidates if c is not leader)
    await asyncio.wait_for(leader.leading.wait(), 5)
    stopped_at = time.monotonic()
    await leader.end()
    assert leader.cancelled.is_set()
    await asyncio.wait_for(follower.leading.wait(), RETRY_PERIOD + 1.5)
    assert time.monotonic() - stopped_at <= RETRY_PERIOD + 1.5
    spec = (await read_lease(kube_client, namespace))["spec"]
    assert spec["holderIdentity"] == follower.elector.identity
    assert spec["leaseDurationSeconds"] == 3


async def test_a_leader_that_finds_the_lease_taken_stops_leading_at_once(
    kube_client: KubeClient, namespace: str
) -> None:
    candidate = Candidate(elector(kube_client, namespace, "replica-a", exit_on_loss=True)).start()
    await asyncio.wait_for(candidate.leading.wait(), 10)
    assert REGISTRY.get_sample_value("leader_election_master_status", {"name": "atc-leader"}) == 1
    lease = await read_lease(kube_client, namespace)
    now = micro_time(datetime.datetime.now(datetime.UTC))
    lease["spec"].update(holderIdentity="intruder", renewTime=now, leaseDurationSeconds=60)
    await kube_client.request("PUT", lease_path(namespace), body=lease)
    assert candidate.task is not None
    with pytest.raises(LeadershipLostError):
        await asyncio.wait_for(candidate.task, RETRY_PERIOD + 2)
    assert candidate.cancelled.is_set()
    assert REGISTRY.get_sample_value("leader_election_master_status", {"name": "atc-leader"}) == 0
    assert (await read_lease(kube_client, namespace))["spec"]["holderIdentity"] == "intruder"

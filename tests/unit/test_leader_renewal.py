"""Lease renewal's fast path: a holder renews with one PUT, and reads the Lease only when that is refused.

A fake API keeps one Lease with resourceVersion semantics (a PUT with a stale resourceVersion is a 409
Conflict) and counts requests; time is a manual clock.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from typing import Any

from fakes import FakeClock

from atc.k8s.client import KubeClient, KubeError
from atc.model.types import Object
from atc_controller.core.leader import LeaderElector

PATH = "/apis/coordination.k8s.io/v1/namespaces/atc/leases/atc-controller"


class LeaseApi(KubeClient):
    """One Lease, optimistic concurrency by resourceVersion, every request counted."""

    def __init__(self) -> None:
        self.lease: Object | None = None
        self.version = 0
        self.calls: Counter[str] = Counter()

    def _stored(self, body: Object) -> Object:
        self.version += 1
        stored = copy.deepcopy(body)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.lease = stored
        return copy.deepcopy(stored)

    async def get(self, path: str, *, query: Mapping[str, str] | None = None) -> Object:
        self.calls["GET"] += 1
        if self.lease is None:
            raise KubeError(404, "not found", "NotFound")
        return copy.deepcopy(self.lease)

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Object:
        self.calls[method] += 1
        if method == "POST":
            return self._stored(body)
        assert self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified", "Conflict")
        return self._stored(body)

    def taken_over(self, holder: str) -> None:
        """Another writer changes the Lease (a new resourceVersion)."""
        assert self.lease is not None
        self._stored({**self.lease, "spec": {**self.lease["spec"], "holderIdentity": holder}})


def elector(api: LeaseApi, clock: FakeClock) -> LeaderElector:
    return LeaderElector(
        api, "atc", "atc-controller", "me", lease_duration=15, renew_deadline=10, retry_period=2, clock=clock
    )


async def test_a_holder_renews_with_one_put_and_no_get() -> None:
    api, clock = LeaseApi(), FakeClock()
    candidate = elector(api, clock)
    assert await candidate._try_acquire_or_renew()  # creates the Lease
    api.calls.clear()
    for _ in range(5):
        assert await candidate._try_acquire_or_renew()
    assert api.calls == Counter({"PUT": 5})
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "me"


async def test_a_refused_fast_renewal_reads_the_lease_and_sees_the_new_holder() -> None:
    api, clock = LeaseApi(), FakeClock()
    candidate = elector(api, clock)
    assert await candidate._try_acquire_or_renew()
    api.taken_over("other")
    api.calls.clear()
    assert not await candidate._try_acquire_or_renew()  # 409 on the fast path, then a GET shows "other"
    assert api.calls == Counter({"PUT": 1, "GET": 1})
    assert candidate.holder == "other"
    api.calls.clear()
    assert not await candidate._try_acquire_or_renew()  # no Lease held any more: the slow path only
    assert api.calls == Counter({"GET": 1})


async def test_a_conflict_with_the_same_holder_is_repaired_by_the_slow_path() -> None:
    api, clock = LeaseApi(), FakeClock()
    candidate = elector(api, clock)
    assert await candidate._try_acquire_or_renew()
    api.taken_over("me")  # e.g. a label added by someone: new resourceVersion, same holder
    api.calls.clear()
    assert await candidate._try_acquire_or_renew()
    assert api.calls == Counter({"PUT": 2, "GET": 1})
    api.calls.clear()
    assert await candidate._try_acquire_or_renew()
    assert api.calls == Counter({"PUT": 1})

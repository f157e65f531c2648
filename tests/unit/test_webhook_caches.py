"""The webhook's watch-backed caches against ``FakeKube``: Airways, instance metadata, revision Secrets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import settle
from support import eventually
from webhook_fakes import (
    CLUSTER_FLIGHT_REF,
    FLIGHT_REF,
    SECRETS,
    FakeKube,
    airway,
    instance_metadata,
    revision_secret,
)

from atc.k8s.crds import AIRWAYS_PATH as AIRWAYS
from atc.k8s.crds import CLUSTERFLIGHTS_PATH as CLUSTERFLIGHTS
from atc.k8s.crds import FLIGHTS_PATH as FLIGHTS
from atc.k8s.reflector import METADATA_LIST_ACCEPT
from atc.model.specs import effective_mode
from atc.model.types import Object
from atc_webhook.caches import (
    FLIGHT_KINDS,
    AirwayInfo,
    CachedRevision,
    RevisionCache,
    WebhookCaches,
    slim_instance,
    slim_revision,
)

INSTANCES = "/apis/examples.com/v1/backends"


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
async def caches(kube: FakeKube) -> AsyncIterator[WebhookCaches]:
    caches = WebhookCaches(kube, crd_retry_max_seconds=0.05)
    task = asyncio.create_task(caches.run())
    yield caches
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def synced(caches: WebhookCaches) -> None:
    assert await caches.wait_synced(5), "caches did not sync"


# ----------------------------------------------------------------------------------------------- modes
@pytest.mark.parametrize(
    ("override", "airway_mode", "expected"),
    [
        ("dynamic", "static", "dynamic"),
        ("", "static", "static"),
        ("bogus", "subscription", "subscription"),
        ("", "", "standard"),
        ("", "bogus", "standard"),
    ],
)
def test_effective_mode(override: str, airway_mode: str, expected: str) -> None:
    annotations = {"overrides.yoke.cd/mode": override} if override else {}
    assert effective_mode(annotations, airway_mode) == expected


def test_airway_info_from_the_template() -> None:
    info = AirwayInfo.from_object(airway(version="v2", mode="dynamic"))
    assert info is not None
    assert (info.group_kind, info.api_version, info.collection_path, info.mode, info.namespaced) == (
        "Backend.examples.com",
        "examples.com/v2",
        "/apis/examples.com/v2/backends",
        "dynamic",
        True,
    )
    assert AirwayInfo.from_object({"metadata": {"name": "x"}, "spec": {}}) is None


# ----------------------------------------------------------------------------------------------- instances
async def test_instances_are_found_by_ref_with_their_mode(kube: FakeKube, caches: WebhookCaches) -> None:
    kube.collections[AIRWAYS] = [airway()]
    kube.collections[INSTANCES] = [
        instance_metadata("one", "ns"),
        instance_metadata("two", "ns", {"overrides.yoke.cd/mode": "dynamic"}),
    ]
    await synced(caches)
    one = caches.instance("ns/Backend.examples.com:one")
    assert one is not None
    assert (one.mode, one.uid, one.airway.name) == ("static", "uid-one", "backends.examples.com")
    two = caches.instance("ns/Backend.examples.com:two")
    assert two is not None
    assert two.mode == "dynamic"
    assert caches.instance("ns/Backend.examples.com:three") is None
    assert caches.instance("ns/Other.examples.com:one") is None
    assert kube.accepts[INSTANCES] == METADATA_LIST_ACCEPT
    assert caches.sizes() == {"airways": 1, "instances": 2, "flights": 0, "revisions": 0}


async def test_an_airway_whose_crd_is_not_served_does_not_block_readiness(
    kube: FakeKube, caches: WebhookCaches
) -> None:
    kube.collections[AIRWAYS] = [airway()]  # no INSTANCES collection: 404
    await synced(caches)
    assert caches.airway_for("Backend.examples.com") is not None
    assert caches.instance("ns/Backend.examples.com:one") is None
    kube.collections[INSTANCES] = [instance_metadata("one", "ns")]

    async def found() -> bool:
        return caches.instance("ns/Backend.examples.com:one") is not None

    await eventually(found, timeout=5, interval=0.02, what="instance listed once its CRD is served")


async def test_an_airway_outside_the_webhooks_rbac_does_not_block_readiness(
    kube: FakeKube, caches: WebhookCaches
) -> None:
    kube.collections[AIRWAYS] = [airway()]
    kube.collections[INSTANCES] = [instance_metadata("one", "ns")]
    kube.forbidden.add(INSTANCES)
    await synced(caches)
    assert caches.instance("ns/Backend.examples.com:one") is None
    kube.forbidden.clear()  # the RBAC is widened: the reflector's retry lists the instances

    async def found() -> bool:
        return caches.instance("ns/Backend.examples.com:one") is not None

    await eventually(found, timeout=5, interval=0.02, what="instance listed once the RBAC allows it")


async def test_airways_without_their_crd_installed_do_not_block_readiness(kube: FakeKube) -> None:
    del kube.collections[AIRWAYS]
    caches = WebhookCaches(kube)
    task = asyncio.create_task(caches.run())
    try:
        await synced(caches)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_airways_come_change_and_go(kube: FakeKube, caches: WebhookCaches) -> None:
    kube.collections[INSTANCES] = [instance_metadata("one", "ns")]
    await synced(caches)
    assert caches.instance("ns/Backend.examples.com:one") is None
    kube.emit(AIRWAYS, "ADDED", airway())

    async def mode() -> str:
        found = caches.instance("ns/Backend.examples.com:one")
        return found.mode if found else ""

    assert await eventually(mode, timeout=5, interval=0.02) == "static"
    kube.emit(AIRWAYS, "MODIFIED", airway(mode="dynamic"))
    await settle()
    assert await mode() == "dynamic"
    kube.emit(AIRWAYS, "DELETED", airway(mode="dynamic"))
    await settle()
    assert caches.airway_for("Backend.examples.com") is None
    assert caches.instance("ns/Backend.examples.com:one") is None


async def test_instance_annotation_changes_are_followed(kube: FakeKube, caches: WebhookCaches) -> None:
    kube.collections[AIRWAYS] = [airway()]
    kube.collections[INSTANCES] = [instance_metadata("one", "ns")]
    await synced(caches)
    kube.emit(INSTANCES, "MODIFIED", instance_metadata("one", "ns", {"overrides.yoke.cd/mode": "subscription"}))
    await settle()
    found = caches.instance("ns/Backend.examples.com:one")
    assert found is not None
    assert found.mode == "subscription"


# ----------------------------------------------------------------------------------------------- flights
def test_the_flight_kinds_have_their_crds_identity() -> None:
    flight, cluster = FLIGHT_KINDS["Flight.yoke.cd"], FLIGHT_KINDS["ClusterFlight.yoke.cd"]
    assert (flight.api_version, flight.kind, flight.collection_path, flight.namespaced, flight.mode) == (
        "yoke.cd/v1alpha1",
        "Flight",
        FLIGHTS,
        True,
        "standard",
    )
    assert (cluster.api_version, cluster.kind, cluster.collection_path, cluster.namespaced) == (
        "yoke.cd/v1alpha1",
        "ClusterFlight",
        CLUSTERFLIGHTS,
        False,
    )


async def test_flights_are_found_by_ref_with_their_own_mode(kube: FakeKube, caches: WebhookCaches) -> None:
    kube.collections[FLIGHTS] = [
        instance_metadata("f", "ns", {"overrides.yoke.cd/mode": "static"}),
        instance_metadata("plain", "ns"),
        instance_metadata("odd", "ns", {"overrides.yoke.cd/mode": "bogus"}),
    ]
    kube.collections[CLUSTERFLIGHTS] = [instance_metadata("cf", "", {"overrides.yoke.cd/mode": "dynamic"})]
    await synced(caches)  # no Airway at all: Flights need none
    flight = caches.instance(FLIGHT_REF)
    assert flight is not None
    assert (flight.airway, flight.namespace, flight.name, flight.uid, flight.mode) == (
        FLIGHT_KINDS["Flight.yoke.cd"],
        "ns",
        "f",
        "uid-f",
        "static",
    )
    assert flight.is_flight
    assert flight.history == ("ns/Flight.yoke.cd:f", "ns")
    cluster = caches.instance(CLUSTER_FLIGHT_REF)
    assert cluster is not None
    assert (cluster.airway.kind, cluster.namespace, cluster.name, cluster.mode) == (
        "ClusterFlight",
        "",
        "cf",
        "dynamic",
    )
    assert cluster.history == ("/ClusterFlight.yoke.cd:cf", "default")
    for name, mode in (("plain", "standard"), ("odd", "standard")):
        found = caches.instance(f"ns/Flight.yoke.cd:{name}")
        assert found is not None
        assert found.mode == mode
    assert caches.instance("other/Flight.yoke.cd:f") is None
    assert caches.instance("ns/ClusterFlight.yoke.cd:f") is None
    assert kube.accepts[FLIGHTS] == METADATA_LIST_ACCEPT
    assert kube.accepts[CLUSTERFLIGHTS] == METADATA_LIST_ACCEPT
    assert caches.sizes()["flights"] == 4


async def test_an_instance_is_not_a_flight(kube: FakeKube, caches: WebhookCaches) -> None:
    kube.collections[AIRWAYS] = [airway()]
    kube.collections[INSTANCES] = [instance_metadata("one", "ns")]
    await synced(caches)
    one = caches.instance("ns/Backend.examples.com:one")
    assert one is not None
    assert (one.is_flight, one.history) == (False, None)


async def test_flight_mode_changes_are_followed(kube: FakeKube, caches: WebhookCaches) -> None:
    kube.collections[FLIGHTS] = [instance_metadata("f", "ns")]
    await synced(caches)
    kube.emit(FLIGHTS, "MODIFIED", instance_metadata("f", "ns", {"overrides.yoke.cd/mode": "subscription"}))
    await settle()
    found = caches.instance(FLIGHT_REF)
    assert found is not None
    assert found.mode == "subscription"
    kube.emit(FLIGHTS, "DELETED", instance_metadata("f", "ns", {"overrides.yoke.cd/mode": "subscription"}))
    await settle()
    assert caches.instance(FLIGHT_REF) is None


@pytest.mark.parametrize("problem", ["not served", "forbidden"])
async def test_flights_the_webhook_cannot_list_do_not_block_readiness(
    kube: FakeKube, caches: WebhookCaches, problem: str
) -> None:
    if problem == "not served":
        del kube.collections[FLIGHTS]  # the controller has not installed the yoke.cd CRDs yet
    else:
        kube.forbidden.add(FLIGHTS)
    await synced(caches)
    kube.collections[FLIGHTS] = [instance_metadata("f", "ns", {"overrides.yoke.cd/mode": "static"})]
    kube.forbidden.clear()

    async def found() -> bool:
        return caches.instance(FLIGHT_REF) is not None

    await eventually(found, timeout=5, interval=0.02, what="Flight listed once it can be")


class SlowFlights(FakeKube):
    """Answers the Flight list only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def request(self, method: str, path: str, **kwargs: Any) -> Object:
        if method == "GET" and path == FLIGHTS:
            await self.release.wait()
        return await super().request(method, path, **kwargs)


async def test_readiness_waits_for_the_flights_to_be_listed() -> None:
    kube = SlowFlights()
    caches = WebhookCaches(kube, crd_retry_max_seconds=0.05)
    task = asyncio.create_task(caches.run())
    try:
        assert not await caches.wait_synced(0.3)
        kube.release.set()
        await synced(caches)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


CHART_RBAC = Path(__file__).resolve().parents[2] / "charts" / "atc" / "templates" / "rbac.yaml"


def chart_webhook_rules() -> list[Object]:
    """The webhook ClusterRole's rules in the chart template, without those whose text is templated."""
    text = CHART_RBAC.read_text()
    role = text[text.index("name: {{ $fullname }}-webhook") :]
    block = role[role.index("rules:\n") + len("rules:\n") : role.index("\n---")]
    items: list[list[str]] = []
    for line in block.splitlines():
        if line.startswith("  - "):
            items.append([])
        if items and not line.lstrip().startswith(("#", "{{")):
            items[-1].append(line)
    kept = "\n".join(line for item in items if not any("{{" in line for line in item) for line in item)
    rules: list[Object] = yaml.safe_load(kept)
    return rules


def test_the_chart_lets_the_webhook_list_and_watch_flights() -> None:
    rules = chart_webhook_rules()
    for resource in ("flights", "clusterflights"):
        granted = {
            verb
            for rule in rules
            if "yoke.cd" in rule["apiGroups"] and resource in rule["resources"]
            for verb in rule["verbs"]
        }
        assert {"list", "watch"} <= granted, resource


# ----------------------------------------------------------------------------------------------- revisions
def configmap(name: str, namespace: str = "ns", value: str = "1") -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"v": value},
    }


def test_the_active_revision_is_the_latest_active_at() -> None:
    cache = RevisionCache()
    old = revision_secret("yoke.a", "ns", "rel", [[configmap("cm", value="old")]], active_at="2026-01-01T00:00:00Z")
    new = revision_secret("yoke.b", "ns", "rel", [[configmap("cm", value="new")]], active_at="2026-01-02T00:00:00Z")
    cache.on_event("ADDED", new, None)
    cache.on_event("ADDED", old, None)
    active = cache.active("rel", "ns")
    assert active is not None
    assert active.name == "yoke.b"
    assert active.desired("v1", "ConfigMap", "cm") == configmap("cm", value="new")
    assert cache.active("rel", "other") is None
    assert cache.active("other", "ns") is None
    cache.on_event("DELETED", new, new)
    active = cache.active("rel", "ns")
    assert active is not None
    assert active.name == "yoke.a"
    assert len(cache) == 1


def test_desired_matches_apiversion_kind_and_name_in_any_namespace() -> None:
    cache = RevisionCache()
    stages = [[configmap("cm", namespace="elsewhere")], [configmap("cm", value="second")]]
    cache.on_event("ADDED", revision_secret("yoke.a", "ns", "rel", stages, active_at="2026-01-01T00:00:00Z"), None)
    active = cache.active("rel", "ns")
    assert active is not None
    assert active.desired("v1", "ConfigMap", "cm") == configmap("cm", namespace="elsewhere")  # the first one
    assert active.desired("v2", "ConfigMap", "cm") is None
    assert active.desired("v1", "Secret", "cm") is None


def test_stages_are_decoded_once_per_resource_version() -> None:
    cache = RevisionCache()
    secret = revision_secret("yoke.a", "ns", "rel", [[configmap("cm")]], active_at="2026-01-01T00:00:00Z")
    cache.on_event("ADDED", secret, None)
    first = cache.active("rel", "ns")
    assert first is not None
    stages = first.stages()
    cache.on_event("RESYNC", secret, None)
    again = cache.active("rel", "ns")
    assert again is first
    assert again.stages() is stages
    changed = revision_secret("yoke.a", "ns", "rel", [[configmap("cm", value="2")]], active_at="2026-01-01T00:00:00Z")
    changed["metadata"]["resourceVersion"] = "2"
    cache.on_event("MODIFIED", changed, secret)
    latest = cache.active("rel", "ns")
    assert latest is not None
    assert latest.desired("v1", "ConfigMap", "cm") == configmap("cm", value="2")


def test_legacy_revisions_labelled_with_the_raw_release_name_count() -> None:
    cache = RevisionCache()
    secret = revision_secret("yoke.a", "ns", "rel", [[configmap("cm")]], active_at="2026-01-01T00:00:00Z")
    secret["metadata"]["labels"]["internal.yoke/release"] = "rel"
    cache.on_event("ADDED", secret, None)
    assert cache.active("rel", "ns") is not None


def test_undecodable_revisions_have_no_desired_objects() -> None:
    secret = revision_secret("yoke.a", "ns", "rel", [], active_at="2026-01-01T00:00:00Z")
    secret["data"]["resources"] = base64.b64encode(b"\x1f\x8bnot gzip").decode()
    revision = CachedRevision.from_secret(secret)
    assert revision.stages() == []
    assert revision.desired("v1", "ConfigMap", "cm") is None


async def test_revision_secrets_are_watched_by_label(kube: FakeKube, caches: WebhookCaches) -> None:
    secret = revision_secret("yoke.a", "ns", "rel", [[configmap("cm")]], active_at="2026-01-01T00:00:00Z")
    kube.collections[SECRETS] = [secret]
    await synced(caches)
    assert caches.desired_object("rel", "ns", "v1", "ConfigMap", "cm") == configmap("cm")
    assert caches.active_stages("rel", "ns") == [[configmap("cm")]]
    assert caches.active_stages("missing", "ns") is None


def test_the_caches_keep_only_what_admission_reads() -> None:
    """Slimmed objects answer exactly as full ones, and hold no managedFields or foreign labels/annotations."""
    full = revision_secret("yoke.a", "ns", "rel", [[configmap("cm")]], active_at="2026-01-01T00:00:00Z")
    full["metadata"]["managedFields"] = [{"manager": "atc", "fieldsV1": {"f:data": {}}}]
    full["metadata"]["labels"]["other"] = "x"
    slim = slim_revision(full)
    assert "managedFields" not in slim["metadata"]
    assert set(slim["metadata"]["labels"]) == {"internal.yoke/release"}
    assert set(slim["metadata"]["annotations"]) == {"internal.yoke/created-at", "internal.yoke/active-at"}
    from_full, from_slim = CachedRevision.from_secret(full), CachedRevision.from_secret(slim)
    assert (from_slim.name, from_slim.active_nanos, from_slim.created_nanos) == (
        from_full.name,
        from_full.active_nanos,
        from_full.created_nanos,
    )
    assert from_slim.stages() == from_full.stages()
    instance = instance_metadata("b", "ns", {"overrides.yoke.cd/mode": "static", "other": "x"})
    instance["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    assert slim_instance(instance) == {
        "metadata": {
            "name": "b",
            "namespace": "ns",
            "uid": "uid-b",
            "resourceVersion": "5",
            "annotations": {"overrides.yoke.cd/mode": "static"},
        }
    }

"""``/validations/resources`` answered end to end: real caches fed by ``FakeKube``, the decision, the queued Events.

The decisions alone, without fakes, are in ``test_webhook_decisions.py``; this is the route's wiring
(docs/webhook.md, "The resources guard").
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from webhook_fakes import (
    CLUSTER_FLIGHT_HISTORY,
    FLIGHT_HISTORY,
    RELEASE,
    SECRETS,
    FakeKube,
    airway,
    desired_configmap,
    desired_flight_child,
    flight_child,
    instance_metadata,
    live_configmap,
    revision_secret,
)

from atc.k8s.crds import AIRWAYS_PATH as AIRWAYS
from atc.k8s.crds import CLUSTERFLIGHTS_PATH as CLUSTERFLIGHTS
from atc.k8s.crds import FLIGHTS_PATH as FLIGHTS
from atc.k8s.signals import parse_child_changed
from atc.model.types import Object
from atc_webhook.admission import AdmissionHTTPError, Review, Verdict, parse_review
from atc_webhook.caches import WebhookCaches
from atc_webhook.context import WebhookContext
from atc_webhook.routers.resources import admit_resource_change
from atc_webhook.server import build_app
from atc_webhook.settings import WebhookSettings
from atc_webhook.signals import SignalWriter
from atc_webhook.tls import CertificateReloader

INSTANCES = "/apis/examples.com/v1/backends"
OVERRIDE_MODE = "overrides.yoke.cd/mode"
ADMIN = "admin"
GC = "system:serviceaccount:kube-system:generic-garbage-collector"


def review(
    operation: str, old: Object | None, new: Object | None, *, user: str = ADMIN, dry_run: bool = False
) -> Review:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "req-1",
            "operation": operation,
            "userInfo": {"username": user},
            "object": new,
            "oldObject": old,
            "dryRun": dry_run,
        },
    }
    return parse_review(json.dumps(body).encode())


def update(change: Any, **kwargs: Any) -> Review:
    old = live_configmap()
    new = copy.deepcopy(old)
    change(new)
    return review("UPDATE", old, new, **kwargs)


def edit_data(obj: Object) -> None:
    obj["data"]["key"] = "changed"


class World:
    """The fake API server, the caches over it and the context the router uses."""

    def __init__(self, tmp_path: Path, mode: str = "static", **annotations: str) -> None:
        self.kube = FakeKube()
        self.kube.collections[AIRWAYS] = [airway(mode=mode)]
        self.kube.collections[INSTANCES] = [instance_metadata("inst", "ns", annotations)]
        # Flight ns/f and ClusterFlight cf, in the mode the instance's override names (standard without one)
        flight_annotations = {key: value for key, value in annotations.items() if key == OVERRIDE_MODE}
        self.kube.collections[FLIGHTS] = [instance_metadata("f", "ns", flight_annotations)]
        self.kube.collections[CLUSTERFLIGHTS] = [instance_metadata("cf", "", flight_annotations)]
        stamp = "2026-01-01T00:00:00Z"
        self.kube.collections[SECRETS] = [
            revision_secret("yoke.abc", "ns", RELEASE, [[desired_configmap()]], active_at=stamp),
            revision_secret("yoke.f", "ns", FLIGHT_HISTORY, [[desired_flight_child()]], active_at=stamp),
            revision_secret(
                "yoke.cf", "default", CLUSTER_FLIGHT_HISTORY, [[desired_flight_child("ClusterFlight")]], active_at=stamp
            ),
        ]
        self.caches = WebhookCaches(self.kube)
        self.signals = SignalWriter(self.kube, reporting_instance="pod-1")
        tls = CertificateReloader(tmp_path / "none.crt", tmp_path / "none.key")
        settings = WebhookSettings(cache_sync_wait_seconds=0.2)
        self.context = WebhookContext(settings, self.kube, self.caches, self.signals, tls)

    async def decide(self, request: Review) -> Verdict:
        return await admit_resource_change(self.context, request)

    def signalled(self) -> list[Object]:
        return [body for path, body in self.kube.posted if path.endswith("/events")]


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    mode, annotations = getattr(request, "param", ("static", {}))
    world = World(tmp_path, mode, **annotations)
    tasks = [asyncio.create_task(world.caches.run()), asyncio.create_task(world.signals.run())]
    assert await world.caches.wait_synced(5)
    yield world
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def denied(verdict: Verdict, message: str) -> bool:
    return (verdict.allowed, verdict.reason, verdict.message) == (False, "BadRequest", message)


# ----------------------------------------------------------------------------------------------- every mode
async def test_changing_a_yoke_annotation_is_denied(world: World) -> None:
    def retarget(obj: Object) -> None:
        obj["metadata"]["annotations"]["instance.atc.yoke.cd/release"] = "other"
        obj["metadata"]["annotations"]["instance.atc.yoke.cd/instanceRef"] = "ns/Backend.examples.com:x"

    verdict = await world.decide(update(retarget))
    assert denied(
        verdict,
        "cannot modify yoke annotations:\n  - instance.atc.yoke.cd/release\n  - instance.atc.yoke.cd/instanceRef",
    )


async def test_a_noop_update_is_allowed(world: World) -> None:
    def bump(obj: Object) -> None:
        obj["metadata"].update(resourceVersion="101", managedFields=[{"manager": "kubectl"}])

    assert (await world.decide(update(bump))).allowed


async def test_children_of_unknown_instances_or_without_instance_ref_are_allowed(world: World) -> None:
    def orphan(obj: Object) -> None:
        obj["metadata"]["annotations"]["instance.atc.yoke.cd/instanceRef"] = "ns/Backend.examples.com:gone"

    old = live_configmap()
    orphan(old)
    new = copy.deepcopy(old)
    edit_data(new)
    assert (await world.decide(review("UPDATE", old, new))).allowed
    del old["metadata"]["annotations"]["instance.atc.yoke.cd/instanceRef"]
    new = copy.deepcopy(old)
    edit_data(new)
    assert (await world.decide(review("UPDATE", old, new))).allowed


# ----------------------------------------------------------------------------------------------- static
async def test_static_denies_changing_what_the_flight_set(world: World) -> None:
    assert denied(await world.decide(update(edit_data)), "cannot modify flight sub-resources")


async def test_static_allows_what_the_flight_did_not_set(world: World) -> None:
    def harmless(obj: Object) -> None:
        obj["metadata"]["labels"]["team"] = "blue"
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
        obj["status"] = {"observed": True}

    assert (await world.decide(update(harmless))).allowed


async def test_static_denies_deletion_except_by_kube_system_controllers(world: World) -> None:
    assert denied(
        await world.decide(review("DELETE", live_configmap(), None)),
        "cannot delete resources managed by Air-Traffic-Controller",
    )
    assert (await world.decide(review("DELETE", live_configmap(), None, user=GC))).allowed


async def test_static_treats_an_update_of_an_object_being_deleted_as_a_deletion(world: World) -> None:
    def finalize(obj: Object) -> None:
        obj["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z", finalizers=[])

    assert denied(await world.decide(update(finalize)), "cannot delete resources managed by Air-Traffic-Controller")
    assert (await world.decide(update(finalize, user=GC))).allowed


async def test_static_allows_an_object_missing_from_the_revision(world: World) -> None:
    old = live_configmap()
    old["metadata"]["name"] = "not-in-revision"
    new = copy.deepcopy(old)
    edit_data(new)
    assert (await world.decide(review("UPDATE", old, new))).allowed


async def test_static_makes_no_api_call(world: World) -> None:
    before = sum(world.kube.requests.values())
    for _ in range(5):
        await world.decide(update(edit_data))
    assert sum(world.kube.requests.values()) == before


# ----------------------------------------------------------------------------------------------- dynamic
@pytest.mark.parametrize(
    "world",
    [
        ("dynamic", {}),
        ("static", {"overrides.yoke.cd/mode": "dynamic"}),
        ("standard", {"overrides.yoke.cd/mode": "subscription"}),
    ],
    indirect=True,
    ids=["airway dynamic", "override dynamic", "override subscription"],
)
async def test_signalling_modes_allow_and_record_an_event(world: World) -> None:
    assert (await world.decide(update(edit_data))).allowed
    await world.signals.close(5)
    [event] = world.signalled()
    assert event["metadata"]["namespace"] == "ns"
    assert event["metadata"]["labels"] == {"atc.yoke.cd/signal": "child-changed"}
    assert event["metadata"]["annotations"] == {
        "atc.yoke.cd/child-ref": "ns/ConfigMap:cm",
        "atc.yoke.cd/child-resource-version": "100",
        "atc.yoke.cd/operation": "UPDATE",
    }
    assert event["involvedObject"] == {
        "apiVersion": "examples.com/v1",
        "kind": "Backend",
        "name": "inst",
        "namespace": "ns",
        "uid": "uid-inst",
    }
    assert (event["reason"], event["type"], event["reportingComponent"]) == (
        "SubresourceChanged",
        "Normal",
        "atc-webhook",
    )
    assert event["message"] == "UPDATE of ns/ConfigMap:cm by admin"
    change = parse_child_changed(event)
    assert change is not None
    assert (change.instance_key, change.child_resource_version, change.username) == ("ns/inst", "100", "admin")


@pytest.mark.parametrize("world", [("dynamic", {})], indirect=True)
async def test_deletions_are_signalled_and_dry_runs_are_not(world: World) -> None:
    assert (await world.decide(review("DELETE", live_configmap(), None))).allowed
    assert (await world.decide(update(edit_data, dry_run=True))).allowed
    await world.signals.close(5)
    [event] = world.signalled()
    assert event["metadata"]["annotations"]["atc.yoke.cd/operation"] == "DELETE"


@pytest.mark.parametrize("world", [("standard", {})], indirect=True)
async def test_standard_allows_without_a_signal(world: World) -> None:
    assert (await world.decide(update(edit_data))).allowed
    assert (await world.decide(review("DELETE", live_configmap(), None))).allowed
    await world.signals.close(5)
    assert world.signalled() == []


# ----------------------------------------------------------------------------------------------- Flights
def flight_update(kind: str, change: Any, **kwargs: Any) -> Review:
    old = flight_child(kind)
    new = copy.deepcopy(old)
    change(new)
    return review("UPDATE", old, new, **kwargs)


@pytest.mark.parametrize("world", [("standard", {OVERRIDE_MODE: "static"})], indirect=True)
@pytest.mark.parametrize("kind", ["Flight", "ClusterFlight"])
async def test_a_static_flight_denies_changing_what_its_flight_set(world: World, kind: str) -> None:
    # the children name the bare release; the comparison finds the Flight's history all the same
    assert denied(await world.decide(flight_update(kind, edit_data)), "cannot modify flight sub-resources")

    def harmless(obj: Object) -> None:
        obj["metadata"]["labels"]["team"] = "blue"

    assert (await world.decide(flight_update(kind, harmless))).allowed
    assert denied(
        await world.decide(review("DELETE", flight_child(kind), None)),
        "cannot delete resources managed by Air-Traffic-Controller",
    )


@pytest.mark.parametrize("world", [("standard", {OVERRIDE_MODE: "dynamic"})], indirect=True)
async def test_a_dynamic_flight_is_signalled_as_the_involved_object(world: World) -> None:
    assert (await world.decide(flight_update("Flight", edit_data))).allowed
    await world.signals.close(5)
    [event] = world.signalled()
    path = next(path for path, body in world.kube.posted if body is event)
    assert path == "/api/v1/namespaces/ns/events"
    assert event["metadata"]["namespace"] == "ns"
    assert event["involvedObject"] == {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Flight",
        "name": "f",
        "namespace": "ns",
        "uid": "uid-f",
    }
    change = parse_child_changed(event)
    assert change is not None
    assert (change.instance_key, change.child_ref, change.child_resource_version) == ("ns/f", "ns/ConfigMap:cm", "100")


@pytest.mark.parametrize("world", [("standard", {OVERRIDE_MODE: "subscription"})], indirect=True)
async def test_a_cluster_flights_signal_is_written_to_the_default_namespace(world: World) -> None:
    assert (await world.decide(review("DELETE", flight_child("ClusterFlight"), None))).allowed
    await world.signals.close(5)
    [event] = world.signalled()
    path = next(path for path, body in world.kube.posted if body is event)
    assert path == "/api/v1/namespaces/default/events"  # what the API server accepts for a cluster-scoped object
    assert event["involvedObject"] == {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "ClusterFlight",
        "name": "cf",
        "uid": "uid-cf",
    }
    change = parse_child_changed(event)
    assert change is not None
    assert (change.instance_key, change.operation) == ("/cf", "DELETE")


@pytest.mark.parametrize("kind", ["Flight", "ClusterFlight"])
async def test_a_standard_flight_allows_without_a_signal(world: World, kind: str) -> None:
    # the default world: the Flights carry no mode annotation
    assert (await world.decide(flight_update(kind, edit_data))).allowed
    assert (await world.decide(review("DELETE", flight_child(kind), None))).allowed
    await world.signals.close(5)
    assert world.signalled() == []


# ----------------------------------------------------------------------------------------------- not synced
async def test_requests_wait_for_the_caches_then_fail(tmp_path: Path) -> None:
    world = World(tmp_path)  # caches never started
    with pytest.raises(AdmissionHTTPError, match="caches are not synced yet") as failure:
        await world.decide(update(edit_data))
    assert failure.value.status == 503
    # what needs no cache is still answered
    verdict = await world.decide(update(lambda o: o["metadata"]["annotations"].pop("instance.atc.yoke.cd/release")))
    assert not verdict.allowed


async def test_readyz_follows_tls_and_caches(tmp_path: Path) -> None:
    world = World(tmp_path)
    app = build_app(world.context)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.text == "[-]caches failed\n[-]tls failed\nreadyz check failed\n"
        assert (await client.get("/healthz")).status_code == 200
        missing = await client.get("/nowhere")
        assert (missing.status_code, missing.text) == (404, "route not found: /nowhere\n")

"""Modes for Flights and ClusterFlights end to end (docs/flight-modes.md).

A Flight or ClusterFlight takes its mode from ``overrides.yoke.cd/mode``: standard leaves edited
children alone, static refuses edits at admission, dynamic puts an edited child back through the
webhook's signal (and the controller's own child watch), subscription re-runs only for what the
flight looked up. Both services run as their chart ServiceAccounts, the webhook called over TLS.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from harness import Harness
from support import eventually

from atc.k8s.client import KubeError
from atc.model.types import Object

pytestmark = pytest.mark.cluster
MERGE = "application/merge-patch+json"
MODE = "overrides.yoke.cd/mode"


async def create_flight(harness: Harness, kind: str, name: str, spec: Object, mode: str | None) -> str:
    return await harness.create_flight(kind, name, spec, annotations={MODE: mode} if mode else None)


async def delete_flight(harness: Harness, path: str) -> None:
    await harness.kube.request("DELETE", path)
    await harness.gone(path)


def multi_spec(harness: Harness, name: str, value: str = "1") -> Object:
    return {
        "wasmUrl": str(harness.build_flight("multi")),
        "inputObject": {
            "metadata": {"name": name, "namespace": harness.namespace},
            "spec": {"configMaps": {"a": value}},
        },
    }


def configmap(harness: Harness, name: str) -> str:
    return f"/api/v1/namespaces/{harness.namespace}/configmaps/{name}"


async def edit(harness: Harness, path: str, value: str) -> None:
    await harness.kube.request("PATCH", path, body={"data": {"value": value}}, content_type=MERGE)


async def value_of(harness: Harness, path: str) -> str:
    return str((await harness.kube.get(path))["data"].get("value", ""))


async def test_standard_flight_leaves_an_edited_child_alone(harness: Harness) -> None:
    await harness.start_atc()
    path = await create_flight(harness, "Flight", "std", multi_spec(harness, "std"), None)
    await harness.wait_ready(path)
    child = await harness.kube.get(configmap(harness, "std-a"))
    assert "instance.atc.yoke.cd/instanceRef" not in child["metadata"]["annotations"]  # as yoke writes it
    await edit(harness, configmap(harness, "std-a"), "edited")
    await asyncio.sleep(3)  # time a dynamic Flight needs to put it back (test_dynamic_flight_...)
    assert await value_of(harness, configmap(harness, "std-a")) == "edited"
    assert [e for e in await harness.events("std") if e["reason"] == "SubresourceChanged"] == []
    await delete_flight(harness, path)


@pytest.mark.parametrize("kind", ["Flight", "ClusterFlight"])
async def test_static_flight_refuses_edits_of_its_children(harness: Harness, kind: str) -> None:
    await harness.start_atc()
    name = "st" if kind == "Flight" else f"st-{harness.namespace}"
    path = await create_flight(harness, kind, name, multi_spec(harness, name), "static")
    await harness.wait_ready(path)
    child = configmap(harness, f"{name}-a")
    with pytest.raises(KubeError) as edited:
        await edit(harness, child, "hacked")
    assert edited.value.message == (
        'admission webhook "resources.yoke.cd" denied the request: cannot modify flight sub-resources'
    )
    with pytest.raises(KubeError) as deleted:
        await harness.kube.request("DELETE", child)
    assert "cannot delete resources managed by Air-Traffic-Controller" in deleted.value.message
    live = await harness.kube.get(child)
    ref = f"{'' if kind == 'ClusterFlight' else harness.namespace}/{kind}.yoke.cd:{name}"
    assert live["metadata"]["annotations"]["instance.atc.yoke.cd/instanceRef"] == ref
    await harness.kube.request("PUT", child, body=live)  # a no-op update passes
    await delete_flight(harness, path)
    await harness.gone(child)


async def test_static_flight_puts_back_a_child_edited_while_the_webhook_is_down(harness: Harness) -> None:
    """The guard fails open, as yoke's does; the controller's own child watch repairs the edit."""
    _, webhook = await harness.start_atc()
    path = await create_flight(harness, "Flight", "net", multi_spec(harness, "net"), "static")
    await harness.wait_ready(path)
    webhook.process.stop()
    await edit(harness, configmap(harness, "net-a"), "hacked")

    async def restored() -> bool:
        return await value_of(harness, configmap(harness, "net-a")) == "1"

    await eventually(restored, timeout=30, what="the edited child put back by the controller's watch")


async def test_dynamic_flight_puts_an_edited_child_back(harness: Harness) -> None:
    await harness.start_atc()
    path = await create_flight(harness, "Flight", "dyn", multi_spec(harness, "dyn"), "dynamic")
    await harness.wait_ready(path)
    await edit(harness, configmap(harness, "dyn-a"), "hacked")

    async def restored() -> bool:
        return await value_of(harness, configmap(harness, "dyn-a")) == "1"

    await eventually(restored, timeout=30, what="the edited child put back")
    signal = await harness.wait_event("dyn", "SubresourceChanged")
    assert signal["involvedObject"]["kind"] == "Flight"
    assert signal["metadata"]["annotations"]["atc.yoke.cd/child-ref"] == f"{harness.namespace}/ConfigMap:dyn-a"
    await harness.kube.request("DELETE", configmap(harness, "dyn-a"))  # a deleted child comes back too

    async def recreated() -> bool:
        return await harness.kube.get_or_none(configmap(harness, "dyn-a")) is not None

    await eventually(recreated, timeout=30, what="the deleted child created again")
    await delete_flight(harness, path)


def secret_hash(data: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}={data[k]}\n" for k in sorted(data)).encode()).hexdigest()


async def test_subscription_flight_re_runs_for_what_it_looked_up_only(harness: Harness) -> None:
    await harness.start_atc()
    secrets = f"/api/v1/namespaces/{harness.namespace}/secrets"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "conn"}, "stringData": {"url": "db:1"}}
    await harness.kube.request("POST", secrets, body=secret)
    spec = {
        "wasmUrl": str(harness.build_flight("lookup")),
        "clusterAccess": True,
        "resourceAccessMatchers": [f"{harness.namespace}/Secret:conn"],
        "inputObject": {
            "metadata": {"name": "sub", "namespace": harness.namespace},
            "spec": {"secretName": "conn", "secretNamespace": harness.namespace},
        },
    }
    path = await create_flight(harness, "Flight", "sub", spec, "subscription")
    await harness.wait_ready(path)
    report = configmap(harness, "sub-lookup")
    assert (await harness.kube.get(report))["data"]["hash"] == secret_hash({"url": "db:1"})
    await harness.kube.request("PATCH", f"{secrets}/conn", body={"stringData": {"url": "db:2"}}, content_type=MERGE)

    async def followed() -> bool:
        return bool((await harness.kube.get(report))["data"]["hash"] == secret_hash({"url": "db:2"}))

    await eventually(followed, timeout=30, what="the flight re-run for the looked-up Secret")
    await harness.kube.request("PATCH", report, body={"data": {"state": "edited"}}, content_type=MERGE)
    await asyncio.sleep(3)  # an untracked child: no re-run puts it back
    assert (await harness.kube.get(report))["data"]["state"] == "edited"
    await delete_flight(harness, path)

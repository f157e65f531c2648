"""Deploying to another cluster end to end, on two real control planes (docs/targets.md).

The management cluster (``cluster``) runs both services as their chart ServiceAccounts; a second
control plane (``workload_cluster``) is the target. An instance or Flight annotated
``atc.yoke.cd/kubeconfig-secret`` has its children, readiness, revisions and drift watches in the
workload cluster, and its status and Events in the management cluster. The times are measured by
``bench/targets.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yokecli
from harness import AirwayRef, Harness, condition
from support import eventually

from atc.k8s.client import KubeClient, KubeError
from devcluster.cluster import Cluster, ClusterState, free_port

pytestmark = pytest.mark.cluster
MERGE = "application/merge-patch+json"
SECRET_ANNOTATION = "atc.yoke.cd/kubeconfig-secret"
LOOPBACK_SERVERS = "https://127.0.0.1:*"
KUBECONFIG_SECRET = "workload-kubeconfig"
REVISIONS = {"labelSelector": "internal.yoke/kind=revision"}


@dataclass
class Workload:
    """The target cluster, seen by the test with its admin credentials."""

    kube: KubeClient
    kubeconfig: Path

    async def exists(self, path: str) -> bool:
        return await self.kube.get_or_none(path) is not None


@pytest.fixture
async def workload(workload_cluster: ClusterState, harness: Harness) -> AsyncIterator[Workload]:
    """The workload cluster with the test's namespace, and its kubeconfig in a Secret of that namespace here."""
    kubeconfig = Path(workload_cluster.kubeconfig)
    async with await KubeClient.connect(str(kubeconfig)) as kube:
        await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": harness.namespace}})
        await put_kubeconfig(harness, await asyncio.to_thread(kubeconfig.read_bytes))
        yield Workload(kube, kubeconfig)


async def put_kubeconfig(harness: Harness, data: bytes, name: str = KUBECONFIG_SECRET) -> None:
    secret = {"metadata": {"name": name}, "data": {"value": base64.b64encode(data).decode()}}
    path = f"/api/v1/namespaces/{harness.namespace}/secrets"
    if await harness.kube.get_or_none(f"{path}/{name}") is None:
        await harness.kube.request("POST", path, body=secret)
    else:
        await harness.kube.request("PATCH", f"{path}/{name}", body=secret, content_type=MERGE)


async def start(harness: Harness) -> None:
    allowed = {"TARGET_SERVER_ALLOW_LIST": LOOPBACK_SERVERS}
    await harness.start_atc(webhook_env=allowed, **allowed)


async def ready_airway(harness: Harness, flight: str, **spec: Any) -> AirwayRef:
    ref = await harness.create_airway(flight, **spec)
    await harness.wait_airway_ready(ref)
    return ref


def targeted(secret: str = KUBECONFIG_SECRET) -> dict[str, dict[str, str]]:
    return {"annotations": {SECRET_ANNOTATION: secret}}


def configmap(harness: Harness, name: str) -> str:
    return f"/api/v1/namespaces/{harness.namespace}/configmaps/{name}"


async def test_an_instance_deploys_updates_prunes_and_deletes_in_the_workload_cluster(
    harness: Harness, workload: Workload
) -> None:
    await start(harness)
    ref = await ready_airway(harness, "multi")
    await harness.create_instance(ref, "w", {"configMaps": {"a": "1"}, "replicas": 1}, **targeted())
    instance = await harness.wait_condition(ref, "w", "True", "Ready", timeout=90)
    deployment = f"/apis/apps/v1/namespaces/{harness.namespace}/deployments/w"
    child = await workload.kube.get(configmap(harness, "w-a"))
    assert child["data"] == {"value": "1"}
    assert "ownerReferences" not in child["metadata"]  # the owner lives in the other cluster
    assert child["metadata"]["annotations"]["instance.atc.yoke.cd/instanceRef"].endswith("w")
    assert (await workload.kube.get(deployment))["status"].get("readyReplicas") == 1  # readiness read there
    assert not await harness.kube.get_or_none(configmap(harness, "w-a"))  # nothing here
    assert not await harness.kube.get_or_none(deployment)
    assert await harness.revisions() == []
    there = await workload.kube.get(f"/api/v1/namespaces/{harness.namespace}/secrets", query=REVISIONS)
    assert len(there["items"]) == 1
    assert "RevisionApplied" in [e["reason"] for e in await harness.events("w")]
    assert instance["metadata"]["finalizers"] == ["yoke.cd/mayday.flight"]

    await harness.patch_instance(ref, "w", {"spec": {"configMaps": {"a": "2", "b": "3"}}})

    async def updated() -> bool:
        live = await workload.kube.get_or_none(configmap(harness, "w-b"))
        return live is not None and (await workload.kube.get(configmap(harness, "w-a")))["data"]["value"] == "2"

    await eventually(updated, timeout=30, what="the update applied in the workload cluster")
    await harness.patch_instance(ref, "w", {"spec": {"configMaps": {"a": None, "b": "3"}, "replicas": None}})

    async def pruned() -> bool:
        return not await workload.exists(configmap(harness, "w-a")) and not await workload.exists(deployment)

    await eventually(pruned, timeout=30, what="the removed children pruned in the workload cluster")
    listed = await asyncio.to_thread(
        yokecli.run_yoke, ["blackbox", "--namespace", harness.namespace], kubeconfig=workload.kubeconfig
    )
    assert harness.namespace in yokecli.strip_ansi(listed.stdout)  # yoke reads the releases written there

    await harness.kube.request("DELETE", ref.path(harness.namespace, "w"))
    await harness.gone(ref.path(harness.namespace, "w"))
    assert not await workload.exists(configmap(harness, "w-b"))
    after = await workload.kube.get(f"/api/v1/namespaces/{harness.namespace}/secrets", query=REVISIONS)
    assert after["items"] == []


async def test_dynamic_mode_repairs_drift_in_the_workload_cluster(harness: Harness, workload: Workload) -> None:
    """The management cluster's webhook never sees the edit: the controller's watch there does."""
    await start(harness)
    ref = await ready_airway(harness, "multi", mode="dynamic")
    await harness.create_instance(ref, "d", {"configMaps": {"a": "1"}}, **targeted())
    await harness.wait_condition(ref, "d", "True", "Ready", timeout=90)
    path = configmap(harness, "d-a")
    await workload.kube.request("PATCH", path, body={"data": {"value": "hacked"}}, content_type=MERGE)

    async def restored() -> bool:
        return bool((await workload.kube.get(path))["data"] == {"value": "1"})

    await eventually(restored, timeout=30, interval=0.05, what="the edited child put back in the workload cluster")
    await workload.kube.request("DELETE", path)

    async def recreated() -> bool:
        return await workload.exists(path)

    await eventually(recreated, timeout=30, what="the deleted child created again in the workload cluster")


async def test_an_unreachable_target_is_reported_and_recovers(harness: Harness, workload: Workload) -> None:
    await start(harness)
    ref = await ready_airway(harness, "multi")
    good = await asyncio.to_thread(workload.kubeconfig.read_bytes)
    config = json.loads(good)
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    await put_kubeconfig(harness, json.dumps(config).encode(), name="broken")
    await harness.create_instance(ref, "u", {"configMaps": {"a": "1"}}, **targeted("broken"))
    failed = await harness.wait_condition(ref, "u", "False", "Error", timeout=60)
    message = condition(failed, "Ready", "False")["message"]  # type: ignore[index]
    assert message.startswith(f"the target cluster of kubeconfig Secret {harness.namespace}/broken is unreachable")
    assert not await harness.kube.get_or_none(configmap(harness, "u-a"))  # never falls back to this cluster
    await put_kubeconfig(harness, good, name="broken")  # the cluster is back (here: the right address)
    await harness.wait_condition(ref, "u", "True", "Ready", timeout=90)
    assert await workload.exists(configmap(harness, "u-a"))


async def test_a_server_off_the_allow_list_is_refused(harness: Harness, workload: Workload) -> None:
    await harness.start_atc()  # TARGET_SERVER_ALLOW_LIST empty: deploying to other clusters is off
    ref = await ready_airway(harness, "multi")
    await harness.create_instance(ref, "off", {"configMaps": {"a": "1"}}, **targeted())
    failed = await harness.wait_condition(ref, "off", "False", "Error", timeout=60)
    message = condition(failed, "Ready", "False")["message"]  # type: ignore[index]
    assert "TARGET_SERVER_ALLOW_LIST" in message
    assert "127.0.0.1" not in message  # the kubeconfig's content is not echoed
    assert not await workload.exists(configmap(harness, "off-a"))


async def test_a_user_who_cannot_read_the_secret_cannot_name_it(harness: Harness, workload: Workload) -> None:
    await start(harness)
    ref = await ready_airway(harness, "multi")
    user = await harness.user_kubeconfig("tenant", can_write=ref)
    async with await KubeClient.connect(str(user)) as tenant:
        body = {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "metadata": {"name": "sneaky", "namespace": harness.namespace, **targeted()},
            "spec": {"configMaps": {"a": "1"}},
        }
        with pytest.raises(KubeError) as refused:
            await tenant.request("POST", ref.collection(harness.namespace), body=body)
    secret = f"{harness.namespace}/{KUBECONFIG_SECRET}"
    expected = f"user may not read the kubeconfig Secret {secret} that {SECRET_ANNOTATION} names"
    assert refused.value.message.endswith(expected)
    assert await harness.kube.get_or_none(ref.path(harness.namespace, "sneaky")) is None


async def test_a_flight_deploys_to_the_workload_cluster(harness: Harness, workload: Workload) -> None:
    await start(harness)
    spec = {
        "wasmUrl": str(harness.build_flight("multi")),
        "inputObject": {"metadata": {"name": "f", "namespace": harness.namespace}, "spec": {"configMaps": {"a": "1"}}},
    }
    path = await harness.create_flight("Flight", "f", spec, annotations=targeted()["annotations"])
    flight = await harness.wait_ready(path)
    assert flight["status"]["inventory"] == [
        {"resource": f"{harness.namespace}/ConfigMap:f-a", "version": "v1", "ready": True}
    ]
    assert await workload.exists(configmap(harness, "f-a"))
    assert not await harness.kube.get_or_none(configmap(harness, "f-a"))
    await harness.kube.request("DELETE", path)
    await harness.gone(path)
    assert not await workload.exists(configmap(harness, "f-a"))


async def test_a_workload_api_server_restart_is_reported_and_converges(
    harness: Harness, workload: Workload, workload_cluster: ClusterState
) -> None:
    """The workload cluster's kube-apiserver stops: the instance says so; once it is back, the pending
    update lands and the drift watch there works again, with the same service processes."""
    await start(harness)
    ref = await ready_airway(harness, "multi", mode="dynamic")
    await harness.create_instance(ref, "r", {"configMaps": {"a": "1"}}, **targeted())
    await harness.wait_condition(ref, "r", "True", "Ready", timeout=90)
    control_plane = Cluster.attach(workload_cluster, tie_to_parent=True)
    control_plane.stop_component("kube-apiserver")
    try:
        await harness.patch_instance(ref, "r", {"spec": {"configMaps": {"a": "2"}}})
        failed = await harness.wait_condition(ref, "r", "False", "Error", timeout=60)
        message = condition(failed, "Ready", "False")["message"]  # type: ignore[index]
        assert "the target cluster of kubeconfig Secret" in message
        assert "is unreachable" in message
    finally:
        control_plane.start_component("kube-apiserver")  # from this thread: it lives as long as the cluster
        await asyncio.to_thread(control_plane.wait_api_ready)
    await harness.wait_condition(ref, "r", "True", "Ready", timeout=90)
    path = configmap(harness, "r-a")
    assert (await workload.kube.get(path))["data"] == {"value": "2"}
    await workload.kube.request("PATCH", path, body={"data": {"value": "hacked"}}, content_type=MERGE)

    async def restored() -> bool:
        return bool((await workload.kube.get(path))["data"] == {"value": "2"})

    await eventually(restored, timeout=60, what="drift repaired after the workload API server came back")


async def test_admission_dry_runs_a_targeted_instance_in_the_workload_cluster(
    harness: Harness, workload: Workload
) -> None:
    """The namespace exists here but not in the workload cluster: the dry run there refuses the instance."""
    await start(harness)
    ref = await ready_airway(harness, "multi")
    elsewhere = f"{harness.namespace}-x"
    await harness.kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": elsewhere}})
    try:
        kubeconfig = await asyncio.to_thread(workload.kubeconfig.read_bytes)
        secret = {"metadata": {"name": KUBECONFIG_SECRET}, "data": {"value": base64.b64encode(kubeconfig).decode()}}
        await harness.kube.request("POST", f"/api/v1/namespaces/{elsewhere}/secrets", body=secret)
        body = {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "metadata": {"name": "nowhere", "namespace": elsewhere, **targeted()},
            "spec": {"configMaps": {"a": "1"}},
        }
        with pytest.raises(KubeError) as refused:
            await harness.kube.request("POST", ref.collection(elsewhere), body=body)
        assert f'namespaces "{elsewhere}" not found' in refused.value.message
        await workload.kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": elsewhere}})
        created = await harness.kube.request("POST", ref.collection(elsewhere), body=body)  # now it can go there
        assert created["metadata"]["name"] == "nowhere"
    finally:
        await harness.kube.request("DELETE", f"/api/v1/namespaces/{elsewhere}")

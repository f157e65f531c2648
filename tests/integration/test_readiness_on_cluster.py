"""Readiness rules against the real control plane: what the controllers and KWOK make of real objects."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from support import eventually, open_crd_spec

from atc.k8s.client import KubeClient
from atc.k8s.crds import CRD_PATH, wait_established
from atc.k8s.readiness import READINESS_SELECTOR, CustomReadiness, is_ready
from atc.model.types import Object

pytestmark = pytest.mark.cluster


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(str(kubeconfig)) as kube:
        yield kube


def pod_template(labels: dict[str, str], restart: str = "Always") -> Object:
    return {
        "metadata": {"labels": labels},
        "spec": {"restartPolicy": restart, "containers": [{"name": "main", "image": "busybox"}]},
    }


async def create(api: KubeClient, path: str, body: Object) -> Object:
    return await api.request("POST", path, body=body)


def readiness_probe(api: KubeClient, path: str, custom: CustomReadiness | None = None) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await is_ready(api, await api.get(path), custom)

    return probe


async def test_deployment_becomes_ready_when_kwok_makes_it_available(api: KubeClient, namespace: str) -> None:
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": pod_template(labels)},
    }
    created = await create(api, f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment)
    assert not await is_ready(api, created)  # no status yet
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"
    await eventually(readiness_probe(api, path), timeout=90, what="Deployment ready")
    live = await api.get(path)
    assert live["status"]["availableReplicas"] == 2

    replicasets = await api.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets", query={"labelSelector": "app=web"})
    replicaset = replicasets["items"][0]
    assert "updatedReplicas" not in replicaset["status"]  # why yoke's ReplicaSet rule never passes
    replicaset.update(apiVersion="apps/v1", kind="ReplicaSet")
    assert await is_ready(api, replicaset)

    pods = await api.get(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=web"})
    for pod in pods["items"]:
        assert await is_ready(api, {**pod, "apiVersion": "v1", "kind": "Pod"})


async def test_job_becomes_ready_when_complete(api: KubeClient, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {"backoffLimit": 0, "template": pod_template({"job": "once"}, restart="Never")},
    }
    await create(api, f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    await eventually(readiness_probe(api, f"/apis/batch/v1/namespaces/{namespace}/jobs/once"), timeout=90, what="Job")


async def test_service_is_ready_once_it_has_an_endpointslice(api: KubeClient, namespace: str) -> None:
    def service(name: str, selector: dict[str, str] | None) -> Object:
        spec: Object = {"ports": [{"port": 80}]}
        if selector:
            spec["selector"] = selector
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}

    await create(api, f"/api/v1/namespaces/{namespace}/services", service("web", {"app": "web"}))
    await create(api, f"/api/v1/namespaces/{namespace}/services", service("manual", None))
    services = f"/api/v1/namespaces/{namespace}/services"
    await eventually(readiness_probe(api, f"{services}/web"), timeout=60, what="EndpointSlice of Service web")
    # Without a selector the endpointslice controller makes no slice: never ready (yoke's rule).
    assert not await is_ready(api, await api.get(f"{services}/manual"))


@pytest.fixture
async def widget_crd(api: KubeClient) -> AsyncIterator[tuple[str, str]]:
    """A throwaway namespaced CRD ``Widget`` with a status subresource; yields (group, plural)."""
    group = f"r{secrets.token_hex(4)}.readiness.test"
    name = f"widgets.{group}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": open_crd_spec(group, "Widget", status=True),
    }
    await create(api, CRD_PATH, crd)
    await wait_established(api, [name], timeout=30)
    yield group, "widgets"
    await api.request("DELETE", f"{CRD_PATH}/{name}")


async def readiness_from_cluster(api: KubeClient) -> CustomReadiness:
    """Custom rules from every ConfigMap the controller's watch would select."""
    custom = CustomReadiness()
    for configmap in (await api.get("/api/v1/configmaps", query={"labelSelector": READINESS_SELECTOR}))["items"]:
        custom.apply_configmap(configmap)
    return custom


async def test_configmap_rules_on_a_custom_resource(
    api: KubeClient, namespace: str, widget_crd: tuple[str, str]
) -> None:
    group, plural = widget_crd
    rules = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "widget-readiness", "labels": {"resource.yoke.cd/readiness": "conditions"}},
        "data": {f"Widget.{group}": "Synced Healthy"},
    }
    await create(api, f"/api/v1/namespaces/{namespace}/configmaps", rules)
    base = f"/apis/{group}/v1/namespaces/{namespace}/{plural}"
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    created = await create(api, base, widget)

    custom = await readiness_from_cluster(api)
    assert custom.rule_for(group, "Widget") is not None
    assert not await is_ready(api, created, custom)

    conditions = [{"type": "Synced", "status": "True"}, {"type": "Healthy", "status": "False"}]
    status = {**created, "status": {"conditions": conditions}}
    updated = await api.request("PUT", f"{base}/w/status", body=status)
    assert not await is_ready(api, updated, custom)

    conditions[1]["status"] = "True"
    updated = await api.request("PUT", f"{base}/w/status", body={**updated, "status": {"conditions": conditions}})
    assert await is_ready(api, updated, custom)
    assert await is_ready(api, updated, CustomReadiness())  # no rule: ready

    lua_rules = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "widget-readiness", "labels": {"resource.yoke.cd/readiness": "lua"}},
        "data": {f"_.{group}": "return function(w) return w.status.conditions[1].type == 'Synced' end"},
    }
    await api.request("PUT", f"/api/v1/namespaces/{namespace}/configmaps/widget-readiness", body=lua_rules)
    custom = await readiness_from_cluster(api)
    assert custom.rule_for(group, "Widget") is not None  # through the group wildcard
    assert await is_ready(api, updated, custom)

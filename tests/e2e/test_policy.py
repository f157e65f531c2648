"""Hostile input through the API server: privileged flight output and module URLs that reach for secrets.

A namespace tenant may create Flights and instances; what their flights print, and where their
module URLs point, is theirs to choose. Checked through kube-apiserver calling the webhook over TLS,
with both services as the chart's ServiceAccounts:

- a Flight, or an instance of a namespaced Airway, may not create cluster-scoped kinds, RBAC,
  webhook configurations, CRDs or Namespaces (the admission dry run refuses, nothing is applied);
  the Airway, or a ClusterFlight, can opt in with ``atc.yoke.cd/allow-cluster-resources``;
- with the services' default settings a module URL that is a local file, the cloud metadata address
  or a loopback server is refused, and no byte of what it would have read is in the denial.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from harness import Harness
from support import open_crd_spec

from atc.k8s.client import KubeError
from atc.model.types import Object

pytestmark = pytest.mark.cluster
SECRET = "hunter2-token-from-the-service-account"
STRICT = {"MODULE_ALLOW_LOCAL_FILES": "false", "MODULE_FETCH_ALLOWED_NETWORKS": ""}  # the services' defaults
OPT_IN = {"atc.yoke.cd/allow-cluster-resources": "true"}


def cluster_role_binding(name: str) -> Object:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
    }


def crd(group: str) -> Object:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": open_crd_spec(group, "Widget"),
    }


def flight(kind: str, name: str, wasm: str, objects: list[Object], annotations: dict[str, str] | None = None) -> Object:
    metadata: Object = {"name": name, "annotations": annotations or {}}
    spec = {"wasmUrl": wasm, "inputObject": {"spec": {"objects": objects}}}
    return {"apiVersion": "yoke.cd/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


async def refused(harness: Harness, path: str, body: Object) -> str:
    with pytest.raises(KubeError) as denied:
        await harness.kube.request("POST", path, body=body)
    return denied.value.message


async def test_a_flight_cannot_create_a_cluster_role_binding(harness: Harness) -> None:
    await harness.start_atc()
    echo = str(harness.build_flight("echo"))
    flights = f"/apis/yoke.cd/v1alpha1/namespaces/{harness.namespace}/flights"
    name = f"escalate-{harness.namespace}"
    message = await refused(harness, flights, flight("Flight", "escalate", echo, [cluster_role_binding(name)]))
    assert message.startswith('admission webhook "flights.yoke.cd" denied the request: refusing privileged resources')
    assert "a Flight may not create cluster-scoped resources, RBAC" in message
    assert await harness.kube.get_or_none(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}") is None
    # a namespaced RoleBinding is RBAC too
    binding = {**cluster_role_binding("local"), "kind": "RoleBinding"}
    message = await refused(harness, flights, flight("Flight", "local", echo, [binding]))
    assert "refusing privileged resources" in message


async def test_a_cluster_flight_creates_privileged_output_only_when_it_opts_in(harness: Harness) -> None:
    await harness.start_atc()
    echo = str(harness.build_flight("echo"))
    group = f"{harness.namespace}.policy.test"
    clusterflights = "/apis/yoke.cd/v1alpha1/clusterflights"
    name = f"crd-{harness.namespace}"
    harness.cleanups.append(f"{clusterflights}/{name}")
    message = await refused(harness, clusterflights, flight("ClusterFlight", name, echo, [crd(group)]))
    assert "this ClusterFlight may not create cluster-scoped resources" in message
    await harness.kube.request("POST", clusterflights, body=flight("ClusterFlight", name, echo, [crd(group)], OPT_IN))

    async def established() -> bool:
        found = await harness.kube.get_or_none(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{group}"
        )
        return found is not None

    from support import eventually

    await eventually(established, timeout=60, what="the opted-in ClusterFlight's CRD")
    harness.cleanups.append(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{group}")


async def test_an_instance_of_a_namespaced_airway_needs_the_airways_opt_in(harness: Harness) -> None:
    harness.chart_values = [
        "--set-json",
        'controller.rbac.extraRules=[{"apiGroups":[""],"resources":["namespaces"],"verbs":["get","create","patch","delete"]}]',
        "--set-json",
        'webhook.rbac.extraRules=[{"apiGroups":[""],"resources":["namespaces"],"verbs":["get","create","patch"]}]',
    ]
    await harness.start_atc()
    ref = await harness.create_airway("echo")
    await harness.wait_airway_ready(ref)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{harness.namespace}-made"}}
    with pytest.raises(KubeError) as denied:
        await harness.create_instance(ref, "ns", {"objects": [namespace]})
    assert "instances of a namespaced Airway may not create cluster-scoped resources" in denied.value.message
    airway_path = f"/apis/yoke.cd/v1alpha1/airways/{ref.name}"
    await harness.kube.request(
        "PATCH", airway_path, body={"metadata": {"annotations": OPT_IN}}, content_type="application/merge-patch+json"
    )
    from support import eventually

    async def admitted() -> bool:
        try:
            await harness.create_instance(ref, "ns", {"objects": [namespace]})
        except KubeError:
            return False  # the webhook's Airway cache sees the annotation a moment later
        return True

    await eventually(admitted, timeout=30, what="the instance admitted once the Airway opted in")
    await harness.wait_condition(ref, "ns", "True", "Ready", timeout=60)
    harness.cleanups.append(f"/api/v1/namespaces/{harness.namespace}-made")


@pytest.fixture
async def secret_server() -> AsyncIterator[str]:
    """A loopback HTTP server standing for an internal endpoint: it answers with a secret as text."""

    async def leak(_: web.Request) -> web.Response:
        return web.Response(text=f"(module) ;; {SECRET}\n")

    app = web.Application()
    app.router.add_get("/{any:.*}", leak)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_module_urls_that_reach_for_secrets_are_refused_without_echo(
    harness: Harness, secret_server: str
) -> None:
    await harness.start_atc(webhook_env=STRICT, **STRICT)
    flights = f"/apis/yoke.cd/v1alpha1/namespaces/{harness.namespace}/flights"
    cases = {
        "/proc/self/environ": "reading modules from local files is not allowed",
        "file:///etc/passwd": "reading modules from local files is not allowed",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is not allowed: not a public address",
        f"{secret_server}/flight.wasm": "127.0.0.1 is not allowed: not a public address",
    }
    for index, (url, reason) in enumerate(cases.items()):
        message = await refused(harness, flights, flight("Flight", f"hostile-{index}", url, []))
        assert reason in message, (url, message)
        for leaked in (SECRET, "root:", "PATH="):
            assert leaked not in message, message


async def test_text_from_an_allowed_address_is_not_compiled_nor_quoted(harness: Harness, secret_server: str) -> None:
    allowed = {"MODULE_ALLOW_LOCAL_FILES": "false", "MODULE_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32"}
    await harness.start_atc(webhook_env=allowed, **allowed)
    flights = f"/apis/yoke.cd/v1alpha1/namespaces/{harness.namespace}/flights"
    message = await refused(harness, flights, flight("Flight", "wat", f"{secret_server}/flight.wasm", []))
    assert "not a WebAssembly binary module" in message
    assert SECRET not in message
    assert json.dumps(SECRET) not in message

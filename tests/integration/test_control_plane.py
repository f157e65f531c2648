"""The local control plane is a real Kubernetes: CRDs, server-side apply, controllers, KWOK, webhooks.

Each test asserts behaviour that only a real kube-apiserver (with etcd,
controller-manager, scheduler and KWOK) produces.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from support import eventually

from devcluster.cluster import NODE_NAME, ClusterState, free_port
from devcluster.pki import new_ca

pytestmark = pytest.mark.cluster

SSA = "application/apply-patch+yaml"


async def test_node_is_ready_and_core_namespaces_exist(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    node = await core.read_node(NODE_NAME)
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready["Ready"] == "True"
    names = {ns.metadata.name for ns in (await core.list_namespace()).items}
    assert {"default", "kube-system", "kube-public"} <= names


async def test_crd_and_custom_resource(kube: client.ApiClient, namespace: str) -> None:
    crd_api = client.ApiextensionsV1Api(kube)
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.yoke.local"},
        "spec": {
            "group": "test.yoke.local",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}}
                            },
                        }
                    },
                }
            ],
        },
    }
    with contextlib.suppress(ApiException):  # an earlier run against a reused cluster may have made it
        await crd_api.create_custom_resource_definition(crd)  # type: ignore[arg-type]

    async def established() -> bool:
        live = await crd_api.read_custom_resource_definition("widgets.test.yoke.local")
        return any(c.type == "Established" and c.status == "True" for c in live.status.conditions or [])

    await eventually(established, what="CRD Established")
    custom = client.CustomObjectsApi(kube)
    body = {"apiVersion": "test.yoke.local/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}

    async def created() -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await custom.create_namespaced_custom_object(
                "test.yoke.local", "v1", namespace, "widgets", body
            )
        except ApiException as exc:
            if exc.status == 404:  # discovery of the new resource not served yet
                return None
            raise
        return result

    await eventually(created, what="custom resource created")
    read = await custom.get_namespaced_custom_object("test.yoke.local", "v1", namespace, "widgets", "w1")
    assert read["spec"] == {"size": 3}
    bad = {**body, "metadata": {"name": "w2"}, "spec": {"size": 0}}
    with pytest.raises(ApiException) as invalid:
        await custom.create_namespaced_custom_object("test.yoke.local", "v1", namespace, "widgets", bad)
    assert invalid.value.status == 422
    assert "spec.size" in str(invalid.value.body)


async def test_server_side_apply_field_managers_conflict(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)

    def config_map(value: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"key": value}}

    # The generated client accepts _content_type at run time; its type hints do not declare it.
    await core.patch_namespaced_config_map("cm", namespace, config_map("a"), field_manager="alpha", _content_type=SSA)  # type: ignore[call-arg]
    with pytest.raises(ApiException) as conflict:
        await core.patch_namespaced_config_map(
            "cm", namespace, config_map("b"), field_manager="beta", _content_type=SSA
        )  # type: ignore[call-arg]
    assert conflict.value.status == 409
    causes = json.loads(conflict.value.body or "{}")["details"]["causes"]
    assert causes == [{"reason": "FieldManagerConflict", "message": 'conflict with "alpha"', "field": ".data.key"}]

    forced = await core.patch_namespaced_config_map(
        "cm",
        namespace,
        config_map("b"),
        field_manager="beta",
        force=True,
        _content_type=SSA,  # type: ignore[call-arg]
    )
    assert forced.data == {"key": "b"}
    owners = {entry.manager for entry in forced.metadata.managed_fields if entry.fields_v1.get("f:data")}
    assert owners == {"beta"}


async def test_deployment_reaches_available_replicas(kube: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(kube)
    labels = {"app": "web"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=3,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx")]),
            ),
        ),
    )
    await apps.create_namespaced_deployment(namespace, deployment)

    async def available() -> bool:
        status = (await apps.read_namespaced_deployment_status("web", namespace)).status
        return bool(status.available_replicas == 3 and status.ready_replicas == 3)

    await eventually(available, timeout=90, what="3 available replicas")
    pods = (await client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector="app=web")).items
    assert len(pods) == 3
    assert {pod.spec.node_name for pod in pods} == {NODE_NAME}  # bound by kube-scheduler
    assert all(pod.status.phase == "Running" for pod in pods)  # made Running by KWOK


async def test_job_completes(kube: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(kube)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="once"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never", containers=[client.V1Container(name="run", image="busybox")]
                )
            ),
        ),
    )
    await batch.create_namespaced_job(namespace, job)

    async def complete() -> bool:
        status = (await batch.read_namespaced_job_status("once", namespace)).status
        return any(c.type == "Complete" and c.status == "True" for c in status.conditions or [])

    await eventually(complete, timeout=90, what="Job Complete")
    assert (await batch.read_namespaced_job_status("once", namespace)).status.succeeded == 1


async def test_job_whose_pod_is_annotated_to_fail_fails(kube: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(kube)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="doomed"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations={"kwok.test/fail": "true"}),
                spec=client.V1PodSpec(
                    restart_policy="Never", containers=[client.V1Container(name="run", image="busybox")]
                ),
            ),
        ),
    )
    await batch.create_namespaced_job(namespace, job)

    async def failed() -> bool:
        status = (await batch.read_namespaced_job_status("doomed", namespace)).status
        return any(c.type == "Failed" and c.status == "True" for c in status.conditions or [])

    await eventually(failed, timeout=90, what="Job Failed")
    assert (await batch.read_namespaced_job_status("doomed", namespace)).status.succeeded in (None, 0)


class _DenyingWebhook(BaseHTTPRequestHandler):
    """Answers every AdmissionReview with a denial that quotes the object's name."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        _DenyingWebhook.seen.append(f"{request['operation']} {request['name']}")
        answer = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": request["uid"],
                "allowed": False,
                "status": {"status": "Failure", "message": f"no ConfigMap named {request['name']}", "code": 403},
            },
        }
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def denying_webhook(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    """An HTTPS webhook on 127.0.0.1 with its own CA; yields (port, caBundle)."""
    ca = new_ca("webhook-test-ca")
    cert, key = ca.issue_serving("webhook", dns_names=("localhost",), ips=("127.0.0.1",)).write(tmp_path, "serving")
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _DenyingWebhook)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], ca.cert_pem
    server.shutdown()


async def test_validating_webhook_denial_reaches_client(
    kube: client.ApiClient, namespace: str, denying_webhook: tuple[int, bytes], cluster: ClusterState
) -> None:
    port, ca_bundle = denying_webhook
    admission = client.AdmissionregistrationV1Api(kube)
    config_name = f"deny-{namespace}"
    webhook: dict[str, Any] = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config_name},
        "webhooks": [
            {
                "name": "deny.test.yoke.local",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/validate",
                    "caBundle": base64.b64encode(ca_bundle).decode(),
                },
                "rules": [
                    {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }
    await admission.create_validating_webhook_configuration(webhook)  # type: ignore[arg-type]
    core = client.CoreV1Api(kube)
    try:

        async def denied() -> str | None:
            name = f"probe-{len(_DenyingWebhook.seen)}"
            try:
                await core.create_namespaced_config_map(
                    namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name))
                )
            except ApiException as exc:
                return str(json.loads(exc.body or "{}")["message"]) if exc.status == 403 else None
            return None  # created before the apiserver loaded the configuration; try again

        message = await eventually(denied, what="webhook denial")
        assert message.startswith(
            'admission webhook "deny.test.yoke.local" denied the request: no ConfigMap named probe-'
        )
        assert any(call.startswith("CREATE probe-") for call in _DenyingWebhook.seen)
    finally:
        await admission.delete_validating_webhook_configuration(config_name)

"""``atc-webhook`` as a subprocess against the real API server: readiness, registration, the resources guard.

No controller runs. The test makes by hand what the controller would leave: a
static-mode Airway and its CRD, an instance, a revision Secret in yoke's format
holding a ConfigMap and a Deployment, and those children applied with yoke's
labels and annotations (``webhook_objects``). The webhook runs as its own
ServiceAccount with the permissions it needs granted only after it started, so
``/readyz`` is seen failing before its caches can sync. It generates its
certificate (``TLS_GENERATE_DIR``) and registers ``atc-resources`` with a url
``clientConfig`` (``REGISTER_WEBHOOKS``, ``WEBHOOK_URL``); every edit below goes
through kube-apiserver, which calls it over TLS.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from harness import AirwayRef, Webhook
from support import ServiceProcess, eventually
from webhook_objects import (
    configmap,
    create_airway,
    create_instance,
    create_release,
    delete_airway,
    deployment,
    object_path,
)

from atc.k8s.client import MERGE_PATCH, KubeClient, KubeError
from atc.model.types import Object
from atc.model.webhook_configs import VALIDATING_CONFIGS_PATH as CONFIGS
from devcluster.cluster import free_port

pytestmark = pytest.mark.cluster

RBAC = "/apis/rbac.authorization.k8s.io/v1"
STATIC_CONFIGS = ("atc-airway", "atc-flight", "atc-resources")
DENIED = 'admission webhook "resources.yoke.cd" denied the request: '
SIGNALS = {"labelSelector": "atc.yoke.cd/signal=child-changed"}


@pytest.fixture
async def admin(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(str(kubeconfig)) as kube:
        yield kube
        for name in STATIC_CONFIGS:  # the service never deletes them; the test does
            await _delete(kube, f"{CONFIGS}/{name}")


async def _delete(kube: KubeClient, path: str) -> None:
    try:
        await kube.request("DELETE", path)
    except KubeError as exc:
        if not exc.not_found:
            raise


@pytest.fixture
async def airway(admin: KubeClient) -> AsyncIterator[AirwayRef]:
    made = await create_airway(admin, mode="static")
    yield made
    await delete_airway(admin, made)


async def service_account_kubeconfig(kube: KubeClient, admin_kubeconfig: Path, namespace: str, name: str) -> Path:
    """A kubeconfig authenticating as a new ServiceAccount (with no permissions yet)."""
    await kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": name}})
    token = await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
    )
    return write_token_kubeconfig(admin_kubeconfig, f"kubeconfig-{namespace}-{name}", name, token["status"]["token"])


def write_token_kubeconfig(admin_kubeconfig: Path, file_name: str, user: str, token: str) -> Path:
    """The admin kubeconfig's cluster with ``user`` authenticating by ``token``, next to it."""
    config = json.loads(admin_kubeconfig.read_text())
    config["users"] = [{"name": user, "user": {"token": token}}]
    config["contexts"] = [{"name": "local", "context": {"cluster": "local", "user": user}}]
    path = admin_kubeconfig.parent / file_name
    path.write_text(json.dumps(config))
    return path


def webhook_rules(airway: AirwayRef) -> list[Object]:
    """What the webhook needs: its caches' lists and watches, Events, and its webhook configurations."""
    return [
        {"apiGroups": ["yoke.cd"], "resources": ["airways"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["yoke.cd"], "resources": ["flights", "clusterflights"], "verbs": ["list", "watch"]},
        {"apiGroups": [airway.group], "resources": [airway.plural], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "verbs": ["get", "create", "patch"],
        },
    ]


@pytest.fixture
async def grant(admin: KubeClient, namespace: str, airway: AirwayRef) -> AsyncIterator[Callable[[str], Any]]:
    """Grants the webhook's ServiceAccount its permissions when called."""
    name = f"{namespace}-atc-webhook"

    async def bind(account: str) -> None:
        role = {"metadata": {"name": name}, "rules": webhook_rules(airway)}
        await admin.request("POST", f"{RBAC}/clusterroles", body=role)
        binding = {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        }
        await admin.request("POST", f"{RBAC}/clusterrolebindings", body=binding)

    yield bind
    await _delete(admin, f"{RBAC}/clusterrolebindings/{name}")
    await _delete(admin, f"{RBAC}/clusterroles/{name}")


async def attempt(kube: KubeClient, method: str, path: str, body: Object | None = None, **query: str) -> str:
    """ "allowed", or the API server's message when the request is refused."""
    try:
        if body is None:
            await kube.request(method, path, query=query)
        else:
            await kube.request(method, path, body=body, content_type=MERGE_PATCH, query=query)
    except KubeError as exc:
        return exc.message
    return "allowed"


async def signals_about(kube: KubeClient, namespace: str, child_ref: str, version: str) -> list[Object]:
    events = await kube.get(f"/api/v1/namespaces/{namespace}/events", query=SIGNALS)
    return [
        event
        for event in events["items"]
        if event["metadata"]["annotations"].get("atc.yoke.cd/child-ref") == child_ref
        and event["metadata"]["annotations"].get("atc.yoke.cd/child-resource-version") == version
    ]


async def test_the_webhook_guards_static_children_and_signals_dynamic_changes(
    admin: KubeClient,
    kubeconfig: Path,
    namespace: str,
    airway: AirwayRef,
    grant: Callable[[str], Any],
    run_service: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> None:
    instance = await create_instance(admin, airway, namespace, "inst")
    settings_cm, web = await create_release(
        admin, instance, [configmap("settings", {"color": "blue"}), deployment("web")]
    )
    cm_path, web_path = object_path(settings_cm), object_path(web)

    # --- start without permissions: serving, not ready -------------------------------------------------------
    account = "atc-webhook"
    port = free_port()
    env = {
        "KUBE": str(await service_account_kubeconfig(admin, kubeconfig, namespace, account)),
        "PORT": str(port),
        "ADDRESS": "127.0.0.1",
        "TLS_GENERATE_DIR": str(tmp_path / "tls"),
        "REGISTER_WEBHOOKS": "true",
        "WEBHOOK_URL": f"https://127.0.0.1:{port}",
        "SVC_NAMESPACE": namespace,
    }
    webhook = Webhook(run_service("atc-webhook", [sys.executable, "-m", "atc_webhook"], env), port, tmp_path / "tls")
    assert await eventually(webhook.readyz, timeout=30, interval=0.05, what="/readyz answering") == 503
    await grant(account)

    async def ready() -> bool:
        return await webhook.readyz() == 200

    await eventually(ready, timeout=60, what="/readyz 200 once the caches can sync")

    # --- registered: the API server sends the children's updates to it -----------------------------------------
    async def guarding() -> bool:
        edit = {"data": {"color": "red"}}
        return (
            await attempt(admin, "PATCH", cm_path, edit, dryRun="All") == DENIED + "cannot modify flight sub-resources"
        )

    await eventually(guarding, timeout=60, what="atc-resources registered and denying")
    registered = await admin.get(f"{CONFIGS}/atc-resources")
    assert registered["webhooks"][0]["clientConfig"]["url"] == f"https://127.0.0.1:{port}/validations/resources"

    # --- static ------------------------------------------------------------------------------------------------
    assert (
        await attempt(admin, "PATCH", cm_path, {"data": {"color": "red"}})
        == DENIED + "cannot modify flight sub-resources"
    )
    assert (
        await attempt(admin, "DELETE", cm_path) == DENIED + "cannot delete resources managed by Air-Traffic-Controller"
    )
    release_edit = {"metadata": {"annotations": {"instance.atc.yoke.cd/release": "someone.else"}}}
    assert await attempt(admin, "PATCH", cm_path, release_edit) == (
        DENIED + "cannot modify yoke annotations: instance.atc.yoke.cd/release"
    )
    live = await admin.get(cm_path)
    await admin.request("PUT", cm_path, body=live)  # a no-op update
    assert await attempt(admin, "PATCH", cm_path, {"metadata": {"labels": {"team": "blue"}}}) == "allowed"
    status = {"status": {"conditions": [{"type": "Audited", "status": "True", "reason": "ByHand", "message": "ok"}]}}
    assert await attempt(admin, "PATCH", web_path + "/status", status) == "allowed"
    assert (await admin.get(cm_path))["data"] == {"color": "blue"}

    # --- dynamic: allowed, and signalled with the version the change was admitted over -------------------------
    override = {"metadata": {"annotations": {"overrides.yoke.cd/mode": "dynamic"}}}
    await admin.request("PATCH", airway.path(namespace, "inst"), body=override, content_type=MERGE_PATCH)

    async def dynamic() -> bool:
        return await attempt(admin, "PATCH", cm_path, {"data": {"color": "green"}}, dryRun="All") == "allowed"

    await eventually(dynamic, timeout=30, what="the override seen by the webhook")
    before = (await admin.get(cm_path))["metadata"]["resourceVersion"]
    assert await attempt(admin, "PATCH", cm_path, {"data": {"color": "green"}}, dryRun="All") == "allowed"
    assert await attempt(admin, "PATCH", cm_path, {"data": {"color": "green"}}) == "allowed"
    child_ref = f"{namespace}/ConfigMap:settings"

    async def signalled() -> list[Object]:
        return await signals_about(admin, namespace, child_ref, before)

    [event] = await eventually(signalled, timeout=30, what="the SubresourceChanged Event")
    assert event["reason"] == "SubresourceChanged"
    assert event["type"] == "Normal"
    assert event["reportingComponent"] == "atc-webhook"
    assert event["involvedObject"]["kind"] == airway.kind
    assert event["involvedObject"]["name"] == "inst"
    assert event["involvedObject"]["uid"] == instance["metadata"]["uid"]
    assert event["metadata"]["annotations"]["atc.yoke.cd/operation"] == "UPDATE"
    assert event["message"] == f"UPDATE of {child_ref} by admin"
    # the dry runs over the same version (the probes and the one above) recorded nothing
    assert len(await signals_about(admin, namespace, child_ref, before)) == 1

    denials = [line for line in webhook.process.log_tail().splitlines() if "admission denied" in line]
    assert denials, "the denials are logged"
    assert not [line for line in denials if '"kind": "Deployment"' in line], "the deployment controller was let through"

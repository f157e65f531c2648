"""The services' identities as the Helm chart deploys them, for tests that run the services as processes.

``install_chart_identities`` renders ``charts/atc`` with helm, applies exactly its ServiceAccounts,
ClusterRoles, Role and bindings, and writes one token kubeconfig per service account, so each
service authenticates as the chart's ServiceAccount with the chart's RBAC and nothing more.
``register_static_webhooks`` applies the static ValidatingWebhookConfigurations the chart owns,
pointed at a webhook process on this host (``url`` client config). Used by ``tests/harness.py``
(every e2e test), the conformance supervisor (``tests/conformance/supervisor.py``) and
``make demo`` (``tools/devcluster/demo.py``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import helmcli
import yaml

from atc.k8s.client import KubeClient
from atc.model.types import Object
from atc.model.webhook_configs import VALIDATING_CONFIGS_PATH, static_webhook_configs

CHART = Path(__file__).resolve().parents[1] / "charts" / "atc"
RBAC_PREFIX = "/apis/rbac.authorization.k8s.io/v1"
# kind -> (API prefix, plural, namespaced) of the identity objects the chart renders
IDENTITY_KINDS = {
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ClusterRole": (RBAC_PREFIX, "clusterroles", False),
    "ClusterRoleBinding": (RBAC_PREFIX, "clusterrolebindings", False),
    "Role": (RBAC_PREFIX, "roles", True),
    "RoleBinding": (RBAC_PREFIX, "rolebindings", True),
}
TOKEN_SECONDS = 4 * 3600


@dataclass
class ChartIdentities:
    """Token kubeconfigs of the two services, and the cluster-scoped objects made for them."""

    fullname: str  # the chart's fullname, which is also the services' SVC_NAME
    namespace: str
    controller_kubeconfig: Path
    webhook_kubeconfig: Path
    cluster_scoped: list[str] = field(default_factory=list)  # API paths to delete when done

    @property
    def controller_account(self) -> str:
        return f"{self.fullname}-service-account"


async def render_chart(namespace: str, *helm_args: str, release: str = "atc") -> list[Object]:
    """``helm template`` of the chart as a list of objects."""
    done = await asyncio.to_thread(
        helmcli.run_helm, ["template", release, str(CHART), "--namespace", namespace, *helm_args]
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def identity_path(obj: Object) -> str:
    prefix, plural, namespaced = IDENTITY_KINDS[obj["kind"]]
    meta = obj["metadata"]
    scope = f"/namespaces/{meta['namespace']}" if namespaced else ""
    return f"{prefix}{scope}/{plural}/{meta['name']}"


async def token_kubeconfig(kube: KubeClient, admin: Path, namespace: str, account: str, out_dir: Path) -> Path:
    """A kubeconfig that authenticates as the existing ServiceAccount ``account`` with a bound token."""
    token = await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": TOKEN_SECONDS},
        },
    )
    config = json.loads(await asyncio.to_thread(admin.read_text))
    config["users"] = [{"name": account, "user": {"token": token["status"]["token"]}}]
    config["contexts"] = [{"name": "local", "context": {"cluster": "local", "user": account}}]
    config["current-context"] = "local"
    path = out_dir / f"kubeconfig-{namespace}-{account}"
    await asyncio.to_thread(path.write_text, json.dumps(config))
    return path


async def install_chart_identities(
    kube: KubeClient, admin: Path, namespace: str, fullname: str, out_dir: Path, *helm_args: str
) -> ChartIdentities:
    """Apply the chart's ServiceAccounts and RBAC in ``namespace`` and make a token kubeconfig for each service.

    ``fullname`` names the cluster-scoped roles (unique per test) and is the SVC_NAME the services
    must run with, since the webhooks leave out exactly ``<SVC_NAME>-service-account``.
    """
    objects = await render_chart(
        namespace, "--set", f"fullnameOverride={fullname}", "--set", "webhooks.create=false", *helm_args
    )
    cluster_scoped = []
    for obj in objects:
        if obj["kind"] not in IDENTITY_KINDS:
            continue
        path = identity_path(obj)
        await kube.apply(path, obj, field_manager="chart-test", force=True)
        if not IDENTITY_KINDS[obj["kind"]][2]:
            cluster_scoped.append(path)
    controller = await token_kubeconfig(kube, admin, namespace, f"{fullname}-service-account", out_dir)
    webhook = await token_kubeconfig(kube, admin, namespace, f"{fullname}-webhook", out_dir)
    return ChartIdentities(fullname, namespace, controller, webhook, cluster_scoped)


@dataclass(frozen=True)
class WebhookTarget:
    """Where the API server reaches a webhook process on this host (the fields ``atc.model.webhook_configs`` reads)."""

    svc_name: str
    svc_namespace: str
    webhook_url: str
    tls_ca_cert: str
    svc_port: int = 443


async def register_static_webhooks(kube: KubeClient, target: WebhookTarget) -> list[str]:
    """Apply ``atc-airway``, ``atc-flight`` and ``atc-resources`` as the chart would; returns their API paths."""
    paths = []
    for config in static_webhook_configs(target):
        path = f"{VALIDATING_CONFIGS_PATH}/{config['metadata']['name']}"
        await kube.apply(path, config, field_manager="chart-test", force=True)
        paths.append(path)
    return paths

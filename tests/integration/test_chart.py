"""The Helm chart ``charts/atc``: lint, render, schema, API-server acceptance, RBAC breadth and sufficiency.

Uses a pinned helm built from ``tools/kbin/helm`` (``tools/helmcli.py``) and the local control
plane. The rendered static webhook configurations are compared with what
``atc.model.webhook_configs.static_webhook_configs`` builds, so the chart and the services cannot disagree. The
RBAC sufficiency test runs both services as the harness always does, as the chart's ServiceAccounts
with the chart's RBAC applied for real (``tools/deployed.py``, no cluster-admin), reconciles
the Backend scenario to Ready, and checks that writes outside the granted rules are refused.
Run with ``DEVCLUSTER_REUSE=1 .venv/bin/pytest -q tests/integration/test_chart.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import helmcli
import pytest
import yaml
from harness import Harness
from support import backend_deployment_hash, backend_secret_hash, eventually

from atc.k8s.client import MERGE_PATCH, KubeClient, KubeError
from atc.model.types import Object
from atc.model.webhook_configs import static_webhook_configs

pytestmark = pytest.mark.cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "atc"
TLS_MODES: dict[str, list[str]] = {
    "selfSigned": [],
    "certManager": [],
    "existingSecret": ["--set", "tls.secretName=my-webhook-tls"],
}
RBAC = "/apis/rbac.authorization.k8s.io/v1"
# kind -> (API prefix, plural, namespaced) of every kind the chart renders
RESOURCES = {
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "ClusterRole": (RBAC, "clusterroles", False),
    "ClusterRoleBinding": (RBAC, "clusterrolebindings", False),
    "Role": (RBAC, "roles", True),
    "RoleBinding": (RBAC, "rolebindings", True),
    "ValidatingWebhookConfiguration": (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        False,
    ),
}
# kinds whose CRDs (cert-manager, Prometheus Operator) the local cluster does not have
FOREIGN_KINDS = {"Issuer", "Certificate", "ServiceMonitor"}


# ---------------------------------------------------------------------------------------------- helpers
async def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(helmcli.run_helm, list(args), check=check)


async def render(namespace: str, *args: str, release: str = "atc", crds: bool = True) -> list[Object]:
    """``helm template`` output as a list of objects."""
    flags = ["--include-crds"] if crds else []
    done = await helm("template", release, str(CHART), "--namespace", namespace, *flags, *args)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(objects: list[Object], kind: str) -> list[Object]:
    return [obj for obj in objects if obj["kind"] == kind]


def api_path(obj: Object) -> str:
    prefix, plural, namespaced = RESOURCES[obj["kind"]]
    meta = obj["metadata"]
    scope = f"/namespaces/{meta['namespace']}" if namespaced else ""
    return f"{prefix}{scope}/{plural}/{meta['name']}"


@dataclass(frozen=True)
class Target:
    """The ``WebhookTarget`` fields ``atc.model.webhook_configs`` builds configurations from."""

    svc_name: str
    svc_namespace: str
    svc_port: int = 443
    webhook_url: str = ""
    tls_ca_cert: str = ""


async def refusal(kube: KubeClient, method: str, path: str, body: Object | None = None) -> KubeError:
    with pytest.raises(KubeError) as refused:
        await kube.request(method, path, body=body)
    return refused.value


# ---------------------------------------------------------------------------------------------- lint, render, schema
async def test_helm_lint_passes_also_strict() -> None:
    for strict in ([], ["--strict"]):
        done = await helm("lint", str(CHART), *strict)
        assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
        assert "[ERROR]" not in done.stdout
        assert "[WARNING]" not in done.stdout


@pytest.mark.parametrize("mode", list(TLS_MODES))
async def test_every_tls_mode_renders_what_it_needs(mode: str) -> None:
    objects = await render("atc-system", "--set", f"tls.mode={mode}", *TLS_MODES[mode])
    kinds = {obj["kind"] for obj in objects}
    assert {"CustomResourceDefinition", "Deployment", "Service", "PodDisruptionBudget"} <= kinds
    configs = {obj["metadata"]["name"]: obj for obj in by_kind(objects, "ValidatingWebhookConfiguration")}
    assert set(configs) == {"atc-airway", "atc-flight", "atc-resources"}
    secrets = by_kind(objects, "Secret")
    bundles = {w["clientConfig"].get("caBundle") for c in configs.values() for w in c["webhooks"]}
    if mode == "selfSigned":
        (secret,) = secrets
        assert secret["metadata"]["name"] == "atc-webhook-tls"
        assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
        assert bundles == {secret["data"]["ca.crt"]}  # the same CA the Secret holds
        assert base64.b64decode(secret["data"]["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
    elif mode == "certManager":
        assert not secrets
        assert bundles == {None}  # cert-manager's cainjector fills it in
        (certificate,) = [c for c in by_kind(objects, "Certificate") if c["metadata"]["name"] == "atc-webhook"]
        assert certificate["spec"]["secretName"] == "atc-webhook-tls"
        assert "atc.atc-system.svc" in certificate["spec"]["dnsNames"]
        for config in configs.values():
            assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "atc-system/atc-webhook"
    else:
        assert not secrets  # the user's Secret; no lookup possible in `helm template`, no tls.caBundle given
        assert bundles == {None}
    for deployment in by_kind(objects, "Deployment"):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        tls_volume = volumes.get("tls") or volumes["webhook-ca"]
        assert tls_volume["secret"]["secretName"] == (
            "my-webhook-tls" if mode == "existingSecret" else "atc-webhook-tls"
        )


async def test_existing_secret_mode_takes_the_ca_bundle_from_values_and_requires_a_secret_name() -> None:
    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n").decode()
    objects = await render(
        "atc-system", "--set", "tls.mode=existingSecret", "--set", "tls.secretName=s", "--set", f"tls.caBundle={bundle}"
    )
    for config in by_kind(objects, "ValidatingWebhookConfiguration"):
        assert config["webhooks"][0]["clientConfig"]["caBundle"] == bundle
    done = await helm("template", "atc", str(CHART), "--set", "tls.mode=existingSecret", check=False)
    assert done.returncode != 0
    assert "tls.secretName is required with tls.mode=existingSecret" in done.stderr


async def test_the_static_webhook_configs_equal_what_the_services_build() -> None:
    objects = await render("atc-system", release="atc")
    rendered = {obj["metadata"]["name"]: obj for obj in by_kind(objects, "ValidatingWebhookConfiguration")}
    ca = base64.b64decode(by_kind(objects, "Secret")[0]["data"]["ca.crt"])
    expected = static_webhook_configs(Target("atc", "atc-system"), ca_bundle=ca)
    assert len(expected) == len(rendered) == 3
    for config in expected:
        chart = rendered[config["metadata"]["name"]]
        assert chart["webhooks"] == config["webhooks"]
        assert chart["apiVersion"] == config["apiVersion"]


async def test_the_services_get_the_settings_the_chart_promises() -> None:
    objects = await render(
        "atc-system", "--set", "moduleAllowList={oci://reg/*,https://x/*}", "--set", "logFormat=text"
    )
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    assert set(deployments) == {"atc-controller", "atc-webhook"}
    envs = {}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        envs[name] = {e["name"]: e["value"] for e in container["env"]}
        assert deployment["spec"]["replicas"] == 2
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        cache = next(m for m in container["volumeMounts"] if m["name"] == "cache")
        assert cache["mountPath"] == "/tmp"
        assert envs[name]["CACHE_FS"] == "/tmp"
        assert {v["name"]: v for v in pod["volumes"]}["cache"]["emptyDir"]
        assert envs[name]["TLS_CA_CERT"] == "/etc/atc/tls/ca.crt"
        assert envs[name]["SVC_NAME"] == "atc"
        assert envs[name]["SVC_NAMESPACE"] == "atc-system"
        assert envs[name]["SVC_PORT"] == "443"
        assert envs[name]["MODULE_ALLOW_LIST"] == "oci://reg/*,https://x/*"
        assert envs[name]["LOG_FORMAT"] == "text"
    controller, webhook = deployments["atc-controller"], deployments["atc-webhook"]
    assert controller["spec"]["template"]["spec"]["serviceAccountName"] == "atc-service-account"
    assert envs["atc-controller"]["HEALTH_PORT"] == "8081"
    assert envs["atc-controller"]["METRICS_PORT"] == "8080"
    probes = controller["spec"]["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert envs["atc-webhook"]["REGISTER_WEBHOOKS"] == "false"
    assert envs["atc-webhook"]["TLS_SERVER_CERT"] == "/etc/atc/tls/tls.crt"
    assert envs["atc-webhook"]["PORT"] == "3000"
    webhook_probe = webhook["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert webhook_probe == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == "atc"]
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https"}]


async def test_module_keys_and_the_docker_config_secret_reach_both_services(kubeconfig: Path, namespace: str) -> None:
    body = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE="
    pem = f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"
    values = ["--set", "dockerConfigSecretName=regcred", "--set-json", f"moduleVerificationKeys={json.dumps([pem])}"]
    objects = await render(namespace, *values, crds=False)
    (keys,) = [s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == "atc-module-verification-keys"]
    assert json.loads(base64.b64decode(keys["data"]["keys.json"])) == [pem]
    for deployment in by_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["MODULE_VERIFICATION_KEYS_PATH"] == "/etc/atc/module-keys/keys.json"
        assert env["DOCKER_CONFIG_SECRET_NAME"] == "regcred"
        assert env["DOCKER_CONFIG_FILE"] == "/var/run/atc/docker/config.json"
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["module-keys"] == {"name": "module-keys", "mountPath": "/etc/atc/module-keys", "readOnly": True}
        assert volumes["module-keys"]["secret"]["secretName"] == "atc-module-verification-keys"
        assert mounts["docker-config"]["mountPath"] == "/var/run/atc/docker"  # writable: the root is read-only
        assert "emptyDir" in volumes["docker-config"]
        assert "checksum/module-keys" in deployment["spec"]["template"]["metadata"]["annotations"]
    (role,) = [r for r in by_kind(objects, "Role") if r["metadata"]["name"] == "atc-docker-config"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["regcred"], "verbs": ["get", "list", "watch"]}
    ]
    (binding,) = [b for b in by_kind(objects, "RoleBinding") if b["metadata"]["name"] == "atc-docker-config"]
    assert {s["name"] for s in binding["subjects"]} == {"atc-service-account", "atc-webhook"}
    async with await KubeClient.connect(str(kubeconfig)) as kube:
        for obj in objects:
            if obj["kind"] not in FOREIGN_KINDS:
                await kube.apply(api_path(obj), obj, field_manager="chart-test", force=True, dry_run=True)
    plain = await render(namespace, crds=False)
    assert not [o for o in plain if "docker-config" in o["metadata"]["name"] or "module-verif" in o["metadata"]["name"]]
    done = await helm("template", "atc", str(CHART), "--set", "dockerConfigSecretName=Not_A_Name", check=False)
    assert done.returncode != 0
    assert "/dockerConfigSecretName" in done.stderr


async def test_the_schema_rejects_bad_values_with_a_clear_error() -> None:
    done = await helm("template", "atc", str(CHART), "--set-string", "controller.replicaCount=two", check=False)
    assert done.returncode != 0
    assert "at '/controller/replicaCount': got string, want integer" in done.stderr
    done = await helm("template", "atc", str(CHART), "--set", "tls.mode=manual", check=False)
    assert done.returncode != 0
    assert "at '/tls/mode': value must be one of 'selfSigned', 'certManager', 'existingSecret'" in done.stderr
    done = await helm("template", "atc", str(CHART), "--set", "controller.serviceAccount.name=other", check=False)
    assert done.returncode != 0
    assert 'controller.serviceAccount.name must be "atc-service-account"' in done.stderr


async def test_no_rule_pairs_a_wildcard_verb_with_a_wildcard_resource_by_default() -> None:
    objects = await render("atc-system")
    roles = by_kind(objects, "ClusterRole") + by_kind(objects, "Role")
    assert len(roles) == 3  # controller ClusterRole, its leader-election Role, webhook ClusterRole
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"], (role["metadata"]["name"], rule)
            for dangerous in ("escalate", "bind", "impersonate"):
                assert dangerous not in rule["verbs"], (role["metadata"]["name"], rule)
            if "*" in rule.get("resources", []):
                assert set(rule["verbs"]) <= {"get", "list", "watch", "update", "patch"}, rule


async def test_the_default_airway_and_flight_rules_are_values() -> None:
    objects = await render(
        "atc-system",
        "--set",
        "controller.rbac.airwayGroups={examples.com}",
        "--set",
        "controller.rbac.readAllResources=false",
        "--set",
        "controller.rbac.flightResources[0].apiGroups={apps}",
        "--set",
        "controller.rbac.flightResources[0].resources={deployments}",
    )
    rules = {r["metadata"]["name"]: r["rules"] for r in by_kind(objects, "ClusterRole")}
    assert all("*" not in rule["apiGroups"] for rules_ in rules.values() for rule in rules_)
    assert {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    } in rules["atc-controller"]
    assert {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "create", "update", "patch"],
    } in rules["atc-webhook"]


# ---------------------------------------------------------------------------------------------- the API server
@pytest.mark.parametrize("mode", list(TLS_MODES))
async def test_the_api_server_accepts_every_rendered_object(kubeconfig: Path, namespace: str, mode: str) -> None:
    objects = await render(namespace, "--set", f"tls.mode={mode}", *TLS_MODES[mode], "--set", "fullnameOverride=c")
    async with await KubeClient.connect(str(kubeconfig)) as kube:
        for obj in objects:
            if obj["kind"] in FOREIGN_KINDS:
                continue
            # dryRun=All: validated, defaulted and admitted as a real write, then nothing is stored
            accepted = await kube.apply(api_path(obj), obj, field_manager="chart-test", force=True, dry_run=True)
            assert accepted["metadata"]["name"] == obj["metadata"]["name"]
    assert {obj["kind"] for obj in objects} - FOREIGN_KINDS <= set(RESOURCES)


# ---------------------------------------------------------------------------------------------- RBAC sufficiency
async def test_the_chart_rbac_is_enough_for_the_backend_scenario_and_no_more(harness: Harness) -> None:
    # the harness runs every service as the chart's ServiceAccounts with the chart's RBAC
    # (tools/deployed.py); this test checks that it is enough for the scenario, and no more
    await harness.start_atc()
    identities = await harness.identities()
    fullname, kube = harness.svc_name, harness.kube
    controller_sa = identities.controller_account
    controller_kc, webhook_kc = identities.controller_kubeconfig, identities.webhook_kubeconfig

    ref = await harness.create_airway("backend", mode="dynamic", clusterAccess=True)
    await harness.wait_airway_ready(ref)
    await harness.create_instance(ref, "api", {"secretData": {"password": "first"}, "replicas": 1})
    await harness.wait_condition(ref, "api", "True", "Ready", timeout=90)
    assert await backend_deployment_hash(kube, harness.namespace, "api") == backend_secret_hash({"password": "first"})
    secret_path = f"/api/v1/namespaces/{harness.namespace}/secrets/api-secret"
    await kube.request("PATCH", secret_path, body={"stringData": {"password": "second"}}, content_type=MERGE_PATCH)

    async def rolled() -> bool:  # the webhook's signal reached the controller, which re-ran the flight
        return await backend_deployment_hash(kube, harness.namespace, "api") == backend_secret_hash(
            {"password": "second"}
        )

    await eventually(rolled, timeout=45, what="pod template hash follows the Secret")
    lease = await kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{harness.namespace}/leases/atc-controller")
    assert lease["spec"]["holderIdentity"]

    # writes outside the granted rules are refused
    async with await KubeClient.connect(str(controller_kc)) as as_controller:
        binding = {
            "metadata": {"name": f"{fullname}-escalate"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": controller_sa, "namespace": harness.namespace}],
        }
        refused = await refusal(as_controller, "POST", f"{RBAC}/clusterrolebindings", binding)
        assert refused.status == 403, refused.message
        assert "clusterrolebindings" in refused.message
        refused = await refusal(as_controller, "DELETE", "/api/v1/nodes/any-node")
        assert refused.status == 403, refused.message
        pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
        refused = await refusal(as_controller, "POST", f"/api/v1/namespaces/{harness.namespace}/pods", pod)
        assert refused.status == 403, refused.message  # pods are not in the default flightResources
    async with await KubeClient.connect(str(webhook_kc)) as as_webhook:
        refused = await refusal(as_webhook, "DELETE", secret_path)
        assert refused.status == 403, refused.message
        config = {"metadata": {"name": f"{fullname}-rogue"}, "webhooks": []}
        refused = await refusal(
            as_webhook, "POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", config
        )
        assert refused.status == 403, refused.message  # the chart owns the webhook configurations

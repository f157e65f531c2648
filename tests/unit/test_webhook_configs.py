"""The ValidatingWebhookConfigurations (``atc.model.webhook_configs``) and what the webhook registers."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from fakes import settle
from webhook_fakes import FakeKube

from atc.model.types import Object
from atc.model.webhook_configs import (
    instance_webhook_config,
    static_webhook_configs,
    webhook_client_config,
    webhook_paths,
)
from atc_webhook.registration import Registrar
from atc_webhook.server import served_paths
from atc_webhook.settings import WebhookSettings

CA = b"-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"
NOT_ATC = {
    "name": "not-atc-service-account",
    "expression": 'request.userInfo.username != "system:serviceaccount:atc-system:atc-service-account"',
}


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_bytes(CA)
    return path


@pytest.fixture
def settings(ca_file: Path) -> WebhookSettings:
    return WebhookSettings(svc_name="atc", svc_namespace="atc-system", svc_port=8443, tls_ca_cert=str(ca_file))


def by_name(configs: list[Object]) -> dict[str, Object]:
    return {config["metadata"]["name"]: config["webhooks"][0] for config in configs}


def test_client_config_uses_the_service_with_the_ca_bundle(settings: WebhookSettings) -> None:
    assert webhook_client_config(settings, "/validations/resources") == {
        "service": {"namespace": "atc-system", "name": "atc", "port": 8443, "path": "/validations/resources"},
        "caBundle": base64.b64encode(CA).decode(),
    }


def test_client_config_uses_the_url_when_set(settings: WebhookSettings) -> None:
    local = settings.model_copy(update={"webhook_url": "https://127.0.0.1:8443/"})
    config = webhook_client_config(local, "/validations/x")
    assert config == {"url": "https://127.0.0.1:8443/validations/x", "caBundle": base64.b64encode(CA).decode()}


def test_no_ca_file_means_no_ca_bundle() -> None:
    assert "caBundle" not in webhook_client_config(WebhookSettings(), "/p")


def test_the_static_configs_and_no_external_resources_webhook(settings: WebhookSettings) -> None:
    configs = static_webhook_configs(settings)
    assert [c["metadata"]["name"] for c in configs] == ["atc-airway", "atc-flight", "atc-resources"]
    assert all(c["kind"] == "ValidatingWebhookConfiguration" for c in configs)
    assert all(c["apiVersion"] == "admissionregistration.k8s.io/v1" for c in configs)


def test_airway_webhook(settings: WebhookSettings) -> None:
    airway = by_name(static_webhook_configs(settings))["atc-airway"]
    assert airway["name"] == "airways.yoke.cd"
    assert airway["clientConfig"]["service"]["path"] == "/validations/airways.yoke.cd"
    assert airway["rules"] == [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": ["yoke.cd"],
            "apiVersions": ["v1alpha1"],
            "resources": ["airways"],
            "scope": "Cluster",
        }
    ]
    assert (airway["timeoutSeconds"], airway["sideEffects"], airway["failurePolicy"]) == (30, "None", "Fail")
    assert "matchConditions" not in airway
    assert airway["admissionReviewVersions"] == ["v1"]


def test_flight_webhook(settings: WebhookSettings) -> None:
    flight = by_name(static_webhook_configs(settings))["atc-flight"]
    assert flight["name"] == "flights.yoke.cd"
    assert flight["clientConfig"]["service"]["path"] == "/validations/flights.yoke.cd"
    assert flight["rules"][0]["resources"] == ["flights", "clusterflights"]
    assert flight["rules"][0]["scope"] == "*"
    assert (flight["failurePolicy"], flight["timeoutSeconds"], flight["matchPolicy"]) == ("Fail", 30, "Exact")
    assert flight["matchConditions"] == [NOT_ATC]


def test_resources_webhook(settings: WebhookSettings) -> None:
    resources = by_name(static_webhook_configs(settings))["atc-resources"]
    assert resources["name"] == "resources.yoke.cd"
    assert resources["clientConfig"]["service"]["path"] == "/validations/resources"
    assert resources["rules"] == [
        {
            "operations": ["UPDATE", "DELETE"],
            "apiGroups": ["*"],
            "apiVersions": ["*"],
            "resources": ["*/*"],
            "scope": "*",
        }
    ]
    assert (resources["failurePolicy"], resources["timeoutSeconds"], resources["matchPolicy"]) == (
        "Ignore",
        10,
        "Exact",
    )
    assert resources["sideEffects"] == "NoneOnDryRun"
    names = [condition["name"] for condition in resources["matchConditions"]]
    assert names == ["managed-by-atc", "not-atc-service-account", "not-atc-webhook-dry-run", "not-lease-or-node"]
    assert resources["matchConditions"][0]["expression"] == (
        'object.metadata.labels["app.kubernetes.io/managed-by"] == "atc.yoke" || '
        'oldObject.metadata.labels["app.kubernetes.io/managed-by"] == "atc.yoke"'
    )
    assert resources["matchConditions"][1] == NOT_ATC
    webhook_user = f"system:serviceaccount:{settings.svc_namespace}:{settings.svc_name}-webhook"
    assert resources["matchConditions"][2]["expression"] == (
        f'!(request.dryRun == true && request.userInfo.username == "{webhook_user}")'
    )
    assert 'request.resource.resource == "leases"' in resources["matchConditions"][3]["expression"]
    assert 'request.resource.resource == "nodes"' in resources["matchConditions"][3]["expression"]
    assert resources["objectSelector"] == {
        "matchExpressions": [{"key": "app.kubernetes.io/managed-by", "operator": "In", "values": ["atc.yoke"]}]
    }


def test_every_static_webhook_carries_the_ca_bundle(settings: WebhookSettings) -> None:
    bundles = {w["clientConfig"]["caBundle"] for w in by_name(static_webhook_configs(settings)).values()}
    assert bundles == {base64.b64encode(CA).decode()}


def airway(scope: str = "Namespaced") -> Object:
    return {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": "backends.examples.com", "uid": "uid-1"},
        "spec": {
            "template": {
                "group": "examples.com",
                "names": {"kind": "Backend", "plural": "backends"},
                "scope": scope,
                "versions": [
                    {"name": "v1", "served": True, "storage": False},
                    {"name": "v2", "served": True, "storage": True},
                ],
            }
        },
    }


def test_instance_webhook_config(settings: WebhookSettings) -> None:
    config = instance_webhook_config(airway(), settings)
    assert config["metadata"] == {
        "name": "backends.examples.com",
        "ownerReferences": [
            {"apiVersion": "yoke.cd/v1alpha1", "kind": "Airway", "name": "backends.examples.com", "uid": "uid-1"}
        ],
    }
    [webhook] = config["webhooks"]
    assert webhook["name"] == "backends.examples.com"
    assert webhook["clientConfig"]["service"]["path"] == "/validations/backends.examples.com"
    assert webhook["rules"] == [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": ["examples.com"],
            "apiVersions": ["v2"],
            "resources": ["backends"],
            "scope": "Namespaced",
        }
    ]
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"], webhook["matchPolicy"]) == ("Fail", 10, "Exact")
    assert webhook["sideEffects"] == "None"
    assert webhook["matchConditions"] == [NOT_ATC]


def test_instance_webhook_of_a_cluster_scoped_airway(settings: WebhookSettings) -> None:
    config = instance_webhook_config(airway("Cluster"), settings, ca_bundle=b"")
    assert config["webhooks"][0]["rules"][0]["scope"] == "Cluster"
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]


def test_webhook_paths_reads_urls_and_services(settings: WebhookSettings) -> None:
    local = settings.model_copy(update={"webhook_url": "https://127.0.0.1:9443"})
    assert [webhook_paths(c) for c in static_webhook_configs(local)] == [
        {"/validations/airways.yoke.cd"},
        {"/validations/flights.yoke.cd"},
        {"/validations/resources"},
    ]
    assert webhook_paths(instance_webhook_config(airway(), settings)) == {"/validations/backends.examples.com"}


def test_only_configs_whose_paths_are_served_are_registered(settings: WebhookSettings) -> None:
    assert "/validations/resources" in served_paths()
    registrar = Registrar(FakeKube(), settings, {"/validations/resources"})
    assert [c["metadata"]["name"] for c in registrar.configs()] == ["atc-resources"]
    everything = {"/validations/resources", "/validations/airways.yoke.cd", "/validations/flights.yoke.cd"}
    registrar = Registrar(FakeKube(), settings, everything)
    assert [c["metadata"]["name"] for c in registrar.configs()] == ["atc-airway", "atc-flight", "atc-resources"]


async def test_the_registrar_applies_again_when_refreshed(settings: WebhookSettings) -> None:
    kube = FakeKube()
    registrar = Registrar(kube, settings, {"/validations/resources"})
    running = asyncio.create_task(registrar.run())
    try:
        await asyncio.wait_for(registrar.applied.wait(), 5)
        [(path, body, manager, force)] = kube.applied
        assert path == "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/atc-resources"
        assert (body["metadata"]["name"], manager, force) == ("atc-resources", "yoke.cd/atc-webhook", True)
        registrar.refresh()
        await settle()
        assert len(kube.applied) == 2
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def test_webhook_url_must_be_https() -> None:
    with pytest.raises(ValueError, match="must be an https:// URL"):
        WebhookSettings(webhook_url="http://127.0.0.1:8443")

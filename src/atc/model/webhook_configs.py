"""The ValidatingWebhookConfigurations of the ATC.

docs/webhook.md, "Webhook configurations", describes them, and "Where it differs from yoke" how they differ
from yoke's.

Builders only, no API calls:
- ``webhook_client_config(settings, path)``: where the API server calls the
  webhook, ``<WEBHOOK_URL><path>`` when ``WEBHOOK_URL`` is set (local and test
  runs), else the Service ``SVC_NAMESPACE/SVC_NAME:SVC_PORT``, with the bytes
  of ``TLS_CA_CERT`` as ``caBundle``;
- ``static_webhook_configs(settings)``: ``atc-airway``, ``atc-flight`` and
  ``atc-resources`` (no ``atc-external-resources``: the controller watches
  external objects itself);
- ``instance_webhook_config(airway, settings)``: the per-Airway config named
  after the Airway, owned by it.

The webhook service applies the static ones when ``REGISTER_WEBHOOKS`` is set
(``atc_webhook.registration``; in a cluster the chart owns them and nothing
deletes them on shutdown); the controller applies the per-Airway one from its
Airway reconcile. Both pass their settings, which carry the fields of
``WebhookTarget``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Protocol

from atc.model.airway_template import storage_version
from atc.model.constants import API_GROUP, API_VERSION, LABEL_MANAGED_BY, MANAGED_BY_ATC
from atc.model.types import Object

VALIDATING_CONFIGS_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
AIRWAY_CONFIG = "atc-airway"
FLIGHT_CONFIG = "atc-flight"
RESOURCES_CONFIG = "atc-resources"
AIRWAYS_PATH = "/validations/airways.yoke.cd"
FLIGHTS_PATH = "/validations/flights.yoke.cd"
RESOURCES_PATH = "/validations/resources"
ADMISSION_REVIEW_VERSIONS = ["v1"]

MANAGED_BY_ATC_EXPRESSION = (
    f'object.metadata.labels["{LABEL_MANAGED_BY}"] == "{MANAGED_BY_ATC}" || '
    f'oldObject.metadata.labels["{LABEL_MANAGED_BY}"] == "{MANAGED_BY_ATC}"'
)
NOT_LEASE_OR_NODE_EXPRESSION = (
    '!(request.resource.group == "coordination.k8s.io" && request.resource.resource == "leases") && '
    '!(request.resource.group == "" && request.resource.resource == "nodes")'
)


class WebhookTarget(Protocol):
    """The settings both services have that say where the webhook is reached."""

    @property
    def webhook_url(self) -> str: ...

    @property
    def svc_name(self) -> str: ...

    @property
    def svc_namespace(self) -> str: ...

    @property
    def svc_port(self) -> int: ...

    @property
    def tls_ca_cert(self) -> str: ...


def read_ca_bundle(settings: WebhookTarget) -> bytes:
    """The bytes of ``TLS_CA_CERT``, or empty when unset (the API server then uses its own trust roots)."""
    return Path(settings.tls_ca_cert).read_bytes() if settings.tls_ca_cert else b""


def webhook_client_config(settings: WebhookTarget, path: str, *, ca_bundle: bytes | None = None) -> Object:
    """``clientConfig`` for a webhook served at ``path`` (``ca_bundle`` defaults to the TLS_CA_CERT file)."""
    bundle = read_ca_bundle(settings) if ca_bundle is None else ca_bundle
    config: Object
    if settings.webhook_url:
        config = {"url": settings.webhook_url.rstrip("/") + path}
    else:
        service = {"namespace": settings.svc_namespace, "name": settings.svc_name, "port": settings.svc_port}
        config = {"service": {**service, "path": path}}
    if bundle:
        config["caBundle"] = base64.b64encode(bundle).decode("ascii")
    return config


def atc_service_account(settings: WebhookTarget) -> str:
    """The username the ATC's own writes come from: ``system:serviceaccount:<ns>:<svc>-service-account``."""
    return f"system:serviceaccount:{settings.svc_namespace}:{settings.svc_name}-service-account"


def not_atc_service_account(settings: WebhookTarget) -> Object:
    """The match condition that lets the ATC's own writes through without a webhook call."""
    return {
        "name": "not-atc-service-account",
        "expression": f'request.userInfo.username != "{atc_service_account(settings)}"',
    }


def webhook_service_account(settings: WebhookTarget) -> str:
    """The username of the webhook service: ``system:serviceaccount:<ns>:<svc>-webhook``."""
    return f"system:serviceaccount:{settings.svc_namespace}:{settings.svc_name}-webhook"


def not_webhook_dry_run(settings: WebhookTarget) -> Object:
    """The match condition that skips the webhook's own dry runs of flight output.

    The instance and Flight admission dry-run the takeoff as the webhook's ServiceAccount, and that
    dry run updates children exactly as the controller's takeoff would; judged by ``atc-resources``
    it would look like someone else editing them (denied in static mode). A user's dry run is still
    judged, and the webhook's account never writes a child for real (docs/webhook.md).
    """
    user = webhook_service_account(settings)
    return {
        "name": "not-atc-webhook-dry-run",
        "expression": f'!(request.dryRun == true && request.userInfo.username == "{user}")',
    }


def _rule(operations: list[str], groups: list[str], versions: list[str], resources: list[str], scope: str) -> Object:
    return {
        "operations": operations,
        "apiGroups": groups,
        "apiVersions": versions,
        "resources": resources,
        "scope": scope,
    }


def _config(name: str, webhook: Object, owner: Object | None = None) -> Object:
    metadata: Object = {"name": name}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [webhook],
    }


def _webhook(name: str, client_config: Object, rules: list[Object], **fields: Any) -> Object:
    return {
        "name": name,
        "clientConfig": client_config,
        "rules": rules,
        "admissionReviewVersions": ADMISSION_REVIEW_VERSIONS,
        "sideEffects": "None",
        **fields,
    }


def airway_webhook_config(settings: WebhookTarget, ca_bundle: bytes) -> Object:
    """``atc-airway``: Airway CREATE/UPDATE (module and CRD template checks)."""
    client = webhook_client_config(settings, AIRWAYS_PATH, ca_bundle=ca_bundle)
    rules = [_rule(["CREATE", "UPDATE"], [API_GROUP], ["v1alpha1"], ["airways"], "Cluster")]
    webhook = _webhook(
        "airways.yoke.cd", client, rules, failurePolicy="Fail", matchPolicy="Equivalent", timeoutSeconds=30
    )
    return _config(AIRWAY_CONFIG, webhook)


def flight_webhook_config(settings: WebhookTarget, ca_bundle: bytes) -> Object:
    """``atc-flight``: Flight and ClusterFlight CREATE/UPDATE (dry-run takeoff)."""
    client = webhook_client_config(settings, FLIGHTS_PATH, ca_bundle=ca_bundle)
    rules = [_rule(["CREATE", "UPDATE"], [API_GROUP], ["v1alpha1"], ["flights", "clusterflights"], "*")]
    webhook = _webhook(
        "flights.yoke.cd",
        client,
        rules,
        failurePolicy="Fail",
        matchPolicy="Exact",
        timeoutSeconds=30,
        matchConditions=[not_atc_service_account(settings)],
    )
    return _config(FLIGHT_CONFIG, webhook)


def resources_webhook_config(settings: WebhookTarget, ca_bundle: bytes) -> Object:
    """``atc-resources``: UPDATE/DELETE of anything the ATC manages (modes; yoke's annotations are immutable).

    ``NoneOnDryRun``: the webhook records an Event for dynamic and subscription
    instances, never for a dry run. The ``objectSelector`` (old or new object
    labelled ``app.kubernetes.io/managed-by=atc.yoke``, the API server checks
    both) says what yoke's ``managed-by-atc`` condition says, but is evaluated
    first: without it the condition fails with "no such key" on every update of
    an unlabelled object in the cluster (counted by the API server as match
    condition errors) before the webhook is skipped.
    """
    client = webhook_client_config(settings, RESOURCES_PATH, ca_bundle=ca_bundle)
    rules = [_rule(["UPDATE", "DELETE"], ["*"], ["*"], ["*/*"], "*")]
    conditions = [
        {"name": "managed-by-atc", "expression": MANAGED_BY_ATC_EXPRESSION},
        not_atc_service_account(settings),
        not_webhook_dry_run(settings),
        {"name": "not-lease-or-node", "expression": NOT_LEASE_OR_NODE_EXPRESSION},
    ]
    webhook = _webhook(
        "resources.yoke.cd",
        client,
        rules,
        failurePolicy="Ignore",
        matchPolicy="Exact",
        timeoutSeconds=10,
        matchConditions=conditions,
        objectSelector={"matchExpressions": [{"key": LABEL_MANAGED_BY, "operator": "In", "values": [MANAGED_BY_ATC]}]},
        sideEffects="NoneOnDryRun",
    )
    return _config(RESOURCES_CONFIG, webhook)


def static_webhook_configs(settings: WebhookTarget, *, ca_bundle: bytes | None = None) -> list[Object]:
    """``atc-airway``, ``atc-flight`` and ``atc-resources``, in that order."""
    bundle = read_ca_bundle(settings) if ca_bundle is None else ca_bundle
    return [
        airway_webhook_config(settings, bundle),
        flight_webhook_config(settings, bundle),
        resources_webhook_config(settings, bundle),
    ]


def instance_path(airway_name: str) -> str:
    """Where an Airway's instances are validated: ``/validations/<airway name>``."""
    return f"/validations/{airway_name}"


def instance_webhook_config(airway: Object, settings: WebhookTarget, *, ca_bundle: bytes | None = None) -> Object:
    """The per-Airway config ``<airway name>``: instance CREATE/UPDATE at the storage version, owned by the Airway."""
    metadata = airway.get("metadata") or {}
    name = str(metadata.get("name", ""))
    template: Object = (airway.get("spec") or {}).get("template") or {}
    names = template.get("names") or {}
    owner = {"apiVersion": API_VERSION, "kind": "Airway", "name": name, "uid": str(metadata.get("uid", ""))}
    scope = "Cluster" if template.get("scope") == "Cluster" else "Namespaced"
    rules = [
        _rule(
            ["CREATE", "UPDATE"],
            [str(template.get("group", ""))],
            [storage_version(template)],
            [str(names.get("plural", ""))],
            scope,
        )
    ]
    webhook = _webhook(
        f"{names.get('plural', '')}.{template.get('group', '')}",
        webhook_client_config(settings, instance_path(name), ca_bundle=ca_bundle),
        rules,
        failurePolicy="Fail",
        matchPolicy="Exact",
        timeoutSeconds=10,
        matchConditions=[not_atc_service_account(settings)],
    )
    return _config(name, webhook, owner)


def webhook_paths(config: Object) -> set[str]:
    """The paths a ValidatingWebhookConfiguration sends requests to (its ``url`` or ``service.path``)."""
    paths = set()
    for webhook in config.get("webhooks") or []:
        client = webhook.get("clientConfig") or {}
        if client.get("url"):
            rest = str(client["url"]).split("://", 1)[-1]
            paths.add("/" + rest.split("/", 1)[1] if "/" in rest else "/")
        else:
            paths.add(str((client.get("service") or {}).get("path") or "/"))
    return paths

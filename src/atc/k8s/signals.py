"""The "child changed" signal from the webhook to the controller: a core/v1 Event.

Why an Event: docs/design.md, "The Events channel"; its format: docs/webhook.md, "The channel to the
controller".

When the webhook admits an UPDATE or DELETE of a child of a ``dynamic`` or
``subscription`` instance (and the request is not a dry run), it creates an
Event *regarding the instance*:

- ``metadata.namespace``: the instance's namespace (``default`` for a cluster-scoped instance);
- ``metadata.labels``: ``atc.yoke.cd/signal: child-changed`` (the controller watches this selector only);
- ``metadata.annotations``: ``atc.yoke.cd/child-ref`` (resource ref of the child, ``<ns>/<Kind.group>:<name>``),
  ``atc.yoke.cd/child-resource-version`` (the child's resourceVersion *before* the admitted change) and
  ``atc.yoke.cd/operation`` (``UPDATE`` or ``DELETE``);
- ``involvedObject``: apiVersion (the Airway's storage version, or ``yoke.cd/v1alpha1`` for a Flight or
  ClusterFlight), kind, name, namespace and uid of the instance;
- ``reason: SubresourceChanged``, ``type: Normal``, ``message: <operation> of <child ref> by <username>``,
  ``source.component`` and ``reportingComponent``: ``atc-webhook``.

``child_changed_event`` builds it (the webhook, ``atc_webhook.signals``);
``parse_child_changed`` reads it back (the controller's Event watch).
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass

from atc.k8s.refs import split_api_version
from atc.model.types import Object

LABEL_SIGNAL = "atc.yoke.cd/signal"
SIGNAL_CHILD_CHANGED = "child-changed"
SIGNAL_SELECTOR = f"{LABEL_SIGNAL}={SIGNAL_CHILD_CHANGED}"
ANNOTATION_CHILD_REF = "atc.yoke.cd/child-ref"
ANNOTATION_CHILD_RESOURCE_VERSION = "atc.yoke.cd/child-resource-version"
ANNOTATION_OPERATION = "atc.yoke.cd/operation"
REASON_SUBRESOURCE_CHANGED = "SubresourceChanged"
REPORTING_COMPONENT = "atc-webhook"
CLUSTER_SCOPED_EVENT_NAMESPACE = "default"
_MAX_NAME = 253
_NAME_SUFFIX_BYTES = 8


@dataclass(frozen=True)
class ChildChange:
    """An admitted change of a child, and the instance it belongs to."""

    instance_api_version: str
    instance_kind: str
    instance_namespace: str  # "" for a cluster-scoped instance
    instance_name: str
    instance_uid: str
    child_ref: str
    child_resource_version: str
    operation: str  # UPDATE or DELETE
    username: str = ""

    @property
    def instance_group(self) -> str:
        group, _ = split_api_version(self.instance_api_version)
        return group

    @property
    def instance_key(self) -> str:
        """``namespace/name`` of the instance (``/name`` when cluster-scoped), as the controller keys it."""
        return f"{self.instance_namespace}/{self.instance_name}"

    @property
    def message(self) -> str:
        return f"{self.operation} of {self.child_ref} by {self.username}"


def _timestamp(now: datetime.datetime | None) -> str:
    return (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_name(instance_name: str) -> str:
    suffix = secrets.token_hex(_NAME_SUFFIX_BYTES)
    return f"{instance_name[: _MAX_NAME - len(suffix) - 1]}.{suffix}"


def _involved_object(change: ChildChange) -> Object:
    involved: Object = {
        "apiVersion": change.instance_api_version,
        "kind": change.instance_kind,
        "name": change.instance_name,
    }
    if change.instance_namespace:
        involved["namespace"] = change.instance_namespace
    if change.instance_uid:
        involved["uid"] = change.instance_uid
    return involved


def child_changed_event(
    change: ChildChange, *, reporting_instance: str = "", now: datetime.datetime | None = None
) -> Object:
    """The Event recording ``change`` (POST it to ``/api/v1/namespaces/<metadata.namespace>/events``)."""
    stamp = _timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": _event_name(change.instance_name),
            "namespace": change.instance_namespace or CLUSTER_SCOPED_EVENT_NAMESPACE,
            "labels": {LABEL_SIGNAL: SIGNAL_CHILD_CHANGED},
            "annotations": {
                ANNOTATION_CHILD_REF: change.child_ref,
                ANNOTATION_CHILD_RESOURCE_VERSION: change.child_resource_version,
                ANNOTATION_OPERATION: change.operation,
            },
        },
        "involvedObject": _involved_object(change),
        "reason": REASON_SUBRESOURCE_CHANGED,
        "message": change.message,
        "type": "Normal",
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": reporting_instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def parse_child_changed(event: Object) -> ChildChange | None:
    """The change an Event records, or None when it is not a child-changed signal."""
    metadata = event.get("metadata") or {}
    if (metadata.get("labels") or {}).get(LABEL_SIGNAL) != SIGNAL_CHILD_CHANGED:
        return None
    annotations = metadata.get("annotations") or {}
    involved = event.get("involvedObject") or {}
    message = str(event.get("message", ""))
    return ChildChange(
        instance_api_version=str(involved.get("apiVersion", "")),
        instance_kind=str(involved.get("kind", "")),
        instance_namespace=str(involved.get("namespace", "") or ""),
        instance_name=str(involved.get("name", "")),
        instance_uid=str(involved.get("uid", "") or ""),
        child_ref=str(annotations.get(ANNOTATION_CHILD_REF, "")),
        child_resource_version=str(annotations.get(ANNOTATION_CHILD_RESOURCE_VERSION, "")),
        operation=str(annotations.get(ANNOTATION_OPERATION, "")),
        username=message.rpartition(" by ")[2] if " by " in message else "",
    )

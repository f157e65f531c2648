"""Which cluster an instance, Flight or ClusterFlight deploys to: the kubeconfig Secret annotations.

yoke's CRD schemas stay as they are, so the reference is an annotation (docs/targets.md):

- ``atc.yoke.cd/kubeconfig-secret``: the Secret holding the target cluster's kubeconfig. A
  namespaced object names a Secret of its own namespace (``name``); a cluster-scoped object (a
  ClusterFlight, an instance of a cluster-scoped Airway) names ``namespace/name``.
- ``atc.yoke.cd/kubeconfig-key``: the Secret's key; without it ``value``, then ``value.yaml``, as
  Flux's ``spec.kubeConfig.secretRef`` reads it.

``target_ref(obj)`` is what the controller and the webhook call: None without the annotation, a
``TargetRef`` when it is well-formed, ``TargetRefError`` (a message naming the annotation, never its
value: it is untrusted) otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atc.model.types import Object

ANNOTATION_KUBECONFIG_SECRET = "atc.yoke.cd/kubeconfig-secret"
ANNOTATION_KUBECONFIG_KEY = "atc.yoke.cd/kubeconfig-key"
DEFAULT_KUBECONFIG_KEYS = ("value", "value.yaml")  # Flux's secretRef keys, in the order it reads them
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


class TargetRefError(ValueError):
    """The annotations do not name a Secret in a usable way."""


@dataclass(frozen=True)
class TargetRef:
    """A kubeconfig Secret: where it is and which of its keys to read (``keys`` in order)."""

    namespace: str
    name: str
    keys: tuple[str, ...] = DEFAULT_KUBECONFIG_KEYS

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _annotations(obj: Object) -> dict[str, str]:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def target_annotations(obj: Object | None) -> tuple[str, str]:
    """The two annotations' raw values ("" when absent): what an update may not change."""
    annotations = _annotations(obj or {})
    return (
        str(annotations.get(ANNOTATION_KUBECONFIG_SECRET, "")),
        str(annotations.get(ANNOTATION_KUBECONFIG_KEY, "")),
    )


def target_ref(obj: Object) -> TargetRef | None:
    """The kubeconfig Secret ``obj`` deploys through, or None to deploy into this cluster."""
    value, key = target_annotations(obj)
    if not value and not key:
        return None
    if not value:
        raise TargetRefError(f"{ANNOTATION_KUBECONFIG_KEY} is set without {ANNOTATION_KUBECONFIG_SECRET}")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    own_namespace = str((meta or {}).get("namespace") or "")
    namespace, _, name = value.rpartition("/")
    if own_namespace and namespace and namespace != own_namespace:
        raise TargetRefError(f"{ANNOTATION_KUBECONFIG_SECRET} must name a Secret of the object's own namespace")
    namespace = namespace or own_namespace
    if not namespace:
        raise TargetRefError(f"{ANNOTATION_KUBECONFIG_SECRET} of a cluster-scoped object must be namespace/name")
    if not (_DNS_SUBDOMAIN.match(name) and _DNS_SUBDOMAIN.match(namespace)):
        raise TargetRefError(f"{ANNOTATION_KUBECONFIG_SECRET} is not a valid namespace/name of a Secret")
    if key and not _SECRET_KEY.match(key):
        raise TargetRefError(f"{ANNOTATION_KUBECONFIG_KEY} is not a valid Secret key")
    return TargetRef(namespace, name, (key,) if key else DEFAULT_KUBECONFIG_KEYS)

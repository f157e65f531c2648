"""References to Kubernetes objects in yoke's text forms, and who owns an object.

- group kind: ``Deployment.apps``, ``ConfigMap`` (core group has no dot);
- resource ref: ``<namespace>/<Kind.group>:<name>`` (``/Namespace:foo`` when cluster-scoped);
- owner: ``<release namespace>/<release>`` from yoke's annotations (deprecated labels as fallback);
- canonical name: lowercased ``<ns or _>/<group or core>/<version>/<kind>/<name>`` used in errors;
- release identity: the canonical name without the version (matches objects across revisions).

Used by the host functions, apply/prune code, and admission decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atc.model.constants import (
    ANNOTATION_RELEASE,
    ANNOTATION_RELEASE_NAMESPACE,
    LABEL_DEPRECATED_RELEASE,
    LABEL_DEPRECATED_RELEASE_NAMESPACE,
)


class ApiVersionError(ValueError):
    """An apiVersion that is not ``version`` or ``group/version``."""


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` -> (``apps``, ``v1``); ``v1`` -> (``""``, ``v1``)."""
    parts = api_version.split("/")
    if len(parts) == 1:
        return "", parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ApiVersionError(f"unexpected GroupVersion string: {api_version}")


def group_kind(group: str, kind: str) -> str:
    return f"{kind}.{group}" if group else kind


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def object_group_kind(obj: dict[str, Any]) -> str:
    group, _ = split_api_version(str(obj.get("apiVersion", "")))
    return group_kind(group, str(obj.get("kind", "")))


def resource_ref(obj: dict[str, Any]) -> str:
    meta = _metadata(obj)
    return f"{meta.get('namespace', '') or ''}/{object_group_kind(obj)}:{meta.get('name', '')}"


def ref_of(namespace: str, group: str, kind: str, name: str) -> str:
    return f"{namespace}/{group_kind(group, kind)}:{name}"


@dataclass(frozen=True)
class ParsedRef:
    """The parts of ``<namespace>/<Kind.group>:<name>``."""

    namespace: str
    group_kind: str
    name: str

    @property
    def kind(self) -> str:
        return self.group_kind.split(".", 1)[0]

    @property
    def group(self) -> str:
        return self.group_kind.split(".", 1)[1] if "." in self.group_kind else ""


def parse_ref(ref: str) -> ParsedRef:
    namespace, _, rest = ref.partition("/")
    gk, _, name = rest.partition(":")
    return ParsedRef(namespace, gk, name)


def owner_of(obj: dict[str, Any]) -> str:
    """``<namespace>/<release>`` from yoke's annotations, else the deprecated labels; "" if unowned."""
    meta = _metadata(obj)
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    release = annotations.get(ANNOTATION_RELEASE) or labels.get(LABEL_DEPRECATED_RELEASE) or ""
    namespace = annotations.get(ANNOTATION_RELEASE_NAMESPACE) or labels.get(LABEL_DEPRECATED_RELEASE_NAMESPACE) or ""
    return f"{namespace}/{release}" if release and namespace else ""


def canonical_name(obj: dict[str, Any]) -> str:
    meta = _metadata(obj)
    group, version = split_api_version(str(obj.get("apiVersion", "")))
    parts = [meta.get("namespace") or "_", group or "core", version, obj.get("kind", ""), meta.get("name", "")]
    return "/".join(str(p) for p in parts).lower()


def release_identity(obj: dict[str, Any]) -> str:
    """How yoke matches an object across revisions: namespace, group, kind, name (version ignored)."""
    meta = _metadata(obj)
    group, _ = split_api_version(str(obj.get("apiVersion", "")))
    return f"{meta.get('namespace') or '_'}/{group or 'core'}/{obj.get('kind', '')}/{meta.get('name', '')}".lower()

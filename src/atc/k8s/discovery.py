"""REST mapping (GroupKind -> resource, version, scope) from the API server's discovery documents.

``RestMapper`` reads aggregated discovery (``/api`` and ``/apis``, one request
each) and answers ``mapping(group, kind, version)``. Answers are cached; a miss
can ``refresh()`` the cache, at most once per ``min_refresh_interval`` so a
flight that looks up unknown kinds cannot flood the API server. Callers: the
flight host functions (``k8s_lookup``, ``k8s_rest_mapping``), and apply and
readiness code that needs URLs for arbitrary kinds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from atc.model.types import Object

from .client import KubeClient

AGGREGATED_DISCOVERY = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)


@dataclass(frozen=True)
class RestMapping:
    """Where objects of one kind live in the API."""

    group: str
    version: str
    kind: str
    resource: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.resource}"
        return f"{base}/{self.resource}"

    def object_path(self, name: str, namespace: str = "") -> str:
        return f"{self.collection_path(namespace)}/{name}"


class NoMatchError(LookupError):
    """No resource serves the kind: ``no matches for kind "Foo" in version "x/v1"``."""


@dataclass
class _GroupIndex:
    preferred_version: str
    kinds_by_version: dict[str, dict[str, RestMapping]]


def _parse_group(entry: Object) -> tuple[str, _GroupIndex]:
    group = str(entry.get("metadata", {}).get("name", ""))
    versions: dict[str, dict[str, RestMapping]] = {}
    for version_entry in entry.get("versions", []):
        version = str(version_entry["version"])
        kinds = versions.setdefault(version, {})
        for resource in version_entry.get("resources", []):
            kind = resource.get("responseKind", {}).get("kind") or resource.get("singularResource", "")
            if not kind or "/" in str(resource.get("resource", "")):
                continue
            kinds[str(kind)] = RestMapping(
                group=group,
                version=version,
                kind=str(kind),
                resource=str(resource["resource"]),
                namespaced=resource.get("scope") == "Namespaced",
            )
    preferred = str(entry["versions"][0]["version"]) if entry.get("versions") else ""
    return group, _GroupIndex(preferred, versions)


def _where(group: str, version: str) -> str:
    if not version:
        return f'group "{group}"'
    return f'version "{group}/{version}"' if group else f'version "{version}"'


class RestMapper:
    """Cached discovery for one API server."""

    def __init__(self, kube: KubeClient, *, min_refresh_interval: float = 5.0) -> None:
        self._kube = kube
        self._groups: dict[str, _GroupIndex] | None = None
        self._lock = asyncio.Lock()
        self._min_refresh_interval = min_refresh_interval
        self._loaded_at = 0.0

    async def _load(self) -> dict[str, _GroupIndex]:
        groups: dict[str, _GroupIndex] = {}
        for path in ("/api", "/apis"):
            document: Any = await self._kube.request("GET", path, accept=AGGREGATED_DISCOVERY)
            if document.get("kind") != "APIGroupDiscoveryList":
                raise RuntimeError(f"{path} did not answer with aggregated discovery (kind {document.get('kind')})")
            for entry in document.get("items", []):
                name, index = _parse_group(entry)
                groups[name] = index
        return groups

    async def _index(self) -> dict[str, _GroupIndex]:
        async with self._lock:
            if self._groups is None:
                self._groups = await self._load()
                self._loaded_at = time.monotonic()
            return self._groups

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload discovery unless it was loaded moments ago; returns whether it reloaded."""
        async with self._lock:
            if not force and time.monotonic() - self._loaded_at < self._min_refresh_interval:
                return False
            self._groups = await self._load()
            self._loaded_at = time.monotonic()
            return True

    async def mapping(self, group: str, kind: str, version: str = "", *, refresh_on_miss: bool = False) -> RestMapping:
        """The mapping of ``kind`` in ``group`` (preferred version unless ``version`` is given)."""
        try:
            return self._find(await self._index(), group, kind, version)
        except NoMatchError:
            if not refresh_on_miss or not await self.refresh():
                raise
        return self._find(await self._index(), group, kind, version)

    @staticmethod
    def _find(groups: dict[str, _GroupIndex], group: str, kind: str, version: str) -> RestMapping:
        index = groups.get(group)
        versions = [version] if version else ([index.preferred_version] if index else [])
        if index:
            versions += [v for v in index.kinds_by_version if v not in versions and not version]
            for candidate in versions:
                found = index.kinds_by_version.get(candidate, {}).get(kind)
                if found:
                    return found
        raise NoMatchError(f'no matches for kind "{kind}" in {_where(group, version)}')

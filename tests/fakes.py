"""Fakes for pure unit tests: an in-memory cluster behind the host functions' gateway."""

from __future__ import annotations

from typing import Any

from atc.k8s.discovery import NoMatchError, RestMapping
from atc.wasm.access import GatewayError

SECRET = RestMapping("", "v1", "Secret", "secrets", True)
NAMESPACE = RestMapping("", "v1", "Namespace", "namespaces", False)


def secret(name: str, namespace: str, release: str = "", release_ns: str = "") -> dict[str, Any]:
    annotations = {}
    if release:
        annotations = {"instance.atc.yoke.cd/release": release, "instance.atc.yoke.cd/namespace": release_ns}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
    }


class FakeGateway:
    """In-memory cluster: objects by (resource, namespace, name)."""

    def __init__(self, *objects: tuple[RestMapping, dict[str, Any]], fail: GatewayError | None = None) -> None:
        self.objects = {(m.resource, o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for m, o in objects}
        self.fail = fail
        self.gets: list[tuple[str, str, str]] = []

    def rest_mapping(self, group: str, kind: str, version: str) -> RestMapping:
        for mapping in (SECRET, NAMESPACE):
            if (mapping.group, mapping.kind) == (group, kind) and version in ("", mapping.version):
                return mapping
        raise NoMatchError(f'no matches for kind "{kind}" in version "{group}/{version}"'.replace('"/', '"'))

    def get(self, mapping: RestMapping, namespace: str, name: str) -> dict[str, Any]:
        self.gets.append((mapping.resource, namespace, name))
        if self.fail:
            raise self.fail
        try:
            return self.objects[(mapping.resource, namespace, name)]
        except KeyError:
            raise GatewayError(404, f'{mapping.resource} "{name}" not found') from None

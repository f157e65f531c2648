"""An in-memory API server for the webhook's unit tests, and yoke-format objects to put in it.

``FakeKube`` answers LISTs (JSON and metadata-only) from ``collections``
(a path that is not there is 404, like a CRD that is not served), streams
watch events that tests ``emit``, and records POSTs and server-side applies.
``flight_child`` is a child of a Flight or ClusterFlight in a non-standard mode, stamped as the
controller stamps it. Imported by ``tests/unit/test_webhook_caches.py``, ``test_webhook_resources.py``
and ``test_webhook_decisions.py``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.crds import AIRWAYS_PATH as AIRWAYS
from atc.k8s.crds import CLUSTERFLIGHTS_PATH as CLUSTERFLIGHTS
from atc.k8s.crds import FLIGHTS_PATH as FLIGHTS
from atc.model.types import Object
from atc.release.revisions import encode_stages, sha1_hex

SECRETS = "/api/v1/secrets"


class FakeKube(KubeClient):
    """Collections by path; watches fed by ``emit``; POSTs and applies recorded."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.collections: dict[str, list[Object]] = {AIRWAYS: [], SECRETS: [], FLIGHTS: [], CLUSTERFLIGHTS: []}
        self.streams: defaultdict[str, asyncio.Queue[Object]] = defaultdict(asyncio.Queue)
        self.posted: list[tuple[str, Object]] = []
        self.applied: list[tuple[str, Object, str, bool]] = []
        self.post_failures: list[KubeError] = []
        self.accepts: dict[str, str] = {}
        self.forbidden: set[str] = set()  # paths answered 403, like a collection outside the RBAC

    def _list(self, path: str) -> Object:
        if path in self.forbidden:
            raise KubeError(403, "forbidden")
        if path not in self.collections:
            raise KubeError(404, "404 page not found")
        return {"metadata": {"resourceVersion": "1"}, "items": copy.deepcopy(self.collections[path])}

    async def get(self, path: str, *, query: Mapping[str, str] | None = None) -> Object:
        self.requests["GET", path] += 1
        return self._list(path)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 30.0,
    ) -> Object:
        self.requests[method, path] += 1
        if method == "GET":
            self.accepts[path] = accept
            return self._list(path)
        if self.post_failures:
            raise self.post_failures.pop(0)
        self.posted.append((path, body))
        answer: Object = body
        return answer

    async def apply(
        self, path: str, body: Object, *, field_manager: str, force: bool = False, dry_run: bool = False
    ) -> Object:
        self.applied.append((path, body, field_manager, force))
        return body

    async def watch(
        self,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        timeout_seconds: int = 300,
        accept: str = "application/json",
    ) -> AsyncIterator[Object]:
        stream = self.streams[path]
        while True:
            yield await stream.get()

    def emit(self, path: str, event_type: str, obj: Object) -> None:
        self.streams[path].put_nowait({"type": event_type, "object": obj})


def airway(group: str = "examples.com", mode: str = "static", *, version: str = "v1", name: str = "") -> Object:
    return {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": name or f"backends.{group}", "resourceVersion": "1"},
        "spec": {
            "mode": mode,
            "template": {
                "group": group,
                "names": {"kind": "Backend", "plural": "backends"},
                "scope": "Namespaced",
                "versions": [{"name": version, "served": True, "storage": True}],
            },
        },
    }


def airway_with_flight(**spec: Any) -> Object:
    """A complete Airway with a uid and a flight URL, for the admission decisions and takeoff requests."""
    template = {
        "group": "examples.com",
        "names": {"kind": "Backend", "plural": "backends", "singular": "backend"},
        "scope": "Namespaced",
        "versions": [{"name": "v1", "served": True, "storage": True}],
    }
    return {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": "backends.examples.com", "uid": "airway-uid"},
        "spec": {"wasmUrls": {"flight": "oci://registry/flight"}, "template": template, **spec},
    }


INSTANCE_REF = "ns/Backend.examples.com:inst"
RELEASE = "examples.com.Backend.ns.inst"


def desired_configmap() -> Object:
    """A child as the active revision holds it (stamped with yoke's labels and annotations)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "cm",
            "namespace": "ns",
            "labels": {"app.kubernetes.io/managed-by": "atc.yoke"},
            "annotations": {
                "instance.atc.yoke.cd/release": RELEASE,
                "instance.atc.yoke.cd/namespace": "ns",
                "instance.atc.yoke.cd/instanceRef": INSTANCE_REF,
            },
        },
        "data": {"key": "value"},
    }


def live_configmap() -> Object:
    """The same child as the API server has it."""
    obj = desired_configmap()
    obj["metadata"].update(uid="cm-uid", resourceVersion="100", creationTimestamp="2026-01-01T00:00:00Z")
    return obj


def instance_metadata(name: str, namespace: str, annotations: dict[str, str] | None = None) -> Object:
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": "5",
            "annotations": annotations or {},
        },
    }


def revision_secret(
    name: str, namespace: str, release: str, stages: list[list[Object]], *, active_at: str, version: str = "1"
) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": version,
            "labels": {"internal.yoke/kind": "revision", "internal.yoke/release": sha1_hex(release)},
            "annotations": {
                "internal.yoke/created-at": active_at,
                "internal.yoke/active-at": active_at,
                "internal.yoke/release-name": release,
            },
        },
        "data": {"resources": base64.b64encode(encode_stages(stages)).decode()},
    }


# ----------------------------------------------------------------------------------------------- flights
FLIGHT_REF = "ns/Flight.yoke.cd:f"  # atc.k8s.refs.resource_ref of Flight ns/f
CLUSTER_FLIGHT_REF = "/ClusterFlight.yoke.cd:cf"
FLIGHT_HISTORY = FLIGHT_REF  # the release its revisions are stored under (atc.release.flight_request)
CLUSTER_FLIGHT_HISTORY = CLUSTER_FLIGHT_REF


def flight_child(kind: str = "Flight") -> Object:
    """A live ConfigMap of Flight ``ns/f`` or ClusterFlight ``cf``, as a non-standard-mode Flight stamps it.

    takeoff writes the bare name in ``instance.atc.yoke.cd/release`` and the release namespace
    (``default`` for a ClusterFlight) in ``.../namespace``; ``.../instanceRef`` is the Flight's ref.
    """
    cluster = kind == "ClusterFlight"
    obj = live_configmap()
    obj["metadata"]["annotations"] = {
        "instance.atc.yoke.cd/release": "cf" if cluster else "f",
        "instance.atc.yoke.cd/namespace": "default" if cluster else "ns",
        "instance.atc.yoke.cd/instanceRef": CLUSTER_FLIGHT_REF if cluster else FLIGHT_REF,
    }
    return obj


def desired_flight_child(kind: str = "Flight") -> Object:
    """``flight_child`` as the Flight's active revision holds it."""
    obj = flight_child(kind)
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        del obj["metadata"][key]
    return obj

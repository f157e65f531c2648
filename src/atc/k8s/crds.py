"""The ``yoke.cd`` CRDs the ATC installs at startup: airways, flights, clusterflights.

They carry yoke's own schemas (docs/compatibility.md, "The same as yoke").

``yoke_crds`` builds the three CustomResourceDefinitions with yoke's generated
schemas (``schemas/*.golden.json``, copied verbatim from yoke) and printer
columns; ``install_yoke_crds`` server-side applies them as yoke does (field
manager ``yoke``, forced, a dry run of all first) and waits until they are
Established. The controller calls it before starting its reconcilers; tests
and the demo use it to prepare a cluster.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from functools import cache
from importlib import resources

from atc.k8s.client import KubeClient, KubeError
from atc.model.conditions import meets_conditions
from atc.model.constants import API_GROUP, FIELD_MANAGER_APPLY
from atc.model.types import Object

CRD_API_VERSION = "apiextensions.k8s.io/v1"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
AIRWAYS_PATH = "/apis/yoke.cd/v1alpha1/airways"
FLIGHTS_PATH = "/apis/yoke.cd/v1alpha1/flights"
CLUSTERFLIGHTS_PATH = "/apis/yoke.cd/v1alpha1/clusterflights"
VERSION = "v1alpha1"
POLL_INTERVAL = 1.0


class CrdInstallError(RuntimeError):
    """The yoke.cd CRDs could not be applied or did not become Established in time."""


@cache
def _golden(name: str) -> Object:
    text = resources.files("atc.k8s").joinpath("schemas", name).read_text(encoding="utf-8")
    schema: Object = json.loads(text)
    return schema


def airway_schema() -> Object:
    """yoke's generated ``openAPIV3Schema`` of the Airway (a fresh copy)."""
    return copy.deepcopy(_golden("airway.golden.json"))


# yoke v0.20.12's golden Flight schema predates ``status.inventory``, which later yoke writes;
# without it the API server would prune the inventory, so it is added to the golden schema
# (docs/controller.md, "Where this controller differs from yoke's").
INVENTORY_SCHEMA: Object = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["resource", "version", "ready"],
        "properties": {"resource": {"type": "string"}, "version": {"type": "string"}, "ready": {"type": "boolean"}},
    },
}


def flight_schema() -> Object:
    """yoke's generated ``openAPIV3Schema`` of Flight and ClusterFlight, plus ``status.inventory``."""
    schema = copy.deepcopy(_golden("flight.golden.json"))
    status = schema.setdefault("properties", {}).setdefault("status", {"type": "object", "properties": {}})
    status.setdefault("properties", {}).setdefault("inventory", copy.deepcopy(INVENTORY_SCHEMA))
    return schema


def _column(name: str, type_: str, path: str, format_: str = "") -> Object:
    column: Object = {"name": name, "type": type_}
    if format_:
        column["format"] = format_
    column["jsonPath"] = path
    return column


def _airway_columns() -> list[Object]:
    return [
        _column("flight", "string", ".spec.wasmUrls.flight"),
        _column("mode", "string", ".spec.mode"),
        _column("cluster_access", "boolean", ".spec.clusterAccess"),
        _column("fix_drift_interval", "string", ".spec.fixDriftInterval", "date"),
    ]


def _flight_columns() -> list[Object]:
    return [
        _column("flight", "string", ".spec.wasmUrl"),
        _column("cluster_access", "boolean", ".spec.clusterAccess"),
        _column("fix_drift_interval", "string", ".spec.fixDriftInterval", "date"),
    ]


def _crd(kind: str, plural: str, scope: str, schema: Object, columns: list[Object]) -> Object:
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "scope": scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def yoke_crds() -> list[Object]:
    """The CRDs ``flights.yoke.cd``, ``clusterflights.yoke.cd`` and ``airways.yoke.cd``, in yoke's order."""
    return [
        _crd("Flight", "flights", "Namespaced", flight_schema(), _flight_columns()),
        _crd("ClusterFlight", "clusterflights", "Cluster", flight_schema(), _flight_columns()),
        _crd("Airway", "airways", "Cluster", airway_schema(), _airway_columns()),
    ]


def _path(crd: Object) -> str:
    return f"{CRD_PATH}/{crd['metadata']['name']}"


async def _apply_all(kube: KubeClient, crds: list[Object], *, dry_run: bool) -> None:
    async def apply(crd: Object) -> str:
        try:
            await kube.apply(_path(crd), crd, field_manager=FIELD_MANAGER_APPLY, force=True, dry_run=dry_run)
        except KubeError as exc:
            return f"{crd['metadata']['name']}: {exc}"
        return ""

    errors = sorted(error for error in await asyncio.gather(*(apply(crd) for crd in crds)) if error)
    if errors:
        stage = "dry run" if dry_run else "apply"
        raise CrdInstallError(f"failed to apply yoke.cd crds ({stage}): " + "; ".join(errors))


async def _established(kube: KubeClient, name: str) -> bool:
    try:
        crd = await kube.get(f"{CRD_PATH}/{name}")
    except KubeError as exc:
        if exc.not_found:
            return False
        raise
    return meets_conditions(crd, "Established")


async def wait_established(
    kube: KubeClient, names: list[str], *, timeout: float, interval: float = POLL_INTERVAL
) -> None:
    """Poll until every named CRD has ``Established=True``; ``CrdInstallError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    while True:
        pending = [name for name in pending if not await _established(kube, name)]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise CrdInstallError(f"crds not established after {timeout:g}s: {', '.join(pending)}")
        await asyncio.sleep(interval)


async def install_yoke_crds(kube: KubeClient, *, timeout: float = 30.0) -> None:
    """Apply the three yoke.cd CRDs (dry run first, then for real) and wait until they are Established."""
    crds = yoke_crds()
    await _apply_all(kube, crds, dry_run=True)
    await _apply_all(kube, crds, dry_run=False)
    await wait_established(kube, [crd["metadata"]["name"] for crd in crds], timeout=timeout)

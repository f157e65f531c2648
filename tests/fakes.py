"""Fakes for pure unit tests: an in-memory cluster behind the host functions' gateway, a manual clock."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from atc.k8s.access import GatewayError, LookupTracker
from atc.k8s.discovery import NoMatchError, RestMapping
from atc.release.takeoff import TakeoffRequest

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


class FakeClock:
    """A clock that stands still until ``advance`` moves it; records sleeps and wakes sleepers when due."""

    def __init__(self) -> None:
        self.time = 0.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wakeup = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.time + seconds, wakeup))
        await wakeup

    async def advance(self, seconds: float) -> None:
        await settle()
        self.time += seconds
        for due, wakeup in self._sleepers:
            if due <= self.time and not wakeup.done():
                wakeup.set_result(None)
        self._sleepers = [(due, wakeup) for due, wakeup in self._sleepers if not wakeup.done()]
        await settle()


async def settle() -> None:
    """Let every runnable task run until it blocks again."""
    for _ in range(20):
        await asyncio.sleep(0)


def comparable_request(request: TakeoffRequest) -> TakeoffRequest:
    """A takeoff request without what only one caller has (its API gateway, its lookup tracker, dry_run),
    to compare the controller's request with the webhook's dry run of the same object."""
    access = dataclasses.replace(request.access, gateway=None, tracker=LookupTracker())
    return dataclasses.replace(request, access=access, dry_run=False)

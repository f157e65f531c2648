"""Blocking cluster reads for flight host functions, served by the asyncio client.

Flights run on worker threads while the Kubernetes client lives on the event
loop. ``LoopGateway`` implements ``atc.k8s.access.ClusterGateway`` by
submitting each read to the loop and waiting, with a timeout, on the worker
thread. A REST-mapping miss refreshes discovery (rate-limited by the mapper),
so kinds from CRDs created after the last refresh are found. Created by
whoever runs flights with cluster access (reconcilers, webhook, tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from atc.k8s.access import GatewayError

from .client import KubeClient, KubeError
from .discovery import RestMapper, RestMapping

T = TypeVar("T")


class LoopGateway:
    """``ClusterGateway`` over a ``KubeClient`` running on ``loop``."""

    def __init__(
        self, kube: KubeClient, mapper: RestMapper, loop: asyncio.AbstractEventLoop, *, timeout: float = 10.0
    ) -> None:
        self._kube = kube
        self._mapper = mapper
        self._loop = loop
        self._timeout = timeout

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(self._timeout)
        except TimeoutError as exc:
            future.cancel()
            raise GatewayError(0, f"cluster request timed out after {self._timeout:.0f}s") from exc
        except KubeError as exc:
            raise GatewayError(exc.status, exc.message) from exc

    def rest_mapping(self, group: str, kind: str, version: str) -> RestMapping:
        return self._wait(self._mapper.mapping(group, kind, version, refresh_on_miss=True))

    def get(self, mapping: RestMapping, namespace: str, name: str) -> dict[str, Any]:
        return self._wait(self._kube.get(mapping.object_path(name, namespace)))

"""Kubernetes Events about our objects, as ``kubectl describe`` shows them.

``EventRecorder.record(obj, type, reason, message)`` creates a core/v1 Event
about ``obj`` (Events about cluster-scoped objects such as Airways go to the
``default`` namespace, as client-go does), in the background: the caller
does not wait for the API server. A repeat of the same reason and
message for the same object within ``dedupe_seconds`` bumps the count of the
existing Event instead of creating another. Recording never fails the
caller: API errors are logged. Used by the reconcilers.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import time
from collections import OrderedDict
from typing import Any

from .client import MERGE_PATCH, KubeClient, KubeError

log = logging.getLogger("atc.events")
NORMAL, WARNING = "Normal", "Warning"
MAX_MESSAGE = 1024
MAX_PENDING = 1000  # Events in flight at once


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def involved_object(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    ref = {
        "apiVersion": obj.get("apiVersion", ""),
        "kind": obj.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return ref


class EventRecorder:
    """Creates (and deduplicates) Events for one reporting component."""

    def __init__(self, kube: KubeClient, component: str, instance: str, *, dedupe_seconds: float = 600.0) -> None:
        self._kube = kube
        self._component = component
        self._instance = instance
        self._dedupe_seconds = dedupe_seconds
        self._recent: OrderedDict[tuple[str, str, str, str], tuple[str, str, int, float]] = OrderedDict()
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        """Send the Event in the background: a reconcile never waits for it (``drain`` waits at shutdown).

        At most ``MAX_PENDING`` Events are in flight; beyond that they are dropped and logged.
        """
        if len(self._pending) >= MAX_PENDING:
            log.warning("event dropped: too many in flight", extra={"reason": reason})
            return
        task = asyncio.ensure_future(self._send(involved_object(obj), event_type, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) for the Events still being sent."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    async def _send(self, involved: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        namespace = involved.get("namespace") or "default"
        message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
        key = (str(involved["uid"]), event_type, reason, message)
        try:
            if not await self._bump(key):
                await self._create(key, namespace, involved, event_type, reason, message)
        except KubeError as exc:
            log.warning("failed to record event", extra={"reason": reason, "error": str(exc)})

    async def _bump(self, key: tuple[str, str, str, str]) -> bool:
        seen = self._recent.get(key)
        if seen is None or time.monotonic() - seen[3] > self._dedupe_seconds:
            return False
        namespace, name, count, _ = seen
        patch = {"count": count + 1, "lastTimestamp": _now()}
        try:
            await self._kube.request(
                "PATCH", f"/api/v1/namespaces/{namespace}/events/{name}", body=patch, content_type=MERGE_PATCH
            )
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        self._recent[key] = (namespace, name, count + 1, time.monotonic())
        return True

    async def _create(
        self,
        key: tuple[str, str, str, str],
        namespace: str,
        involved: dict[str, Any],
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        now = _now()
        name = f"{involved['name']}.{secrets.token_hex(8)}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._kube.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)
        self._recent[key] = (namespace, name, 1, time.monotonic())
        while len(self._recent) > 1000:
            self._recent.popitem(last=False)

"""Writing ``status`` of yoke.cd objects and Airway instances.

``update_status`` starts from the caller's latest copy (or reads the live
object), gives up if its generation moved on (a newer reconcile will report),
lets the caller change ``status``, and writes it with ``PUT .../status`` only
if something changed, reading and retrying on conflicts. ``ready_condition``
builds yoke's ``Ready`` condition. Used by all reconcilers; none of this ever
fails a reconcile (errors are logged).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

from atc.k8s.client import KubeClient, KubeError
from atc.model.conditions import make_condition, set_status_condition
from atc.model.types import Object

log = logging.getLogger("atc.controller.status")
CONFLICT_RETRIES = 5


def ready_condition(status: str, reason: str, message: str, generation: int) -> Object:
    return make_condition("Ready", status, reason, message, observed_generation=generation)


async def update_status(
    kube: KubeClient,
    path: str,
    generation: int | None,
    change: Callable[[Object], None],
    *,
    known: Object | None = None,
) -> Object | None:
    """Apply ``change`` to the object's status and write it if it changed.

    ``known`` is the caller's latest copy (the cache's, or what an earlier write answered): it is
    changed and written without a read, and only a conflict (someone wrote since) costs a GET and a
    retry. Returns the object as written or found, or None when it was unreadable or moved on.
    """
    live = copy.deepcopy(known) if known is not None else None
    for _ in range(CONFLICT_RETRIES):
        if live is None:
            try:
                live = await kube.get(path)
            except KubeError as exc:
                log.debug("status not written: object unreadable", extra={"path": path, "error": str(exc)})
                return None
        if generation is not None and live.get("metadata", {}).get("generation") != generation:
            return None
        before = copy.deepcopy(live.get("status"))
        change(live)
        if live.get("status") == before:
            return live
        try:
            written: Object = await kube.request("PUT", f"{path}/status", body=live)
            return written
        except KubeError as exc:
            if exc.conflict:
                live = None
                continue
            if not exc.not_found:
                log.warning("failed to update status", extra={"path": path, "error": str(exc)})
            return None
    log.warning("failed to update status: conflicts kept happening", extra={"path": path})
    return None


def setting_condition(condition: Object) -> Callable[[Object], None]:
    """A ``change`` for ``update_status`` that sets one condition."""

    def change(live: Object) -> None:
        status = live.setdefault("status", {}) or {}
        live["status"] = status
        conditions = list(status.get("conditions") or [])
        set_status_condition(conditions, condition)
        status["conditions"] = conditions

    return change


async def set_condition(
    kube: KubeClient, path: str, generation: int | None, condition: Object, *, known: Object | None = None
) -> Object | None:
    return await update_status(kube, path, generation, setting_condition(condition), known=known)


def is_ready_at(obj: Object, generation: int) -> bool:
    """Whether ``obj`` already reports Ready True for ``generation``."""
    conditions = (obj.get("status") or {}).get("conditions") or [] if isinstance(obj.get("status"), dict) else []
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" and c.get("observedGeneration") == generation
        for c in conditions
    )


async def mark_in_progress(kube: KubeClient, path: str, obj: Object, message: str) -> Object:
    """Report work in progress, unless ``obj`` is Ready at its generation (a resync writes nothing).

    ``obj`` is the caller's latest copy; returns the newest copy known afterwards.
    """
    generation = int((obj.get("metadata") or {}).get("generation", 0))
    if is_ready_at(obj, generation):
        return obj
    condition = ready_condition("False", "InProgress", message, generation)
    return await set_condition(kube, path, generation, condition, known=obj) or obj

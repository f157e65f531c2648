"""Watches on the children of static, dynamic and subscription instances: drift is seen without the webhook.

The webhook's guard (``atc-resources``) fails open, as yoke's does: while the webhook is down, or
before it is up, a child can be edited or deleted, and no signal reaches the controller. So the
controller also watches the children themselves: ``ChildWatches.follow(mapping)`` starts, once per
resource, a metadata-only watch of every object of that resource labelled
``app.kubernetes.io/managed-by=atc.yoke``, cluster-wide, and keeps only a few fields of each
(``slim``). Every change passes to ``on_change`` as a ``ChildChange``: which instance it belongs to
(its ``instanceRef`` annotation), whether it was a deletion, whether it changed more than status,
and whether the last write was the controller's own apply. The instance reconciler decides what
each mode does with it (``InstanceReconciler.child_drifted``): the webhook's Events remain the fast
path, these watches are the level-triggered net under it. One ``ChildWatches`` per cluster releases
live in (``atc_controller.targets``: this one, and each workload cluster, where no webhook of ours sees
writes at all); the instance and Flight reconcilers call ``follow`` after each takeoff of a
non-standard object.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from atc.k8s.client import KubeClient
from atc.k8s.discovery import RestMapping
from atc.k8s.reflector import EventType, Reflector
from atc.k8s.refs import resource_ref
from atc.model.constants import ANNOTATION_INSTANCE_REF, FIELD_MANAGER_APPLY, LABEL_MANAGED_BY, MANAGED_BY_ATC
from atc.model.types import Object

log = logging.getLogger("atc.controller.children")
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY_ATC}"


@dataclass(frozen=True)
class ChildChange:
    """One change of a child, as the watch saw it."""

    instance_ref: str
    child_ref: str
    old_resource_version: str
    deleted: bool
    spec_changed: bool  # more than status: the generation moved, or an object without one changed
    by_us: bool  # the last write was the controller's own server-side apply


def _last_writer(managed_fields: list[Object]) -> tuple[str, str]:
    """(manager, operation) of the newest managedFields entry; ("", "") on a tie or when there is none."""
    stamped = sorted((str(entry.get("time", "")), i) for i, entry in enumerate(managed_fields))
    if not stamped or (len(stamped) > 1 and stamped[-1][0] == stamped[-2][0]):
        return "", ""
    newest = managed_fields[stamped[-1][1]]
    return str(newest.get("manager", "")), str(newest.get("operation", ""))


def slim(obj: Object, mapping: RestMapping) -> Object:
    """What the watch keeps of a child: identity, versions, its instance, its last writer.

    A metadata-only watch says ``PartialObjectMetadata`` for every object; its real apiVersion and
    kind are the watched resource's (``mapping``).
    """
    meta = obj.get("metadata") or {}
    manager, operation = _last_writer(list(meta.get("managedFields") or []))
    kept = {key: meta[key] for key in ("name", "namespace", "resourceVersion", "generation") if key in meta}
    kept["annotations"] = {
        ANNOTATION_INSTANCE_REF: str((meta.get("annotations") or {}).get(ANNOTATION_INSTANCE_REF, ""))
    }
    kept["lastWriter"] = {"manager": manager, "operation": operation}
    return {"apiVersion": mapping.api_version, "kind": mapping.kind, "metadata": kept}


def child_change(event_type: EventType, obj: Object, old: Object | None) -> ChildChange | None:
    """The change an event is, or None when it is nothing to act on."""
    meta = obj["metadata"]
    instance_ref = meta["annotations"][ANNOTATION_INSTANCE_REF]
    if not instance_ref or event_type not in ("MODIFIED", "DELETED") or old is None:
        return None  # a standard Flight's child, an object appearing (our own apply), or the initial list
    old_meta = old["metadata"]
    generation = meta.get("generation")
    spec_changed = (
        generation != old_meta.get("generation")
        if generation is not None
        else meta.get("resourceVersion") != old_meta.get("resourceVersion")
    )
    writer = meta["lastWriter"]
    return ChildChange(
        instance_ref=instance_ref,
        child_ref=resource_ref(obj),
        old_resource_version=str(old_meta.get("resourceVersion", "")),
        deleted=event_type == "DELETED",
        spec_changed=spec_changed,
        by_us=(writer["manager"], writer["operation"]) == (FIELD_MANAGER_APPLY, "Apply"),
    )


class ChildWatches:
    """One metadata watch per resource that non-standard instances have children of.

    ``route_to`` says where changes go while this process leads; ``stop`` ends every watch.
    """

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube
        self._on_change: Callable[[ChildChange], None] | None = None
        self._watches: dict[str, tuple[Reflector, asyncio.Task[None]]] = {}

    def route_to(self, on_change: Callable[[ChildChange], None]) -> None:
        self._on_change = on_change

    @property
    def watched(self) -> set[str]:
        return set(self._watches)

    def follow(self, mapping: RestMapping) -> None:
        """Watch the ATC-managed objects of ``mapping``'s resource (cluster-wide), if not already."""
        path = mapping.collection_path("")
        if path in self._watches:
            return
        reflector = Reflector(
            self._kube,
            path,
            name=f"children {mapping.group}/{mapping.resource}",
            label_selector=SELECTOR,
            metadata_only=True,
            transform=functools.partial(slim, mapping=mapping),
            handler=self._handle,
        )
        task = asyncio.create_task(reflector.run(), name=f"child-watch {path}")
        self._watches[path] = (reflector, task)
        log.info("watching children", extra={"resource": path})

    def _handle(self, event_type: EventType, obj: Object, old: Object | None) -> None:
        change = child_change(event_type, obj, old)
        if change is not None and self._on_change is not None:
            self._on_change(change)

    async def stop(self) -> None:
        self._on_change = None
        for reflector, task in self._watches.values():
            reflector.stop()
            task.cancel()
        await asyncio.gather(*(task for _, task in self._watches.values()), return_exceptions=True)
        self._watches.clear()

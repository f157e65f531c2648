"""Removing what a release no longer has and tearing a release down.

``prune_release_diff`` walks the previous stages in reverse and deletes every
object the new stages dropped, if it still belongs to the release (an object
taken over by another release, or already gone, is left alone). CRDs and
Namespaces are orphaned instead (yoke's labels, annotations and
ownerReferences removed) unless the Airway's ``prune`` options say otherwise,
because deleting them would delete everything inside. Deletes are
foreground; each stage waits until its deleted objects are gone.
``mayday`` prunes everything of the active revision (and of a pending one a crash left) and deletes
the history.
Callers: the takeoff pipeline and the instance and Flight deletion flows (docs/controller.md,
"The reconcile loop to read first", steps 3 and 4).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from atc.k8s.apply import mapping_for, object_path
from atc.k8s.client import JSON_PATCH, KubeClient, KubeError
from atc.k8s.discovery import RestMapper
from atc.k8s.refs import canonical_name, owner_of, release_identity
from atc.model.constants import ANNOTATION_RELEASE, ANNOTATION_RELEASE_NAMESPACE, LABEL_MANAGED_BY
from atc.model.types import Object
from atc.release.revisions import delete_release, list_release, read_stages
from atc.release.stages import Stages

GONE_TIMEOUT = 120.0
GONE_POLL = 1.0  # the longest pause between checks that deleted objects are gone
GONE_FIRST_POLL = 0.05


@dataclass(frozen=True)
class PruneOptions:
    """The Airway's ``prune`` settings: delete (rather than orphan) CRDs and Namespaces."""

    crds: bool = False
    namespaces: bool = False

    def orphans(self, obj: Object) -> bool:
        kind, api_version = obj.get("kind"), str(obj.get("apiVersion", ""))
        if kind == "CustomResourceDefinition" and api_version.startswith("apiextensions.k8s.io/"):
            return not self.crds
        return kind == "Namespace" and api_version == "v1" and not self.namespaces


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


async def _orphan(kube: KubeClient, path: str) -> None:
    """Strip yoke's ownership from a live object so it survives the release."""
    live = await kube.get_or_none(path)
    if live is None:
        return
    meta = live.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    if labels and LABEL_MANAGED_BY not in labels:
        return
    ops = (
        [{"op": "remove", "path": f"/metadata/labels/{_escape(LABEL_MANAGED_BY)}"}]
        if LABEL_MANAGED_BY in labels
        else []
    )
    ops += [
        {"op": "remove", "path": f"/metadata/annotations/{_escape(key)}"}
        for key in (ANNOTATION_RELEASE, ANNOTATION_RELEASE_NAMESPACE)
        if key in annotations
    ]
    if meta.get("ownerReferences"):
        ops.append({"op": "remove", "path": "/metadata/ownerReferences"})
    if ops:
        await kube.request("PATCH", path, body=ops, content_type=JSON_PATCH)


async def _delete_if_owned(kube: KubeClient, path: str, owner: str) -> bool:
    live = await kube.get_or_none(path)
    if live is None or owner_of(live) != owner:
        return False  # gone already, or another release (or a person) owns it now
    try:
        await kube.request("DELETE", path, body={"propagationPolicy": "Foreground"})
    except KubeError as exc:
        if not exc.not_found:
            raise
    return True


async def _wait_gone(kube: KubeClient, paths: list[str]) -> None:
    """Until every path is gone: all checked at once, first after 50 ms, then less often (at most every 1 s)."""
    deadline = time.monotonic() + GONE_TIMEOUT
    remaining = list(paths)
    delay = GONE_FIRST_POLL
    while remaining:
        await asyncio.sleep(delay)
        found = await asyncio.gather(*(kube.get_or_none(path) for path in remaining))
        remaining = [path for path, live in zip(remaining, found, strict=True) if live is not None]
        if remaining and time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {GONE_TIMEOUT:.0f}s waiting for deletion of {', '.join(remaining)}")
        delay = min(delay * 2, GONE_POLL)


async def prune_release_diff(
    kube: KubeClient, mapper: RestMapper, previous: Stages, current: Stages, options: PruneOptions, owner: str
) -> list[str]:
    """Delete or orphan what ``previous`` had and ``current`` lacks; returns their canonical names.

    Stages go in reverse; the objects of one stage are removed concurrently, and the next stage waits
    until they are gone.
    """
    keep = {release_identity(obj) for stage in current for obj in stage}
    pruned: list[str] = []
    for stage in reversed(previous):
        dropped = [obj for obj in stage if release_identity(obj) not in keep]
        deleted = await asyncio.gather(*(_remove(kube, mapper, obj, options, owner) for obj in dropped))
        pruned += [canonical_name(obj) for obj in dropped]
        await _wait_gone(kube, [path for path in deleted if path])
    return pruned


async def _remove(kube: KubeClient, mapper: RestMapper, obj: Object, options: PruneOptions, owner: str) -> str:
    """Orphan or delete one dropped object; the path to wait for when it was deleted, else ""."""
    path = object_path(await mapping_for(mapper, obj), obj)
    if options.orphans(obj):
        await _orphan(kube, path)
        return ""
    return path if await _delete_if_owned(kube, path, owner) else ""


async def mayday(
    kube: KubeClient, mapper: RestMapper, release: str, namespace: str, options: PruneOptions, owner: str
) -> list[str] | None:
    """Remove everything of the release and its history; None when it has no history (a warning for callers)."""
    history = await list_release(kube, release, namespace)
    if not history.history:
        return None
    stages = [
        stage
        for revision in (history.active, *history.pending)
        if revision
        for stage in await read_stages(kube, revision)
    ]
    pruned = await prune_release_diff(kube, mapper, stages, [], options, owner)
    await delete_release(kube, release, namespace, history)
    return pruned

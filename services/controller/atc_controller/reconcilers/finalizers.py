"""Adding and removing our finalizers with optimistic concurrency, for every reconciler.

``add_finalizer`` patches the cached object's resourceVersion: if the object
moved on, the watch brings the newer copy and another reconcile (so a conflict
is not an error). ``remove_finalizer`` runs at the end of a deletion, after our
own status writes, so it reads the live object first and retries on conflict.
"""

from __future__ import annotations

from typing import Any

from atc.k8s.client import MERGE_PATCH, KubeClient, KubeError

CONFLICT_RETRIES = 5


async def add_finalizer(kube: KubeClient, path: str, cached: dict[str, Any], finalizer: str) -> None:
    meta = cached["metadata"]
    finalizers = [*(meta.get("finalizers") or []), finalizer]
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
    try:
        await kube.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
    except KubeError as exc:
        if not (exc.conflict or exc.not_found):
            raise


async def remove_finalizer(kube: KubeClient, path: str, finalizer: str) -> None:
    """Remove ``finalizer`` from the live object; raises ``RuntimeError`` with yoke's wording on failure."""
    for _ in range(CONFLICT_RETRIES):
        try:
            live = await kube.get(path)
        except KubeError as exc:
            if exc.not_found:
                return
            raise RuntimeError(f"failed to remove finalizer: {exc}") from None
        current = live["metadata"].get("finalizers") or []
        if finalizer not in current:
            return
        kept = [f for f in current if f != finalizer]
        patch = {"metadata": {"finalizers": kept, "resourceVersion": live["metadata"]["resourceVersion"]}}
        try:
            await kube.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
            return
        except KubeError as exc:
            if exc.not_found:
                return
            if not exc.conflict:
                raise RuntimeError(f"failed to remove finalizer: {exc}") from None
    raise RuntimeError("failed to remove finalizer: the object kept changing")

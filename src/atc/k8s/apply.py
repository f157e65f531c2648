"""Server-side apply of many objects at once, as yoke applies a stage.

The takeoff applies stage by stage (docs/controller.md, "The reconcile loop to read first").

``apply_all`` sends each object to its REST path (found through the
discovery mapper) with field manager ``yoke``, in parallel with a bound.
Yoke dry-runs a whole stage before applying it, so a stage is applied fully or
not at all when an object is invalid; ``apply_stage`` does the same whenever
more than one object the release already has is sent (with a single object
there is nothing to leave half-applied, so the extra request is skipped). A
stage of objects new to the release is applied without a dry run, and undone
(what it created is deleted) if any object fails. Errors are collected, sorted
and joined in yoke's format (``dry run: <canonical>: <apiserver message>``).
Callers: the takeoff pipeline (reconcile and admission dry-run) and pruning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from atc.model.constants import FIELD_MANAGER_APPLY
from atc.model.gocompat import join_errors
from atc.model.types import Object

from .client import KubeClient, KubeError
from .discovery import NoMatchError, RestMapper, RestMapping
from .refs import canonical_name, split_api_version

DEFAULT_PARALLELISM = 8


class ApplyError(Exception):
    """One or more objects of a stage could not be applied; the message lists them.

    ``conflicts`` holds the objects the API server answered 409 for (with
    force on, only a ``metadata.resourceVersion`` precondition does that);
    ``written`` counts the objects that were applied (not dry-run) all the same.
    """

    def __init__(self, message: str, conflicts: Sequence[Object] = (), written: int = 0) -> None:
        super().__init__(message)
        self.conflicts = list(conflicts)
        self.written = written


@dataclass(frozen=True)
class ApplyOptions:
    field_manager: str = FIELD_MANAGER_APPLY
    force: bool = True
    parallelism: int = DEFAULT_PARALLELISM


async def mapping_for(mapper: RestMapper, obj: Object) -> RestMapping:
    group, version = split_api_version(str(obj.get("apiVersion", "")))
    return await mapper.mapping(group, str(obj.get("kind", "")), version, refresh_on_miss=True)


def object_path(mapping: RestMapping, obj: Object) -> str:
    meta = obj.get("metadata") or {}
    return mapping.object_path(str(meta.get("name", "")), str(meta.get("namespace", "") or ""))


@dataclass(frozen=True)
class _Sent:
    """One object's apply: the answer (the live object) and whether this request created it."""

    path: str
    live: Object
    created: bool


async def _apply_one(
    kube: KubeClient, mapper: RestMapper, obj: Object, options: ApplyOptions, dry_run: bool, gate: asyncio.Semaphore
) -> _Sent:
    async with gate:
        path = object_path(await mapping_for(mapper, obj), obj)
        live, created = await kube.apply_reporting_create(
            path, obj, field_manager=options.field_manager, force=options.force, dry_run=dry_run
        )
        return _Sent(path, live, created)


async def _send_all(
    kube: KubeClient, mapper: RestMapper, objects: Sequence[Object], *, dry_run: bool, options: ApplyOptions
) -> tuple[list[_Sent], ApplyError | None]:
    """Apply (or dry-run) every object; what went through, and the error listing each failure."""
    gate = asyncio.Semaphore(options.parallelism)
    results = await asyncio.gather(
        *(_apply_one(kube, mapper, obj, options, dry_run, gate) for obj in objects), return_exceptions=True
    )
    failures, conflicts = [], []
    for obj, result in zip(objects, results, strict=True):
        if isinstance(result, (KubeError, NoMatchError, ValueError)):
            failures.append(f"{'dry run: ' if dry_run else ''}{canonical_name(obj)}: {result}")
            if isinstance(result, KubeError) and result.conflict:
                conflicts.append(obj)
        elif isinstance(result, BaseException):
            raise result
    sent = [result for result in results if isinstance(result, _Sent)]
    if not failures:
        return sent, None
    return sent, ApplyError(join_errors("", failures, ordered=True), conflicts, 0 if dry_run else len(sent))


async def apply_all(
    kube: KubeClient, mapper: RestMapper, objects: Sequence[Object], *, dry_run: bool, options: ApplyOptions
) -> list[Object]:
    """Apply (or dry-run) every object; raise ``ApplyError`` listing each failure."""
    sent, error = await _send_all(kube, mapper, objects, dry_run=dry_run, options=options)
    if error is not None:
        raise error
    return [one.live for one in sent]


async def _apply_or_undo(
    kube: KubeClient, mapper: RestMapper, objects: Sequence[Object], options: ApplyOptions
) -> list[Object]:
    """Apply objects that do not exist yet; when any fails, delete the ones this apply created."""
    sent, error = await _send_all(kube, mapper, objects, dry_run=False, options=options)
    if error is None:
        return [one.live for one in sent]
    undone = await asyncio.gather(*(_undo(kube, one) for one in sent if one.created))
    error.written = len(sent) - sum(undone)  # updates of objects that existed already, and failed undos
    raise error


async def _undo(kube: KubeClient, sent: _Sent) -> bool:
    """Delete an object this apply created (its uid as precondition); False when it could not be deleted."""
    uid = str((sent.live.get("metadata") or {}).get("uid", ""))
    body = {"propagationPolicy": "Background", **({"preconditions": {"uid": uid}} if uid else {})}
    try:
        await kube.request("DELETE", sent.path, body=body)
    except KubeError as exc:
        return exc.not_found or exc.conflict  # gone already, or replaced by someone else's object
    return True


async def apply_stage(
    kube: KubeClient,
    mapper: RestMapper,
    objects: Sequence[Object],
    *,
    options: ApplyOptions = ApplyOptions(),
    all_new: bool = False,
) -> list[Object]:
    """Apply a stage all-or-nothing; returns the live objects, in order.

    Objects the release already has are dry-run first when more than one goes out: a changed object
    cannot be put back exactly. Objects new to the release (``all_new``) are applied at once, and if
    any fails the ones this apply created are deleted again: undoing a create is exact, and the
    common create of a release costs no dry run (docs/controller.md, "All or nothing per stage").
    """
    if not objects:
        return []
    try:
        if all_new:
            return await _apply_or_undo(kube, mapper, objects, options)
        if len(objects) > 1:
            await apply_all(kube, mapper, objects, dry_run=True, options=options)
        return await apply_all(kube, mapper, objects, dry_run=False, options=options)
    except ApplyError as exc:
        raise ApplyError(f"failed to apply resources: {exc}", exc.conflicts, exc.written) from None

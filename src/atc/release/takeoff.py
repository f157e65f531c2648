"""The takeoff pipeline: run a flight and turn its output into an applied, recorded release.

``takeoff(cluster, request)`` runs the flight, parses its stages, sets the
parent object aside (its status is the reconciler's business), stamps yoke's
metadata on every child, enforces the namespace rules, then applies stage by
stage with readiness waits between stages, records a revision Secret in
yoke's format, prunes what disappeared and caps the history (docs/controller.md,
"The reconcile loop to read first", step 4).

The order makes a crash at any step (``atc.release.crashpoints``) harmless to the next
run: the revision is written first, marked pending; then the resources are
applied and what the previous revision (and any pending one a crash left)
had beyond them is pruned; then the revision is activated and the history
capped. The next run prunes what a pending revision named, and caps a history
found over its cap even when nothing changed. An apply that fails before
writing anything withdraws its pending revision: the history stays as it was.

Differences from yoke, each deliberate (docs/compatibility.md, "Where this project differs, and why"):
- a child whose desired state equals the one in the active revision is not
  sent again, and an unchanged release writes no revision, unless the
  caller asks for drift repair (``reapply_unchanged``) or names children
  that someone else changed (``reapply_refs``, dynamic mode);
- a stage of objects new to the release is applied without a dry run and
  undone (what it created is deleted) when any object is refused; stages that
  change objects the release has are dry-run first, as yoke does
  (``atc.k8s.apply.apply_stage``);
- the release's history is read through ``Cluster.history``: the controller's
  watch-backed cache (``atc.release.history``), or the API server;
- a flight that outputs only its parent leaves the release untouched;
- privileged output (cluster-scoped kinds, RBAC, admission webhooks, CRDs,
  Namespaces) is refused unless the request allows it (``privileged_refused``):
  instances of namespaced Airways and Flights may not create what would let a
  namespace tenant act beyond the namespace (docs/security.md);
- a child the flight looked up is applied with the resourceVersion the
  lookup saw as a precondition, so output computed from data that changed
  meanwhile is refused by the API server (``StaleLookupError``) instead of
  overwriting the newer data; the caller runs the flight again.

``dry_run`` (admission) stops after a dry-run apply of every stage. Callers:
the instance and Flight reconcilers, and the admission webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from atc.k8s.access import ClusterAccess, LookupTracker
from atc.k8s.apply import ApplyError, ApplyOptions, apply_all, apply_stage, mapping_for, object_path
from atc.k8s.client import KubeClient, KubeError
from atc.k8s.discovery import NoMatchError, RestMapper
from atc.k8s.readiness import CustomReadiness, ReadinessError, is_ready
from atc.k8s.refs import canonical_name, object_group_kind, release_identity, resource_ref, split_api_version
from atc.model import crd_schema
from atc.model.constants import ANNOTATION_RELEASE, ANNOTATION_RELEASE_NAMESPACE, LABEL_MANAGED_BY, MANAGED_BY_ATC
from atc.model.gocompat import join_errors
from atc.model.types import Object
from atc.release.crashpoints import crash_point
from atc.release.history import ApiHistory, History
from atc.release.invocation import flight_invocation
from atc.release.prune import PruneOptions, prune_release_diff
from atc.release.revisions import (
    Release,
    ReleaseError,
    Revision,
    activate_revision,
    cap_history,
    create_revision,
    delete_revisions,
    pinning_error,
)
from atc.release.stages import OutputError, Stages, parse_stages
from atc.wasm.cache import LoadedModule
from atc.wasm.engine import FlightEngine
from atc.wasm.runner import DEFAULT_STDOUT_LIMIT, FlightError, run_flight_async

STAGE_READY_TIMEOUT = 30.0
STAGE_READY_POLL = 2.0
SERVER_FIELDS = ("resourceVersion", "creationTimestamp", "uid", "managedFields")


class TakeoffError(Exception):
    """Takeoff failed; ``parent`` is the parent object the flight printed, if any (for its status)."""

    def __init__(self, message: str, *, parent: Object | None = None, terminal: bool = False) -> None:
        super().__init__(message)
        self.parent = parent
        self.terminal = terminal


class StaleLookupError(TakeoffError):
    """A child changed between the flight's lookup of it and the apply; run the flight again."""


@dataclass(frozen=True)
class Cluster:
    """What takeoff talks to; ``history`` is where release histories are read (the API server by default)."""

    kube: KubeClient
    mapper: RestMapper
    engine: FlightEngine
    readiness: CustomReadiness | None = None
    revisions: History | None = None

    @property
    def history(self) -> History:
        return self.revisions if self.revisions is not None else ApiHistory(self.kube)


@dataclass(frozen=True)
class TakeoffRequest:
    """One takeoff: which flight, for which release, with which rules."""

    release: str  # the name the revision history is stored under
    namespace: str  # the release (target) namespace
    module: LoadedModule
    source_url: str
    stdin: bytes
    flight_release: str = ""  # the name the flight sees and ownership uses (defaults to ``release``)
    args: Sequence[str] = ()
    timeout: float | None = 10.0
    max_memory_mib: int = 0
    stdout_limit: int = DEFAULT_STDOUT_LIMIT
    yoke_version: str = ""
    access: ClusterAccess = field(default_factory=lambda: ClusterAccess(enabled=False))
    managed_by: str = MANAGED_BY_ATC
    extra_annotations: Mapping[str, str] = field(default_factory=dict)
    owner_references: Sequence[Object] = ()
    cross_namespace: bool = False
    history_cap: int = 2
    prune: PruneOptions = field(default_factory=PruneOptions)
    is_parent: Callable[[Object], bool] | None = None
    dry_run: bool = False
    reapply_unchanged: bool = False
    reapply_refs: frozenset[str] = frozenset()  # resource refs to send even if unchanged (children edited by others)
    # cluster-scoped kinds, RBAC, admission webhooks, CRDs and Namespaces; "" allows them, else the
    # refusal's reason (who may not create them, and how to allow it): see ``privileged``
    privileged_refused: str = ""

    @property
    def owner_release(self) -> str:
        return self.flight_release or self.release

    @property
    def owner(self) -> str:
        return f"{self.namespace}/{self.owner_release}"


@dataclass
class TakeoffResult:
    outcome: str  # "applied" | "unchanged" | "parent_only" | "dry_run"
    stages: Stages
    parent: Object | None
    lookups: LookupTracker
    applied: int = 0
    skipped: int = 0
    revision: Revision | None = None
    pruned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flight_seconds: float = 0.0
    applied_kinds: list[str] = field(default_factory=list)  # group kind of every object sent
    live: dict[str, Object] = field(default_factory=dict)  # resource ref -> the apply's answer, for readiness

    @property
    def objects(self) -> list[Object]:
        return [obj for stage in self.stages for obj in stage]


# ----------------------------------------------------------------------------------------------- flight
async def _run_flight(cluster: Cluster, request: TakeoffRequest) -> tuple[bytes, float]:
    invocation = flight_invocation(
        release=request.owner_release,
        namespace=request.namespace,
        stdin=request.stdin,
        args=request.args,
        timeout=request.timeout,
        max_memory_mib=request.max_memory_mib,
        access=request.access,
        stdout_limit=request.stdout_limit,
        **({"yoke_version": request.yoke_version} if request.yoke_version else {}),
    )
    try:
        result = await run_flight_async(cluster.engine, request.module.prepared, invocation)
    except FlightError as exc:
        raise TakeoffError(f"failed to evaluate flight: {exc}", parent=_parent_from(exc.stdout, request)) from None
    return result.stdout, result.seconds


def _parent_from(stdout: bytes, request: TakeoffRequest) -> Object | None:
    """The parent among whatever a failed flight printed (yoke reads status from it)."""
    if not stdout or request.is_parent is None:
        return None
    try:
        stages = parse_stages(stdout)
    except OutputError:
        return None
    return next((obj for stage in stages for obj in stage if request.is_parent(obj)), None)


def _split_parent(stages: Stages, request: TakeoffRequest) -> tuple[Object | None, Stages]:
    if request.is_parent is None:
        return None, stages
    is_parent = request.is_parent
    parent = next((obj for stage in stages for obj in stage if is_parent(obj)), None)
    return parent, [[obj for obj in stage if not is_parent(obj)] for stage in stages]


# ----------------------------------------------------------------------------------------------- metadata
def _decorate(obj: Object, request: TakeoffRequest) -> None:
    """yoke's labels, annotations and ownerReferences; no server-owned fields."""
    meta = obj.setdefault("metadata", {})
    meta.setdefault("labels", {})[LABEL_MANAGED_BY] = request.managed_by
    annotations = meta.setdefault("annotations", {})
    annotations[ANNOTATION_RELEASE] = request.owner_release
    annotations[ANNOTATION_RELEASE_NAMESPACE] = request.namespace
    annotations.update(request.extra_annotations)
    if request.owner_references:
        meta["ownerReferences"] = [*meta.get("ownerReferences", []), *copy.deepcopy(list(request.owner_references))]
    for name in SERVER_FIELDS:
        meta.pop(name, None)


def _check_cross_namespace(stages: Stages, request: TakeoffRequest) -> None:
    if request.cross_namespace:
        return
    problems = [
        f'{canonical_name(obj)}: namespace "{ns}" does not match target namespace "{request.namespace}"'
        for stage in stages
        for obj in stage
        if (ns := (obj.get("metadata") or {}).get("namespace")) and ns != request.namespace
    ]
    if problems:
        raise TakeoffError(
            join_errors("Multiple namespaces detected (if desired enable multinamespace releases)", problems)
        )


def _crd_scopes(stages: Stages) -> dict[tuple[str, str], bool]:
    """(group, kind) -> namespaced, for CRDs in this very output."""
    scopes = {}
    for stage in stages:
        for obj in stage:
            if obj.get("kind") == "CustomResourceDefinition" and str(obj.get("apiVersion", "")).startswith(
                "apiextensions.k8s.io/"
            ):
                spec = obj.get("spec") or {}
                kind = str((spec.get("names") or {}).get("kind", ""))
                scopes[(str(spec.get("group", "")), kind)] = spec.get("scope") == "Namespaced"
    return scopes


PRIVILEGED_GROUPS = frozenset({"rbac.authorization.k8s.io", "admissionregistration.k8s.io"})
PRIVILEGED_KINDS = frozenset({("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "Namespace")})


def privileged(obj: Object, namespaced: bool) -> bool:
    """Whether an object is beyond a namespace tenant: cluster-scoped, RBAC, a webhook, a CRD or a Namespace."""
    group, _ = split_api_version(str(obj.get("apiVersion", "")))
    return not namespaced or group in PRIVILEGED_GROUPS or (group, str(obj.get("kind", ""))) in PRIVILEGED_KINDS


def _check_privileged(stages: Stages, cluster_scoped: set[int], request: TakeoffRequest) -> None:
    """Refuse the whole output when it holds a privileged object the request may not create."""
    if not request.privileged_refused:
        return
    found = [canonical_name(obj) for stage in stages for obj in stage if privileged(obj, id(obj) not in cluster_scoped)]
    if found:
        raise TakeoffError(join_errors(f"refusing privileged resources: {request.privileged_refused}", found))


async def _default_namespaces(cluster: Cluster, stages: Stages, target: str) -> set[int]:
    """Namespaced objects without a namespace get the target namespace; cluster-scoped ones lose theirs.

    Returns the ``id`` of every cluster-scoped object.
    """
    scopes = _crd_scopes(stages)
    failures = []
    cluster_scoped = set()
    for obj in (o for stage in stages for o in stage):
        meta = obj.setdefault("metadata", {})
        group, _ = split_api_version(str(obj.get("apiVersion", "")))
        namespaced = scopes.get((group, str(obj.get("kind", ""))))
        if namespaced is None:
            try:
                namespaced = (await mapping_for(cluster.mapper, obj)).namespaced
            except (NoMatchError, KubeError, ValueError) as exc:
                failures.append(f"{canonical_name(obj)}: failed to lookup resource mapping: {exc}")
                continue
        if namespaced and not meta.get("namespace"):
            meta["namespace"] = target
        elif not namespaced:
            meta.pop("namespace", None)
            cluster_scoped.add(id(obj))
    if failures:
        raise TakeoffError(join_errors("setting target namespace", failures))
    return cluster_scoped


# ----------------------------------------------------------------------------------------------- apply
def _changed(stage: list[Object], previous: Mapping[str, Object], request: TakeoffRequest) -> list[Object]:
    if request.reapply_unchanged:
        return list(stage)
    return [
        obj for obj in stage if previous.get(release_identity(obj)) != obj or resource_ref(obj) in request.reapply_refs
    ]


async def _stage_ready(cluster: Cluster, stage: list[Object], known: Mapping[str, Object]) -> str | None:
    """None when every object is ready, else the canonical name of the first that is not.

    ``known`` holds live copies by resource ref (the apply answers, for the first look); objects
    without one are read.
    """
    for obj in stage:
        try:
            live = known.get(resource_ref(obj))
            if live is None:
                live = await cluster.kube.get(object_path(await mapping_for(cluster.mapper, obj), obj))
            if not await is_ready(cluster.kube, live, cluster.readiness):
                return canonical_name(obj)
        except (KubeError, NoMatchError, ReadinessError):
            return canonical_name(obj)
    return None


async def _wait_stage_ready(cluster: Cluster, stage: list[Object], known: Mapping[str, Object]) -> None:
    deadline = time.monotonic() + STAGE_READY_TIMEOUT
    while (waiting := await _stage_ready(cluster, stage, known)) is not None:
        if time.monotonic() > deadline:
            raise TakeoffError(
                "release did not become ready within wait period: to rollback use `yoke descent`: "
                f"failed to get readiness for {waiting}: 30s timeout reached"
            )
        known = {}
        await asyncio.sleep(STAGE_READY_POLL)
    if any(obj.get("kind") == "CustomResourceDefinition" for obj in stage):
        await cluster.mapper.refresh(force=True)  # the next stage may use the new kinds


def _fenced(objects: list[Object], seen: Mapping[str, str]) -> list[Object]:
    """Copies of ``objects`` where each looked-up child carries the resourceVersion the flight saw."""
    fenced = []
    for obj in objects:
        version = seen.get(resource_ref(obj))
        if version:
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}
        fenced.append(obj)
    return fenced


async def _apply_stages(cluster: Cluster, result: TakeoffResult, previous: Stages, request: TakeoffRequest) -> None:
    before = {release_identity(obj): obj for stage in previous for obj in stage}
    seen = request.access.tracker.versions
    for index, stage in enumerate(result.stages):
        changed = _changed(stage, before, request)
        all_new = not any(release_identity(obj) in before or resource_ref(obj) in seen for obj in changed)
        try:
            live = await apply_stage(
                cluster.kube, cluster.mapper, _fenced(changed, seen), options=ApplyOptions(), all_new=all_new
            )
        except ApplyError as exc:
            result.applied += exc.written
            stale = [canonical_name(obj) for obj in exc.conflicts if resource_ref(obj) in seen]
            if stale:
                raise StaleLookupError(f"{', '.join(stale)} changed after the flight looked it up") from None
            raise TakeoffError(str(exc)) from None
        result.live.update(zip(map(resource_ref, changed), live, strict=True))
        result.applied += len(changed)
        result.skipped += len(stage) - len(changed)
        result.applied_kinds += [object_group_kind(obj) for obj in changed]
        if index < len(result.stages) - 1:
            await _wait_stage_ready(cluster, stage, result.live)


async def _dry_run(cluster: Cluster, stages: Stages) -> list[str]:
    """Dry-run every stage in order; returns warnings for what could not be fully checked yet.

    An object whose kind a CustomResourceDefinition of an earlier stage defines, and which the API
    server does not serve yet (the dry run created nothing), cannot be dry-run: it is checked
    offline against that CRD's schema instead (``atc.model.crd_schema``), and skipped with a
    warning when the CRD has no schema for its version (docs/webhook.md, "Stage-aware dry runs").
    """
    defined: dict[tuple[str, str], Object] = {}
    warnings: list[str] = []
    for stage in stages:
        checkable, failures = [], []
        for obj in stage:
            crd = defined.get(_kind_of(obj))
            if crd is None or await _served(cluster.mapper, obj):
                checkable.append(obj)
            elif problem := await asyncio.to_thread(_offline_check, obj, crd, warnings):  # CPU: off the loop
                failures.append(f"dry run: {canonical_name(obj)}: {problem}")
        if failures:
            raise TakeoffError(f"failed to apply resources: {join_errors('', failures, ordered=True)}")
        try:
            await apply_all(cluster.kube, cluster.mapper, checkable, dry_run=True, options=ApplyOptions())
        except ApplyError as exc:
            raise TakeoffError(f"failed to apply resources: {exc}") from None
        defined.update((kind, obj) for obj in stage if (kind := _crd_defines(obj)) is not None)
    return warnings


def _offline_check(obj: Object, crd: Object, warnings: list[str]) -> str:
    """Check an object of a kind not served yet against the schema of the CRD that defines it.

    Returns its problems joined (empty when there are none); a warning says what was not checked.
    """
    name = canonical_name(obj)
    if not crd_schema.can_check(obj, crd):
        warnings.append(f"dry run skipped {name}: its kind is defined by an earlier stage")
        return ""
    if problems := crd_schema.schema_problems(obj, crd):
        return "; ".join(problems)
    warnings.append(
        f"{name} checked against the schema of its CustomResourceDefinition from an earlier stage"
        " (defaults, CEL rules and admission webhooks are not run before it exists)"
    )
    return ""


def _kind_of(obj: Object) -> tuple[str, str]:
    group, _ = split_api_version(str(obj.get("apiVersion", "")))
    return group, str(obj.get("kind", ""))


def _crd_defines(obj: Object) -> tuple[str, str] | None:
    """The (group, kind) a CustomResourceDefinition object defines, else None."""
    if obj.get("kind") != "CustomResourceDefinition" or not str(obj.get("apiVersion", "")).startswith(
        "apiextensions.k8s.io/"
    ):
        return None
    spec = obj.get("spec") or {}
    return str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))


async def _served(mapper: RestMapper, obj: Object) -> bool:
    try:
        await mapping_for(mapper, obj)
    except NoMatchError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- takeoff
async def _prepare(cluster: Cluster, request: TakeoffRequest) -> tuple[Object | None, Stages, float]:
    stdout, seconds = await _run_flight(cluster, request)
    try:
        stages = parse_stages(stdout)
    except OutputError as exc:
        if str(exc) == "resource provided is either empty or invalid":
            raise TakeoffError(f"failed to takeoff: {exc}") from None
        raise TakeoffError(str(exc)) from None
    parent, stages = _split_parent(stages, request)
    return parent, stages, seconds


async def takeoff(cluster: Cluster, request: TakeoffRequest) -> TakeoffResult:
    """Run the flight and bring the release to what it printed; see the module docstring."""
    parent, stages, seconds = await _prepare(cluster, request)
    result = TakeoffResult("parent_only", [], parent, request.access.tracker, flight_seconds=seconds)
    if parent is not None and not any(stages):
        return result
    for obj in (o for stage in stages for o in stage):
        _decorate(obj, request)
    _check_cross_namespace(stages, request)
    cluster_scoped = await _default_namespaces(cluster, stages, request.namespace)
    _check_privileged(stages, cluster_scoped, request)
    stages = [stage for stage in stages if stage] or [[]]
    result.stages = stages
    if request.dry_run:
        result.warnings += await _dry_run(cluster, stages)
        result.outcome = "dry_run"
        return result
    history = cluster.history
    release = await history.release(request.release, request.namespace)
    if problem := pinning_error(release, request.source_url, request.module.sha1):
        raise TakeoffError(problem)
    previous = await history.stages(release.active) if release.active else []
    if previous == stages and not release.pending:
        await _apply_stages(cluster, result, previous, request)  # children edited by others, or drift repair
        result.outcome = "unchanged"
        await _cap(cluster, request, result, release)
        return result
    await _takeoff_changed(cluster, request, result, release, previous)
    return result


async def _takeoff_changed(
    cluster: Cluster, request: TakeoffRequest, result: TakeoffResult, release: Release, previous: Stages
) -> None:
    """Write the revision first (pending), apply, prune, then activate it: a crash at any step is repaired.

    A pending revision left by an earlier crash names resources that run may have applied; they are
    pruned like the active revision's unless the new stages keep them.
    """
    history = cluster.history
    unfinished = [await history.stages(revision) for revision in release.pending]
    try:
        pending = await create_revision(
            cluster.kube,
            request.release,
            request.namespace,
            result.stages,
            source_url=request.source_url,
            source_checksum=request.module.sha1,
            pending=True,
        )
    except KubeError as exc:
        raise TakeoffError(f"failed to create revision: {exc}") from None
    history.wrote(pending)
    crash_point("after_pending_revision")
    try:
        await _apply_stages(cluster, result, previous, request)
    except TakeoffError:
        if result.applied == 0:  # the cluster is as the earlier revisions say: this one never happened
            await _withdraw(cluster, pending)
        raise
    crash_point("after_apply")
    await _prune(cluster, request, result, [*previous, *(stage for stages in unfinished for stage in stages)])
    crash_point("after_prune")
    try:
        result.revision = await activate_revision(cluster.kube, pending)
        history.wrote(result.revision)
        history.deleted(request.release, request.namespace, await delete_revisions(cluster.kube, release.pending))
    except (KubeError, ReleaseError) as exc:
        raise TakeoffError(f"failed to activate revision: {exc}") from None
    crash_point("after_activate")
    await _cap(cluster, request, result, _after_activation(release, result.revision))
    result.outcome = "applied"


async def _withdraw(cluster: Cluster, pending: Revision) -> None:
    """Delete a pending revision none of whose resources were written; a failure leaves it to the next run."""
    with contextlib.suppress(KubeError):
        cluster.history.deleted(pending.release, pending.namespace, await delete_revisions(cluster.kube, [pending]))


async def _prune(cluster: Cluster, request: TakeoffRequest, result: TakeoffResult, previous: Stages) -> None:
    try:
        result.pruned = await prune_release_diff(
            cluster.kube, cluster.mapper, previous, result.stages, request.prune, request.owner
        )
    except (KubeError, TimeoutError, NoMatchError) as exc:
        raise TakeoffError(f"failed to prune release diff: {exc}") from None


async def _cap(cluster: Cluster, request: TakeoffRequest, result: TakeoffResult, release: Release) -> None:
    """Cap the history as ``release`` (listed at the start, plus this takeoff's own writes) shows it."""
    try:
        capped = await cap_history(cluster.kube, request.release, request.namespace, request.history_cap, known=release)
        cluster.history.deleted(request.release, request.namespace, capped)
    except (KubeError, ReleaseError) as exc:
        result.warnings.append(f"failed to cap release history after successful takeoff of {request.release}: {exc}")


def _after_activation(release: Release, activated: Revision) -> Release:
    """The history once ``activated`` is active and the pending revisions it supersedes are deleted."""
    return replace(release, history=[*release.settled, activated])

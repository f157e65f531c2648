"""The reconcile loop of Airway instances: one custom resource in, its flight's resources applied.

``InstanceReconciler.reconcile(key)`` is the loop to read first (docs/controller.md). For one
custom resource of an Airway's CRD it:

1. adds the ``yoke.cd/mayday.flight`` finalizer and the ownerReference to the Airway, and goes on
   with the patched object;
2. chooses the cluster the release lives in (``atc_controller.targets``): this one, or the one its
   ``atc.yoke.cd/kubeconfig-secret`` names; every cluster call below goes there;
3. on deletion, tears the release down (``_delete``);
4. feeds the object (or the value at ``objectPath``) to the flight and runs
   the takeoff pipeline (``atc.release.takeoff``): children applied stage by stage,
   unchanged children not sent again, a revision written when anything changed;
5. checks the children's readiness, takes over the ``status`` the flight set on
   the parent, and sets the ``Ready`` condition (``InProgress`` while children
   come up, ``Error`` with the message when anything failed);
6. requeues after ``fixDriftInterval`` (re-applying everything: drift repair),
   or in 5 s while children are not ready yet.

Kubernetes Events tell what happened: RevisionApplied, ResourcesPruned,
FlightFailed, InstanceDeleted. The modes' rules come from ``modes.ModeFollowing``. One reconciler
serves one Airway; the Airway reconciler creates and replaces it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass, field
from typing import Any

from atc.k8s.access import LookupTracker
from atc.k8s.apply import ApplyError, apply_stage, mapping_for, object_path
from atc.k8s.client import MERGE_PATCH, KubeError
from atc.k8s.discovery import NoMatchError, RestMapping
from atc.k8s.events import NORMAL, WARNING
from atc.k8s.readiness import ReadinessError, is_ready
from atc.k8s.refs import canonical_name, resource_ref
from atc.model.conditions import find_condition, set_status_condition
from atc.model.constants import (
    API_VERSION,
    FINALIZER_INSTANCE,
)
from atc.model.gocompat import DurationError
from atc.model.specs import AirwaySpec, Mode
from atc.model.types import Object
from atc.release.instance_request import ObjectPathError, instance_takeoff_request, load_instance_module
from atc.release.prune import PruneOptions, mayday
from atc.release.revisions import release_name
from atc.release.takeoff import StaleLookupError, TakeoffError, TakeoffRequest, TakeoffResult, takeoff
from atc.wasm.errors import ModuleError, ModuleNotAllowedError
from atc_controller import metrics
from atc_controller.context import ControllerContext
from atc_controller.core.results import RequeueAfterError, Result, TerminalError
from atc_controller.targets import Target, TargetError, for_target

from .finalizers import remove_finalizer
from .modes import ModeFollowing, ModeState, annotated_mode
from .status import mark_in_progress, ready_condition, setting_condition, update_status

log = logging.getLogger("atc.controller.instance")
MAX_STALE_RUNS = 5  # after this many stale runs in a row the instance reports an error and backs off
NOT_READY_REQUEUE = 5.0
IN_PROGRESS_AFTER_SECONDS = 0.5  # a takeoff that takes longer reports InProgress while it runs


def instance_controller_name(airway_name: str) -> str:
    return f"instance:{airway_name}"


@dataclass
class _Outcome:
    """What a reconcile found out, turned into status, Events and the requeue at the end."""

    result: TakeoffResult | None = None
    error: str = ""
    parent: Object | None = None
    ready: bool = False
    waiting_for: str = ""
    stale: str = ""  # a looked-up child changed under the run: nothing applied, run again
    instance: Object = field(default_factory=dict)  # the newest copy of the instance this reconcile knows


class InstanceReconciler(ModeFollowing):
    """Reconciles every instance of one Airway."""

    def __init__(self, context: ControllerContext, airway: Object, mapping: RestMapping, reflector: Any) -> None:
        self.context = context
        self.airway = airway
        self.spec = AirwaySpec.model_validate(airway["spec"])
        self.mapping = mapping
        self.reflector = reflector
        self.states: dict[str, ModeState] = {}
        self._own_versions: dict[str, str] = {}  # key -> resourceVersion our metadata patch produced
        self._held: dict[str, list[str]] = {}  # key -> versions its watch showed while our patch was in flight

    @property
    def airway_name(self) -> str:
        return str(self.airway["metadata"]["name"])

    @property
    def controller_name(self) -> str:
        return instance_controller_name(self.airway_name)

    def cached_mode(self, key: str) -> Mode:
        namespace, _, name = key.rpartition("/")
        instance = self.reflector.get(namespace, name)
        return self._mode(instance) if instance else "standard"

    # ------------------------------------------------------------------------------------ the loop
    async def reconcile(self, key: str) -> Result:
        namespace, _, name = key.rpartition("/")
        instance = self.reflector.get(namespace, name)
        if instance is None:
            self._forget(key)
            self._own_versions.pop(key, None)
            return Result()
        current = await self._ensure_metadata(key, instance)
        if current is None:
            return Result()  # our copy was stale: the watch brings the newer one
        instance = current
        try:
            target = await self.context.targets.for_object(self.controller_name, key, instance)
        except TargetError as exc:
            return await self._unusable_target(key, instance, exc)
        if instance["metadata"].get("deletionTimestamp"):
            await self._delete(key, instance, target)
            return Result()
        state = self.states.setdefault(key, ModeState())
        state.mode = self._mode(instance)
        outcome = await self._run(key, instance, state, target)
        if self._run_again(key, state, outcome):
            return Result(requeue_after=0)
        await self._report(instance, outcome)
        return self._next(outcome)

    async def _run(self, key: str, instance: Object, state: ModeState, target: Target) -> _Outcome:
        """One takeoff with the modes' bookkeeping around it (what the run looked up, signals meanwhile)."""
        tracker = LookupTracker()
        state.running = True
        try:
            outcome = await self._fly(instance, state, tracker, target)
            succeeded = not outcome.error and outcome.result is not None
            self._track(key, state, tracker, outcome.result if succeeded else None, target)
        finally:
            state.running = False
            self._replay_signals(key, state)
        return outcome

    async def _unusable_target(self, key: str, instance: Object, error: TargetError) -> Result:
        """The target cluster cannot be used: say so on the instance and back off (docs/targets.md).

        An instance being deleted whose target is wrongly configured for good (its kubeconfig Secret
        is gone because its namespace is being deleted, say) lets go without cleaning up: nothing
        could reach that cluster with it. An unreachable target keeps the finalizer and is retried.
        """
        message = str(error)
        if instance["metadata"].get("deletionTimestamp") and not error.transient:
            await self._let_go(key, instance, self._path(instance), message)
            return Result()
        outcome = _Outcome(error=message, instance=instance)
        await self._report(instance, outcome)
        return self._next(outcome)

    @staticmethod
    def _run_again(key: str, state: ModeState, outcome: _Outcome) -> bool:
        """A stale run is repeated at once, up to ``MAX_STALE_RUNS`` in a row; then it is an error."""
        if not outcome.stale:
            state.stale_runs = 0
            return False
        state.stale_runs += 1
        if state.stale_runs < MAX_STALE_RUNS:
            log.info("flight output is stale, running it again", extra={"name": key, "reason": outcome.stale})
            return True
        outcome.error = f"{outcome.stale} ({state.stale_runs} runs in a row)"
        state.stale_runs = 0
        return False

    def _next(self, outcome: _Outcome) -> Result:
        drift = self.spec.fix_drift_seconds
        if outcome.error:
            if drift:
                raise RequeueAfterError(outcome.error, drift)
            raise RuntimeError(outcome.error)
        if not outcome.ready and outcome.parent is None:
            return Result(requeue_after=min(drift, NOT_READY_REQUEUE) if drift else NOT_READY_REQUEUE)
        return Result(requeue_after=drift or None)

    def _mode(self, instance: Object) -> Mode:
        return annotated_mode(instance, self.spec.effective_mode)

    # ------------------------------------------------------------------------------------ metadata
    def _path(self, instance: Object) -> str:
        meta = instance["metadata"]
        return self.mapping.object_path(meta["name"], meta.get("namespace", ""))

    def _airway_owner_reference(self) -> Object:
        meta = self.airway["metadata"]
        return {
            "apiVersion": API_VERSION,
            "kind": "Airway",
            "name": meta["name"],
            "uid": meta["uid"],
            "blockOwnerDeletion": True,
        }

    async def _ensure_metadata(self, key: str, instance: Object) -> Object | None:
        """Finalizer and Airway ownerReference, in one optimistic patch.

        Returns the object to go on with: ``instance`` when nothing was missing, else the patch's
        answer (whose own watch event is then skipped, ``absorbs``); None when the cached copy
        was stale (409).
        """
        meta = instance["metadata"]
        patch: Object = {}
        finalizers = list(meta.get("finalizers") or [])
        if not meta.get("deletionTimestamp") and FINALIZER_INSTANCE not in finalizers:
            patch["finalizers"] = [*finalizers, FINALIZER_INSTANCE]
        owners = list(meta.get("ownerReferences") or [])
        if not any(
            o.get("kind") == "Airway" and o.get("apiVersion") == API_VERSION and o.get("name") == self.airway_name
            for o in owners
        ):
            patch["ownerReferences"] = [*owners, self._airway_owner_reference()]
        if not patch:
            return instance
        patch["resourceVersion"] = meta["resourceVersion"]
        self._held[key] = []
        patched = None
        try:
            patched = await self.context.kube.request(
                "PATCH", self._path(instance), body={"metadata": patch}, content_type=MERGE_PATCH
            )
        except KubeError as exc:
            if not exc.conflict:
                raise
        finally:
            self._settle_held(key, patched)
        return patched

    def _settle_held(self, key: str, patched: Object | None) -> None:
        """After our metadata patch: expect its watch event if it has not come yet; requeue for others."""
        held = self._held.pop(key, [])
        version = str((patched or {}).get("metadata", {}).get("resourceVersion", ""))
        if patched is not None and version not in held:
            self._own_versions[key] = version
        if any(seen != version for seen in held):
            self.context.manager.enqueue(self.controller_name, key)

    def absorbs(self, key: str, instance: Object) -> bool:
        """Whether a watch event of ``key`` needs no reconcile of its own: it is our metadata patch's.

        Events that come while that patch is in flight are held and judged when its answer is
        there (the watch can be quicker than the answer).
        """
        version = str(instance["metadata"].get("resourceVersion", ""))
        if key in self._held:
            self._held[key].append(version)
            return True
        if self._own_versions.get(key) != version:
            return False
        del self._own_versions[key]
        return True

    # ------------------------------------------------------------------------------------ takeoff
    def _release(self, instance: Object) -> tuple[str, str]:
        namespace = instance["metadata"].get("namespace") or ""
        return release_name(instance, namespaced=self.mapping.namespaced), namespace or "default"

    async def _request(
        self, instance: Object, state: ModeState, tracker: LookupTracker, target: Target
    ) -> TakeoffRequest:
        try:
            module = await load_instance_module(self.context.modules, self.spec, instance)
        except ModuleNotAllowedError as exc:
            raise TerminalError(f"failed to fetch flight module from cache: {exc}") from None
        except ModuleError as exc:
            raise TakeoffError(f"failed to fetch flight module from cache: {exc}") from None
        request = instance_takeoff_request(
            self.airway,
            self.spec,
            instance,
            module,
            defaults=self.context.flight_defaults,
            gateway=target.gateway,
            tracker=tracker,
            reapply_refs=frozenset(state.reapply),
        )
        return for_target(request, target)

    async def _fly(self, instance: Object, state: ModeState, tracker: LookupTracker, target: Target) -> _Outcome:
        """The takeoff, with ``InProgress`` reported only if it takes longer than a moment."""
        outcome = _Outcome(instance=instance)
        flight = asyncio.ensure_future(self._takeoff(instance, state, tracker, target, outcome))
        try:
            await asyncio.wait_for(asyncio.shield(flight), IN_PROGRESS_AFTER_SECONDS)
        except TimeoutError:
            path = self._path(instance)
            outcome.instance = await mark_in_progress(self.context.kube, path, instance, "Flight is taking off")
            await flight
        finally:
            flight.cancel()  # a no-op once it is done; stops it when the reconcile itself is cancelled
        return outcome

    async def _takeoff(
        self, instance: Object, state: ModeState, tracker: LookupTracker, target: Target, outcome: _Outcome
    ) -> None:
        try:
            await self._await_children(state, target)
            request = await self._request(instance, state, tracker, target)
            outcome.result = await takeoff(target.cluster, request)
            state.reapply -= request.reapply_refs
            await self._watch_children(state, outcome.result, target)
            self.context.observe_flight(self.airway_name, outcome.result.flight_seconds, "success")
            self.context.observe_takeoff(outcome.result)
            outcome.parent = outcome.result.parent
        except StaleLookupError as exc:
            outcome.stale = str(exc)
            return
        except TakeoffError as exc:
            self.context.observe_flight(self.airway_name, 0.0, "error")
            metrics.REVISIONS.labels("error").inc()
            outcome.error, outcome.parent = str(exc), exc.parent
            if exc.terminal:
                raise TerminalError(str(exc)) from None
            return
        except (ObjectPathError, DurationError) as exc:  # the object or the Airway must change first
            raise TerminalError(str(exc)) from None
        except KubeError as exc:
            if not target.remote:
                raise
            outcome.error = target.failure(exc)
            return
        if outcome.parent is None or not _has_ready(outcome.parent):
            await self._check_children(outcome, target)

    async def _check_children(self, outcome: _Outcome, target: Target) -> None:
        """Readiness of every child; a child deleted behind our back is applied again.

        A child this run applied is judged by the apply's answer; the others are read. The rules and
        their order are in docs/controller.md, "The reconcile loop to read first", step 5.
        """
        assert outcome.result is not None
        cluster = target.cluster
        for obj in outcome.result.objects:
            try:
                live = outcome.result.live.get(resource_ref(obj)) or await cluster.kube.get(
                    object_path(await mapping_for(cluster.mapper, obj), obj)
                )
            except KubeError as exc:
                if exc.not_found:
                    await self._restore(obj, outcome, target)
                    if outcome.error:
                        return
                    outcome.waiting_for = canonical_name(obj)
                    return
                outcome.error = (
                    f"failed to check release readiness: {canonical_name(obj)}: failed to get in cluster state: {exc}"
                )
                return
            except NoMatchError as exc:
                outcome.error = f"failed to check release readiness: {canonical_name(obj)}: {exc}"
                return
            try:
                if not await is_ready(cluster.kube, live, cluster.readiness):
                    outcome.waiting_for = canonical_name(obj)
                    return
            except ReadinessError as exc:
                outcome.error = f"failed to check release readiness: {canonical_name(obj)}: {exc}"
                return
        outcome.ready = True

    async def _restore(self, obj: Object, outcome: _Outcome, target: Target) -> None:
        try:
            await apply_stage(target.kube, target.mapper, [obj])
        except ApplyError as exc:
            outcome.error = str(exc)

    # ------------------------------------------------------------------------------------ reporting
    def _final_condition(self, outcome: _Outcome, generation: int) -> Object:
        if outcome.error:
            return ready_condition("False", "Error", outcome.error, generation)
        if outcome.ready or (outcome.parent is not None and _has_ready(outcome.parent)):
            return ready_condition("True", "Ready", "Successfully deployed", generation)
        return ready_condition("False", "InProgress", "waiting for flight to become ready", generation)

    async def _report(self, instance: Object, outcome: _Outcome) -> None:
        generation = int(instance["metadata"].get("generation", 0))
        condition = self._final_condition(outcome, generation)
        parent_status = (outcome.parent or {}).get("status")

        def change(live: Object) -> None:
            status = copy.deepcopy(parent_status) if isinstance(parent_status, dict) else (live.get("status") or {})
            merged = list((live.get("status") or {}).get("conditions") or [])
            for flight_condition in (status.get("conditions") or []) if isinstance(parent_status, dict) else []:
                set_status_condition(merged, flight_condition)
            if not (isinstance(parent_status, dict) and _has_ready(outcome.parent or {}) and not outcome.error):
                set_status_condition(merged, condition)
            status["conditions"] = merged
            live["status"] = status

        await update_status(self.context.kube, self._path(instance), generation, change, known=outcome.instance)
        self._record_events(instance, outcome)

    def _record_events(self, instance: Object, outcome: _Outcome) -> None:
        events = self.context.events
        if outcome.error:
            events.record(instance, WARNING, "FlightFailed", outcome.error)
            return
        result = outcome.result
        if result is None or result.outcome != "applied":
            return
        revision = result.revision.name if result.revision else "?"
        counts = f"{len(result.objects)} resources ({result.applied} applied, {result.skipped} unchanged)"
        message = f"revision {revision}: {counts}"
        events.record(instance, NORMAL, "RevisionApplied", message)
        if result.pruned:
            events.record(instance, NORMAL, "ResourcesPruned", "pruned " + ", ".join(result.pruned))

    # ------------------------------------------------------------------------------------ deletion
    async def _delete(self, key: str, instance: Object, target: Target) -> None:
        """Mayday: remove the children and the history, then let the object go."""
        path = self._path(instance)
        generation = int(instance["metadata"].get("generation", 0))
        terminating = ready_condition("False", "Terminating", "Mayday: Flight is being removed", generation)
        await update_status(self.context.kube, path, None, setting_condition(terminating))
        release, namespace = self._release(instance)
        try:
            pruned = await mayday(
                target.kube,
                target.mapper,
                release,
                namespace,
                PruneOptions(self.spec.prune.crds, self.spec.prune.namespaces),
                f"{namespace}/{release}",
            )
        except (KubeError, TimeoutError, NoMatchError) as exc:
            raise RuntimeError(f"failed to run atc cleanup: {exc}") from None
        target.cluster.history.forget(release, namespace)
        if pruned is None:
            log.warning(f'mayday noop: no history found for release "{release}" in namespace "{namespace}"')
        await remove_finalizer(self.context.kube, path, FINALIZER_INSTANCE)
        self.context.events.record(
            instance, NORMAL, "InstanceDeleted", f"removed {len(pruned or [])} resources of release {release}"
        )
        self._forget(key)


def _has_ready(obj: Object) -> bool:
    """Whether the object (the flight's parent echo) carries a Ready condition of its own."""
    status = obj.get("status")
    return isinstance(status, dict) and find_condition(status.get("conditions") or [], "Ready") is not None

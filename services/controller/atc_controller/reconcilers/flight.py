"""Flights and ClusterFlights: a module deployed directly, with its input in the spec.

``FlightReconciler.reconcile(key)`` adds the ``yoke.cd/mayday.flight``
finalizer, tears the release down on deletion, and otherwise runs the
takeoff pipeline with the Flight's ``input``/``inputObject`` as stdin and
``args`` as arguments. The release history is stored as
``<namespace>/<Kind>.yoke.cd:<name>`` while the flight (and the ownership
annotations) see the bare name, as in yoke (docs/compatibility.md, "The same as
yoke"). ``status.inventory`` lists every resource with its readiness; ``Ready``
is True once all are ready. One reconciler per kind: ``Flight`` (namespaced) and ``ClusterFlight``.

Modes: the Flight's ``overrides.yoke.cd/mode`` annotation (default ``standard``) gives it the same
modes as an Airway instance (``modes.ModeFollowing``; docs/flight-modes.md): in a non-standard mode
the children carry the Flight's ``instanceRef``, so the webhook's guard and signals and the
controller's child watches find it. ``atc.yoke.cd/kubeconfig-secret`` deploys to another cluster
(``atc_controller.targets``; docs/targets.md).
"""

from __future__ import annotations

import logging
from typing import NoReturn

from atc.k8s.access import LookupTracker
from atc.k8s.apply import mapping_for, object_path
from atc.k8s.client import KubeError
from atc.k8s.crds import CLUSTERFLIGHTS_PATH, FLIGHTS_PATH
from atc.k8s.discovery import NoMatchError
from atc.k8s.events import NORMAL, WARNING
from atc.k8s.readiness import ReadinessError, is_ready
from atc.k8s.reflector import Reflector
from atc.k8s.refs import resource_ref, split_api_version
from atc.model.constants import API_VERSION, FINALIZER_INSTANCE
from atc.model.gocompat import DurationError
from atc.model.specs import FlightSpec, Mode
from atc.model.types import Object
from atc.release.flight_request import flight_release, flight_takeoff_request
from atc.release.invocation import timeout_seconds
from atc.release.prune import PruneOptions, mayday
from atc.release.takeoff import StaleLookupError, TakeoffError, TakeoffResult, takeoff
from atc.wasm.errors import ModuleError, ModuleNotAllowedError
from atc_controller.context import ControllerContext
from atc_controller.core.results import RequeueAfterError, Result, TerminalError
from atc_controller.targets import Target, TargetError, for_target

from .finalizers import add_finalizer, remove_finalizer
from .modes import ModeFollowing, ModeState, annotated_mode
from .status import mark_in_progress, ready_condition, set_condition, update_status

log = logging.getLogger("atc.controller.flight")
MAX_STALE_RUNS = 5  # as for instances: after this many stale runs in a row it is an error


class FlightReconciler(ModeFollowing):
    """Reconciles ``Flight`` (namespaced) or ``ClusterFlight`` objects."""

    def __init__(self, context: ControllerContext, kind: str, flights: Reflector) -> None:
        self.context = context
        self.kind = kind
        self.flights = flights
        self.collection = FLIGHTS_PATH if kind == "Flight" else CLUSTERFLIGHTS_PATH
        self.states: dict[str, ModeState] = {}

    @property
    def controller_name(self) -> str:
        return self.kind.lower()

    def key_for(self, namespace: str, name: str) -> str:
        return f"{namespace}/{name}" if namespace else name

    def cached_mode(self, key: str) -> Mode:
        namespace, _, name = key.rpartition("/")
        flight = self.flights.get(namespace, name)
        return annotated_mode(flight) if flight else "standard"

    def _path(self, flight: Object) -> str:
        meta = flight["metadata"]
        if self.kind == "Flight":
            return f"/apis/{API_VERSION}/namespaces/{meta['namespace']}/flights/{meta['name']}"
        return f"{self.collection}/{meta['name']}"

    async def reconcile(self, key: str) -> Result:
        namespace, _, name = key.rpartition("/")
        flight = self.flights.get(namespace, name)
        if flight is None:
            self._forget(key)
            return Result()
        meta = flight["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if not meta.get("deletionTimestamp") and FINALIZER_INSTANCE not in finalizers:
            await add_finalizer(self.context.kube, self._path(flight), flight, FINALIZER_INSTANCE)
            return Result()
        spec = FlightSpec.model_validate(flight.get("spec") or {})
        target = await self._target(key, flight, spec)
        if target is None:
            return Result()  # let go: its target is gone for good
        if meta.get("deletionTimestamp"):
            await self._delete(key, flight, spec, target)
            return Result()
        return await self._deploy(key, flight, spec, target)

    async def _target(self, key: str, flight: Object, spec: FlightSpec) -> Target | None:
        """The cluster the Flight deploys to; None when it is being deleted and that cluster is gone for good."""
        try:
            return await self.context.targets.for_object(self.controller_name, key, flight)
        except TargetError as exc:
            if flight["metadata"].get("deletionTimestamp") and not exc.transient:
                await self._let_go(key, flight, self._path(flight), str(exc))
                return None
            await self._fail(flight, str(exc), spec.fix_drift_seconds)

    async def _deploy(self, key: str, flight: Object, spec: FlightSpec, target: Target) -> Result:
        """Run the takeoff, then report the inventory and the Ready condition."""
        drift = spec.fix_drift_seconds
        state = self.states.setdefault(key, ModeState())
        state.mode = annotated_mode(flight)
        try:
            result = await self._run(key, flight, spec, state, target)
            if result is None:
                return Result(requeue_after=0)  # stale lookups: run again at once
            inventory, waiting = await self._inventory(result, target)
        except (TakeoffError, ReadinessError) as exc:
            await self._fail(flight, str(exc), drift)
        except KubeError as exc:
            if not target.remote:
                raise
            await self._fail(flight, target.failure(exc), drift)
        self.context.observe_takeoff(result)
        await self._write_inventory(flight, inventory)
        if waiting:
            await self._condition(flight, "False", "InProgress", "waiting for flight to become ready")
            return Result(requeue_after=min(drift, 5.0) if drift else 5.0)
        await self._condition(flight, "True", "Ready", "Successfully deployed")
        if result.outcome == "applied":
            message = f"{len(result.objects)} resources ({result.applied} applied, {result.skipped} unchanged)"
            self.context.events.record(flight, NORMAL, "RevisionApplied", message)
        return Result(requeue_after=drift or None)

    async def _fail(self, flight: Object, message: str, drift: float) -> NoReturn:
        """Report the error on the Flight and back off (``fixDriftInterval`` when it has one)."""
        await self._condition(flight, "False", "Error", message)
        self.context.events.record(flight, WARNING, "FlightFailed", message)
        if drift:
            raise RequeueAfterError(message, drift)
        raise RuntimeError(message)

    async def _run(
        self, key: str, flight: Object, spec: FlightSpec, state: ModeState, target: Target
    ) -> TakeoffResult | None:
        """One takeoff with the modes' bookkeeping around it; None when a looked-up child changed under it."""
        tracker = LookupTracker()
        result = None
        state.running = True
        try:
            await self._await_children(state, target)
            result = await self._takeoff(flight, spec, state, tracker, target)
            await self._watch_children(state, result, target)
            state.stale_runs = 0
        except StaleLookupError as exc:
            state.stale_runs += 1
            if state.stale_runs >= MAX_STALE_RUNS:
                state.stale_runs = 0
                raise TakeoffError(f"{exc} ({MAX_STALE_RUNS} runs in a row)") from None
            log.info("flight output is stale, running it again", extra={"name": key, "reason": str(exc)})
            return None
        finally:
            self._track(key, state, tracker, result, target)
            state.running = False
            self._replay_signals(key, state)
        return result

    async def _takeoff(
        self, flight: Object, spec: FlightSpec, state: ModeState, tracker: LookupTracker, target: Target
    ) -> TakeoffResult:
        await mark_in_progress(self.context.kube, self._path(flight), flight, "fetching flight wasm module")
        try:
            module = await self.context.modules.load(spec.wasm_url, checksum=spec.checksum, insecure=spec.insecure)
        except ModuleNotAllowedError as exc:
            await self._condition(flight, "False", "Error", f"failed to get wasm module: {exc}")
            raise TerminalError(f"failed to get wasm module: {exc}") from None
        except ModuleError as exc:
            raise TakeoffError(f"failed to get wasm module: {exc}") from None
        await mark_in_progress(self.context.kube, self._path(flight), flight, "Flight is taking off")
        try:
            timeout = timeout_seconds(spec.timeout)
        except DurationError as exc:
            raise TerminalError(str(exc)) from None
        request = flight_takeoff_request(
            flight,
            self.kind,
            spec,
            module,
            timeout=timeout,
            defaults=self.context.flight_defaults,
            gateway=target.gateway,
            tracker=tracker,
            mode=state.mode,
            reapply_refs=frozenset(state.reapply),
        )
        result = await takeoff(target.cluster, for_target(request, target))
        state.reapply -= request.reapply_refs
        return result

    async def _inventory(self, result: TakeoffResult, target: Target) -> tuple[list[Object], bool]:
        """Every resource with its readiness (all are evaluated, as yoke does for Flights)."""
        cluster = target.cluster
        inventory, waiting = [], False
        for obj in result.objects:
            _, version = split_api_version(str(obj.get("apiVersion", "")))
            try:
                live = await cluster.kube.get(object_path(await mapping_for(cluster.mapper, obj), obj))
                ready = await is_ready(cluster.kube, live, cluster.readiness)
            except (KubeError, NoMatchError):
                ready = False
            inventory.append({"resource": resource_ref(obj), "version": version, "ready": ready})
            waiting = waiting or not ready
        return inventory, waiting

    async def _write_inventory(self, flight: Object, inventory: list[Object]) -> None:
        generation = int(flight["metadata"].get("generation", 0))

        def change(live: Object) -> None:
            live.setdefault("status", {})
            live["status"] = {**(live["status"] or {}), "inventory": inventory}

        await update_status(self.context.kube, self._path(flight), generation, change)

    async def _delete(self, key: str, flight: Object, spec: FlightSpec, target: Target) -> None:
        await self._condition(flight, "False", "Terminating", "mayday is being performed")
        release, bare, namespace = flight_release(flight, self.kind)
        try:
            await mayday(
                target.kube,
                target.mapper,
                release,
                namespace,
                PruneOptions(spec.prune.crds, spec.prune.namespaces),
                f"{namespace}/{bare}",
            )
        except (KubeError, TimeoutError, NoMatchError) as exc:
            raise RuntimeError(f"failed to run atc cleanup: {exc}") from None
        target.cluster.history.forget(release, namespace)
        await remove_finalizer(self.context.kube, self._path(flight), FINALIZER_INSTANCE)
        self._forget(key)

    async def _condition(self, flight: Object, status: str, reason: str, message: str) -> None:
        generation = int(flight["metadata"].get("generation", 0))
        await set_condition(
            self.context.kube, self._path(flight), generation, ready_condition(status, reason, message, generation)
        )

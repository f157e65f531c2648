"""The modes (standard, static, dynamic, subscription), shared by the instance and Flight reconcilers.

``ModeFollowing`` keeps one ``ModeState`` per object key and decides what a change of a child does
(docs/controller.md, "Modes"):

- ``child_changed`` takes the webhook's signal (a ``SubresourceChanged`` Event): dynamic re-runs the
  flight, subscription only for children its lookups track; a signal during a run is judged when
  the run ends (``replay_signals``);
- ``child_drifted`` takes what the controller's own child watches saw (``atc_controller.children``):
  static puts a changed or deleted child back, dynamic and subscription treat it as a signal;
- before a re-run, ``await_children`` waits to see each signalled child past the version its change
  was admitted over; after a run, ``track`` updates what subscription and the external watches
  follow, and ``watch_children`` has the child watches follow the children's kinds.

``InstanceReconciler`` (modes from the Airway, or ``overrides.yoke.cd/mode``) and ``FlightReconciler``
(modes from ``overrides.yoke.cd/mode`` on the Flight) mix it in; they provide ``context``,
``controller_name`` and ``cached_mode``. Every cluster call goes to the ``Target`` it is given, so
the same rules hold for releases in another cluster (docs/targets.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from atc.k8s.access import LookupTracker
from atc.k8s.apply import mapping_for
from atc.k8s.discovery import NoMatchError
from atc.k8s.events import WARNING
from atc.k8s.refs import parse_ref, resource_ref
from atc.model.backoff import Backoff
from atc.model.constants import FINALIZER_INSTANCE
from atc.model.specs import Mode, effective_mode
from atc.model.types import Object
from atc.release.takeoff import TakeoffResult
from atc_controller.children import ChildChange
from atc_controller.context import ControllerContext
from atc_controller.targets import Target

from .finalizers import remove_finalizer

CHILD_WAIT_SECONDS = 5.0
SIGNAL_POLL_FIRST_SECONDS = 0.02  # polling a signalled child for its new resourceVersion: 20 ms doubling
SIGNAL_POLL_MAX_SECONDS = 0.5  # up to half a second
SIGNALLING_MODES = ("dynamic", "subscription")


@dataclass
class ModeState:
    """What the controller remembers about one object between reconciles (the modes use it).

    ``tracked``: children whose changes re-run the flight in subscription mode;
    ``external``: objects the flight looked up but does not own, watched for changes;
    ``waits``: child ref -> the resourceVersion a signalled change was admitted over;
    ``reapply``: children to send again even if their desired state did not change;
    ``running`` and ``during_run``: whether the flight runs now, and the signals that came meanwhile.
    """

    mode: Mode = "standard"
    tracked: set[str] = field(default_factory=set)
    external: set[str] = field(default_factory=set)
    waits: dict[str, str] = field(default_factory=dict)
    reapply: set[str] = field(default_factory=set)
    stale_runs: int = 0  # consecutive runs whose output was refused as stale
    running: bool = False
    during_run: dict[str, str] = field(default_factory=dict)


def annotated_mode(obj: Object, fallback: str = "standard") -> Mode:
    """The object's mode: its valid ``overrides.yoke.cd/mode``, else ``fallback`` (``atc.model.specs``)."""
    return effective_mode(obj.get("metadata", {}).get("annotations") or {}, fallback)


class ModeFollowing:
    """The mode rules; the reconciler mixing this in sets ``context`` and ``states``."""

    context: ControllerContext
    states: dict[str, ModeState]

    @property
    def controller_name(self) -> str:
        raise NotImplementedError

    def cached_mode(self, key: str) -> Mode:
        """The mode of ``key`` as the watch cache has it (before this process reconciled it)."""
        raise NotImplementedError

    def key_for(self, namespace: str, name: str) -> str:
        """The work queue key of the object ``namespace``/``name`` (an instance's: ``namespace/name``)."""
        return f"{namespace}/{name}"

    # ------------------------------------------------------------------------------------ forgetting
    def _forget(self, key: str) -> None:
        """``key`` is gone (or let go): drop its state and stop following its target, Secret and lookups."""
        self.states.pop(key, None)
        self.context.targets.unbind(self.controller_name, key)

    async def _let_go(self, key: str, obj: Object, path: str, message: str) -> None:
        """Remove the finalizer of ``obj`` (at ``path``) without cleaning up: its target is gone for good.

        A ``TargetCleanupSkipped`` Warning Event says what was left behind (docs/targets.md, "Failures").
        """
        await remove_finalizer(self.context.kube, path, FINALIZER_INSTANCE)
        self.context.events.record(obj, WARNING, "TargetCleanupSkipped", f"resources left behind: {message}")
        self._forget(key)

    # ------------------------------------------------------------------------------------ signals
    def child_changed(self, key: str, child_ref: str, old_resource_version: str) -> bool:
        """Someone changed a child (the webhook's signal): re-run the flight if the mode says so.

        A signal that arrives while the flight runs is kept and judged when the run ends, against
        the children that run tracks: in subscription mode the run that creates a child is also the
        one that starts tracking it, and a change made in between must not be lost.
        """
        state = self.states.get(key)
        if state is None:  # not reconciled by this process yet: a reconcile is due anyway
            if self.cached_mode(key) not in SIGNALLING_MODES:
                return False
            self.context.manager.enqueue(self.controller_name, key)
            return True
        if state.mode not in SIGNALLING_MODES:
            return False
        if state.running:
            state.during_run[child_ref] = old_resource_version
            return True
        if state.mode == "subscription" and child_ref not in state.tracked:
            return False
        self._rerun_for(key, state, child_ref, old_resource_version)
        return True

    def child_drifted(self, key: str, change: ChildChange) -> None:
        """A child changed as the controller's own watch saw it (the net under the webhook's signals).

        static: a deletion, or a change beyond status by anyone but this controller, is put back (the
        child is applied again). dynamic and subscription: treated as the webhook's signal would be.
        standard: nothing.
        """
        state = self.states.get(key)
        mode = state.mode if state else self.cached_mode(key)
        if mode == "standard" or (change.by_us and not change.deleted):
            return
        if mode != "static":
            self.child_changed(key, change.child_ref, change.old_resource_version)
            return
        if change.deleted or change.spec_changed:
            state = self.states.setdefault(key, ModeState(mode=mode))
            state.reapply.add(change.child_ref)
            self.context.manager.enqueue(self.controller_name, key)

    def _rerun_for(self, key: str, state: ModeState, child_ref: str, old_resource_version: str) -> None:
        state.waits[child_ref] = old_resource_version
        state.reapply.add(child_ref)
        self.context.manager.enqueue(self.controller_name, key)

    def _replay_signals(self, key: str, state: ModeState) -> None:
        """The signals that arrived during the run that just ended, judged against what it tracks now."""
        signals, state.during_run = state.during_run, {}
        for child_ref, old_resource_version in signals.items():
            if state.mode == "dynamic" or child_ref in state.tracked:
                self._rerun_for(key, state, child_ref, old_resource_version)

    # ------------------------------------------------------------------------------------ around a run
    async def _await_children(self, state: ModeState, target: Target) -> None:
        """Before re-running, see each signalled child past the version its change was admitted over."""
        deadline = time.monotonic() + CHILD_WAIT_SECONDS
        for ref, old_version in list(state.waits.items()):
            parsed = parse_ref(ref)
            try:
                mapping = await target.mapper.mapping(parsed.group, parsed.kind, refresh_on_miss=True)
            except NoMatchError:
                continue
            path = mapping.object_path(parsed.name, parsed.namespace)
            backoff = Backoff(SIGNAL_POLL_FIRST_SECONDS, SIGNAL_POLL_MAX_SECONDS)
            while time.monotonic() < deadline:
                live = await target.kube.get_or_none(path)
                if live is None or live["metadata"].get("resourceVersion") != old_version:
                    break
                await asyncio.sleep(backoff.next_delay())
        state.waits.clear()

    def _track(
        self, key: str, state: ModeState, tracker: LookupTracker, result: TakeoffResult | None, target: Target
    ) -> None:
        """Update what the modes follow from this run's lookups (``result`` None: the run failed)."""
        if state.mode == "subscription":
            if result is None:
                state.tracked |= tracker.internal
            else:
                state.tracked = tracker.internal | (tracker.candidate & {resource_ref(obj) for obj in result.objects})
        else:
            state.tracked = set()
        if state.mode in SIGNALLING_MODES:
            state.external = set(tracker.external) if result is not None else state.external | tracker.external
        else:
            state.external = set()
        target.external_watches.follow(self.controller_name, key, state.external)

    async def _watch_children(self, state: ModeState, result: TakeoffResult, target: Target) -> None:
        """Have the target's child watches follow the children's kinds (static, dynamic, subscription)."""
        if state.mode == "standard":
            return
        for obj in result.objects:
            try:
                target.child_watches.follow(await mapping_for(target.mapper, obj))
            except NoMatchError:
                continue

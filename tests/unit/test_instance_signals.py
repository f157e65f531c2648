"""How the instance reconciler treats a child-changed signal, in particular one that arrives mid-run.

In subscription mode only tracked children re-run the flight, and the run that creates a child is
the one that starts tracking it; a change of that child admitted while the run is still going (the
Deployment controller updating a new Deployment's status, say) must not be lost. These tests drive
``InstanceReconciler.child_changed`` and the end of a run with a recording manager.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from atc.model.constants import ANNOTATION_OVERRIDE_MODE
from atc_controller.children import ChildChange
from atc_controller.reconcilers.instance import InstanceReconciler
from atc_controller.reconcilers.modes import ModeState

KEY = "team/c4ts"
CHILD = "team/Deployment.apps:c4ts"
OTHER = "team/ConfigMap:c4ts"


class RecordingManager:
    def __init__(self) -> None:
        self.enqueued: list[tuple[str, str]] = []

    def enqueue(self, controller: str, key: str) -> None:
        self.enqueued.append((controller, key))


def reconciler(instance: dict[str, Any] | None = None, mode: str = "subscription") -> InstanceReconciler:
    context = SimpleNamespace(manager=RecordingManager())
    airway = {
        "metadata": {"name": "tests.examples.com", "uid": "u"},
        "spec": {
            "wasmUrls": {"flight": "oci://registry/flight"},
            "mode": mode,
            "template": {"group": "examples.com", "names": {"kind": "Test", "plural": "tests"}, "versions": []},
        },
    }
    reflector = SimpleNamespace(get=lambda namespace, name: instance)
    return InstanceReconciler(cast(Any, context), airway, cast(Any, None), reflector)


def enqueued(rec: InstanceReconciler) -> list[tuple[str, str]]:
    return cast(RecordingManager, rec.context.manager).enqueued


def test_a_signal_during_the_run_that_starts_tracking_the_child_reruns_the_flight() -> None:
    rec = reconciler()
    state = rec.states[KEY] = ModeState(mode="subscription", running=True)
    assert rec.child_changed(KEY, CHILD, "41")
    assert enqueued(rec) == []  # not judged yet: the run decides what it tracks
    state.running, state.tracked = False, {CHILD}  # the run ends, tracking the child it created
    rec._replay_signals(KEY, state)
    assert enqueued(rec) == [(rec.controller_name, KEY)]
    assert state.waits == {CHILD: "41"}  # the re-run waits to see the child past the admitted version
    assert CHILD in state.reapply
    assert state.during_run == {}


def test_a_signal_during_a_run_for_a_child_it_does_not_track_is_dropped() -> None:
    rec = reconciler()
    state = rec.states[KEY] = ModeState(mode="subscription", running=True)
    rec.child_changed(KEY, OTHER, "7")
    state.running, state.tracked = False, {CHILD}
    rec._replay_signals(KEY, state)
    assert enqueued(rec) == []
    assert state.waits == {}


def test_in_dynamic_mode_every_signal_during_a_run_reruns() -> None:
    rec = reconciler(mode="dynamic")
    state = rec.states[KEY] = ModeState(mode="dynamic", running=True)
    rec.child_changed(KEY, OTHER, "7")
    state.running = False
    rec._replay_signals(KEY, state)
    assert enqueued(rec) == [(rec.controller_name, KEY)]


def test_between_runs_subscription_mode_follows_only_tracked_children() -> None:
    rec = reconciler()
    rec.states[KEY] = ModeState(mode="subscription", tracked={CHILD})
    assert not rec.child_changed(KEY, OTHER, "7")
    assert rec.child_changed(KEY, CHILD, "8")
    assert enqueued(rec) == [(rec.controller_name, KEY)]


def test_standard_mode_ignores_signals() -> None:
    rec = reconciler(mode="standard")
    rec.states[KEY] = ModeState(mode="standard", running=True)
    assert not rec.child_changed(KEY, CHILD, "7")
    assert enqueued(rec) == []


def test_an_instance_not_reconciled_yet_is_queued_when_its_mode_follows_children() -> None:
    instance = {"metadata": {"name": "c4ts", "namespace": "team", "annotations": {}}}
    rec = reconciler(instance, mode="dynamic")
    assert rec.child_changed(KEY, CHILD, "7")
    assert enqueued(rec) == [(rec.controller_name, KEY)]
    assert not reconciler(instance, mode="standard").child_changed(KEY, CHILD, "7")


def instance_with_mode(mode: str) -> dict[str, Any]:
    """The instance ``team/c4ts`` with the ``overrides.yoke.cd/mode`` annotation."""
    return {"metadata": {"name": "c4ts", "namespace": "team", "annotations": {ANNOTATION_OVERRIDE_MODE: mode}}}


def test_an_instance_not_reconciled_yet_follows_its_mode_override() -> None:
    rec = reconciler(instance_with_mode("dynamic"), mode="standard")
    assert rec.child_changed(KEY, CHILD, "7")
    assert enqueued(rec) == [(rec.controller_name, KEY)]
    assert not reconciler(instance_with_mode("static"), mode="dynamic").child_changed(KEY, CHILD, "7")


def test_a_signal_for_an_instance_missing_from_the_cache_is_ignored() -> None:
    rec = reconciler(None, mode="dynamic")
    assert not rec.child_changed(KEY, CHILD, "7")
    assert enqueued(rec) == []


def change(**fields: Any) -> ChildChange:
    values: dict[str, Any] = {
        "instance_ref": "team/Test.examples.com:c4ts",
        "child_ref": CHILD,
        "old_resource_version": "9",
        "deleted": False,
        "spec_changed": True,
        "by_us": False,
    }
    return ChildChange(**(values | fields))


def test_static_mode_puts_back_a_child_changed_or_deleted_by_someone_else() -> None:
    rec = reconciler(mode="static")
    rec.states[KEY] = ModeState(mode="static")
    rec.child_drifted(KEY, change())
    rec.child_drifted(KEY, change(child_ref=OTHER, deleted=True, spec_changed=False))
    assert enqueued(rec) == [(rec.controller_name, KEY)] * 2
    assert rec.states[KEY].reapply == {CHILD, OTHER}


def test_static_mode_ignores_status_updates_and_its_own_applies() -> None:
    rec = reconciler(mode="static")
    rec.states[KEY] = ModeState(mode="static")
    rec.child_drifted(KEY, change(spec_changed=False))  # another controller's status update
    rec.child_drifted(KEY, change(by_us=True))  # the controller's own apply
    assert enqueued(rec) == []
    rec.child_drifted(KEY, change(by_us=True, deleted=True))  # deleted even if we wrote last: put back
    assert enqueued(rec) == [(rec.controller_name, KEY)]


def test_dynamic_mode_treats_a_watched_change_as_the_webhooks_signal() -> None:
    rec = reconciler(mode="dynamic")
    state = rec.states[KEY] = ModeState(mode="dynamic")
    rec.child_drifted(KEY, change(spec_changed=False))
    assert enqueued(rec) == [(rec.controller_name, KEY)]
    assert state.waits == {CHILD: "9"}


def test_standard_mode_ignores_watched_changes() -> None:
    rec = reconciler(mode="standard")
    rec.child_drifted(KEY, change(deleted=True))
    assert enqueued(rec) == []

"""The admission decisions alone (``atc_webhook.decisions``): a review and cached facts in, verdict and effects out.

No fake API server, cache or client: each test builds the review and the facts as plain values and
checks what the routes would answer and which effects they would perform (docs/webhook.md).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any, cast

import pytest
from webhook_fakes import INSTANCE_REF, RELEASE, airway_with_flight, desired_configmap, live_configmap

from atc.k8s.signals import ChildChange
from atc.model.specs import AirwaySpec, FlightSpec, Mode
from atc.model.types import Object
from atc_webhook.admission import Review, Verdict
from atc_webhook.caches import AirwayInfo, InstanceInfo
from atc_webhook.decisions import (
    AuthorizeOverrides,
    ChildFacts,
    ChildLookup,
    DesiredKey,
    DryRunCrd,
    DryRunFlight,
    DryRunInstance,
    Outcome,
    SubmitSignal,
    ValidateAirwayModules,
    child_lookup,
    decide_airway,
    decide_child_change,
    decide_flight,
    decide_instance,
    desired_key,
)
from atc_webhook.routers.resources import admit_resource_change

ADMIN = "admin"
GC = "system:serviceaccount:kube-system:generic-garbage-collector"
BACKENDS = AirwayInfo("backends.examples.com", "examples.com", "Backend", "backends", "v1", True, "static")


def review(
    operation: str, old: Object | None, new: Object | None, *, user: str = ADMIN, dry_run: bool = False
) -> Review:
    request = {
        "uid": "req-1",
        "operation": operation,
        "userInfo": {"username": user, "uid": "user-uid", "groups": ["devs"]},
        "object": new,
        "oldObject": old,
        "dryRun": dry_run,
    }
    return Review("admission.k8s.io/v1", "AdmissionReview", request)


def allowed(outcome: Outcome[Any], message: str = "validation passed") -> bool:
    return outcome.verdict == Verdict(True, message)


def denied(verdict: Verdict, reason: str, message: str) -> bool:
    return (verdict.allowed, verdict.reason, verdict.message) == (False, reason, message)


def test_decisions_are_plain_functions() -> None:
    for decide in (child_lookup, desired_key, decide_child_change, decide_airway, decide_flight, decide_instance):
        assert not inspect.iscoroutinefunction(decide), decide.__name__
    assert inspect.iscoroutinefunction(admit_resource_change)  # the route is where the awaiting is


# ----------------------------------------------------------------------------------------------- children


def update(change: Callable[[Object], None], **kwargs: Any) -> Review:
    old = live_configmap()
    new = copy.deepcopy(old)
    change(new)
    return review("UPDATE", old, new, **kwargs)


def deletion(**kwargs: Any) -> Review:
    return review("DELETE", live_configmap(), None, **kwargs)


def edit_data(obj: Object) -> None:
    obj["data"]["key"] = "changed"


def start_deleting(obj: Object) -> None:
    obj["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z", finalizers=[])


def instance(mode: str) -> InstanceInfo:
    return InstanceInfo(BACKENDS, "ns", "inst", "uid-inst", cast(Mode, mode))


def facts(mode: str) -> ChildFacts:
    return ChildFacts(instance(mode), desired_configmap())


def test_a_changed_yoke_annotation_is_denied_without_the_caches() -> None:
    def retarget(obj: Object) -> None:
        obj["metadata"]["annotations"]["instance.atc.yoke.cd/release"] = "other"

    request = update(retarget)
    assert child_lookup(request) is None
    for mode in ("static", "dynamic"):
        outcome = decide_child_change(request, facts(mode))
        assert denied(outcome.verdict, "BadRequest", "cannot modify yoke annotations: instance.atc.yoke.cd/release")
        assert outcome.effects == ()


def test_a_noop_update_is_allowed_without_the_caches_or_a_signal() -> None:
    def bump(obj: Object) -> None:
        obj["metadata"].update(resourceVersion="101", managedFields=[{"manager": "kubectl"}])

    request = update(bump)
    assert child_lookup(request) is None
    outcome = decide_child_change(request, facts("dynamic"))
    assert allowed(outcome)
    assert outcome.effects == ()


def test_a_child_without_instance_ref_is_allowed_without_the_caches() -> None:
    old = live_configmap()
    del old["metadata"]["annotations"]["instance.atc.yoke.cd/instanceRef"]
    new = copy.deepcopy(old)
    edit_data(new)
    request = review("UPDATE", old, new)
    assert child_lookup(request) is None
    assert allowed(decide_child_change(request, ChildFacts()))


def test_the_lookup_names_the_instance_and_the_desired_object_of_an_update() -> None:
    def rename(obj: Object) -> None:
        obj["metadata"]["name"] = "cm-renamed"  # the key follows the new object, the release the old one
        edit_data(obj)

    assert child_lookup(update(rename)) == ChildLookup(
        INSTANCE_REF, DesiredKey(RELEASE, "ns", "v1", "ConfigMap", "cm-renamed")
    )


def test_a_deletion_looks_up_only_the_instance() -> None:
    assert child_lookup(deletion()) == ChildLookup(INSTANCE_REF, None)
    assert child_lookup(update(start_deleting)) == ChildLookup(INSTANCE_REF, None)


@pytest.mark.parametrize(("mode", "wanted"), [("static", True), ("dynamic", False), ("standard", False)])
def test_only_static_mode_needs_the_desired_object(mode: str, wanted: bool) -> None:
    lookup = child_lookup(update(edit_data))
    assert lookup is not None
    assert desired_key(lookup, instance(mode)) == (lookup.desired if wanted else None)
    assert desired_key(lookup, None) is None


def test_an_unknown_instance_is_allowed() -> None:
    outcome = decide_child_change(update(edit_data), ChildFacts())
    assert allowed(outcome)
    assert outcome.effects == ()


# static
def test_static_denies_a_change_to_what_the_flight_set_and_signals_nothing() -> None:
    outcome = decide_child_change(update(edit_data, user="bob"), facts("static"))
    assert denied(outcome.verdict, "BadRequest", "cannot modify flight sub-resources")
    assert outcome.effects == ()


def test_static_allows_what_the_flight_did_not_set() -> None:
    def harmless(obj: Object) -> None:
        obj["metadata"]["labels"]["team"] = "blue"
        obj["status"] = {"observed": True}

    outcome = decide_child_change(update(harmless), facts("static"))
    assert allowed(outcome)
    assert outcome.effects == ()


def test_static_allows_a_child_missing_from_the_revision() -> None:
    assert allowed(decide_child_change(update(edit_data), ChildFacts(instance("static"), None)))


@pytest.mark.parametrize(
    "request_of", [deletion, lambda **kw: update(start_deleting, **kw)], ids=["DELETE", "deleting"]
)
def test_static_lets_only_kube_system_controllers_delete(request_of: Callable[..., Review]) -> None:
    refused = decide_child_change(request_of(), ChildFacts(instance("static")))
    assert denied(refused.verdict, "BadRequest", "cannot delete resources managed by Air-Traffic-Controller")
    assert refused.effects == ()
    assert allowed(decide_child_change(request_of(user=GC), ChildFacts(instance("static"))))


# dynamic and subscription
def expected_change(operation: str, user: str = ADMIN) -> ChildChange:
    return ChildChange(
        instance_api_version="examples.com/v1",
        instance_kind="Backend",
        instance_namespace="ns",
        instance_name="inst",
        instance_uid="uid-inst",
        child_ref="ns/ConfigMap:cm",
        child_resource_version="100",  # the child before the change
        operation=operation,
        username=user,
    )


@pytest.mark.parametrize("mode", ["dynamic", "subscription"])
def test_signalling_modes_allow_an_update_and_signal_it(mode: str) -> None:
    outcome = decide_child_change(update(edit_data, user="bob"), facts(mode))
    assert allowed(outcome)
    assert outcome.effects == (SubmitSignal(expected_change("UPDATE", "bob")),)


def test_a_deletion_in_dynamic_mode_is_signalled_with_the_old_resource_version() -> None:
    outcome = decide_child_change(deletion(), ChildFacts(instance("dynamic")))
    assert allowed(outcome)
    assert outcome.effects == (SubmitSignal(expected_change("DELETE")),)


def test_a_dry_run_is_allowed_without_a_signal() -> None:
    outcome = decide_child_change(update(edit_data, dry_run=True), facts("dynamic"))
    assert allowed(outcome)
    assert outcome.effects == ()


def test_standard_mode_allows_without_a_signal() -> None:
    for request in (update(edit_data), deletion()):
        outcome = decide_child_change(request, facts("standard"))
        assert allowed(outcome)
        assert outcome.effects == ()


# ----------------------------------------------------------------------------------------------- airways


def test_an_airway_is_checked_for_its_modules_then_its_crd() -> None:
    airway = airway_with_flight()
    outcome = decide_airway(review("CREATE", None, airway))
    assert allowed(outcome)
    spec = AirwaySpec.model_validate(airway["spec"])
    modules, crd = outcome.effects
    assert modules == ValidateAirwayModules(spec)
    assert isinstance(crd, DryRunCrd)
    assert crd.crd["metadata"]["name"] == "backends.examples.com"
    assert crd.crd["metadata"]["ownerReferences"][0]["uid"] == "airway-uid"
    assert crd.crd["spec"] == airway["spec"]["template"]
    assert crd.crd["spec"] is not airway["spec"]["template"]  # the review's object is left as it came


def test_an_invalid_airway_spec_is_denied_without_checks() -> None:
    outcome = decide_airway(review("CREATE", None, airway_with_flight(mode="bogus")))
    assert not outcome.verdict.allowed
    assert outcome.verdict.reason == "Invalid"
    assert outcome.verdict.message.startswith("invalid airway spec: mode: ")
    assert "bogus" not in outcome.verdict.message  # the submitted value is not echoed
    assert outcome.effects == ()


def test_an_airway_being_deleted_is_admitted_without_checks() -> None:
    airway = airway_with_flight(mode="bogus")
    airway["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    outcome = decide_airway(review("UPDATE", airway, airway))
    assert allowed(outcome)
    assert outcome.effects == ()


# ----------------------------------------------------------------------------------------------- flights
def flight_object(kind: str = "Flight", **spec: Any) -> Object:
    return {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": kind,
        "metadata": {"name": "f", "namespace": "ns"},
        "spec": {"wasmUrl": "https://example.com/flight.wasm", **spec},
    }


@pytest.mark.parametrize(("timeout", "seconds"), [("", 10.0), ("90s", 90.0), ("-1s", None)])
def test_a_flight_is_dry_run_with_its_timeout(timeout: str, seconds: float | None) -> None:
    flight = flight_object(timeout=timeout)
    outcome = decide_flight(review("CREATE", None, flight))
    assert allowed(outcome, "successful dryrun validation")
    spec = FlightSpec.model_validate(flight["spec"])
    assert outcome.effects == (DryRunFlight(flight, "Flight", spec, seconds),)


def test_a_cluster_flight_keeps_its_kind_and_a_kindless_one_is_a_flight() -> None:
    [cluster] = decide_flight(review("CREATE", None, flight_object("ClusterFlight"))).effects
    assert isinstance(cluster, DryRunFlight)
    assert cluster.kind == "ClusterFlight"
    kindless = flight_object()
    del kindless["kind"]
    [plain] = decide_flight(review("CREATE", None, kindless)).effects
    assert isinstance(plain, DryRunFlight)
    assert plain.kind == "Flight"


def test_a_flight_with_a_bad_spec_or_timeout_is_denied_without_a_dry_run() -> None:
    bad_timeout = decide_flight(review("CREATE", None, flight_object(timeout="forever")))
    assert denied(bad_timeout.verdict, "BadRequest", 'time: invalid duration "forever"')
    assert bad_timeout.effects == ()
    no_url = flight_object()
    del no_url["spec"]["wasmUrl"]
    missing = decide_flight(review("CREATE", None, no_url))
    assert (missing.verdict.allowed, missing.verdict.reason) == (False, "BadRequest")
    assert missing.verdict.message == "invalid flight spec: wasmUrl: Field required"
    assert missing.effects == ()


# ----------------------------------------------------------------------------------------------- instances
def backend(**annotations: str) -> Object:
    return {
        "apiVersion": "examples.com/v1",
        "kind": "Backend",
        "metadata": {"name": "inst", "namespace": "ns", "uid": "uid-inst", "annotations": annotations},
        "spec": {"image": "nginx"},
    }


OVERRIDE_FLIGHT = "overrides.yoke.cd/flight"
OVERRIDE_MODE = "overrides.yoke.cd/mode"
USER = {"username": ADMIN, "uid": "user-uid", "groups": ["devs"]}


def test_an_instance_without_overrides_is_dry_run() -> None:
    airway, obj = airway_with_flight(), backend()
    outcome = decide_instance(review("CREATE", None, obj), airway)
    assert allowed(outcome)
    assert outcome.effects == (DryRunInstance(airway, AirwaySpec.model_validate(airway["spec"]), obj),)


@pytest.mark.parametrize(
    ("operation", "old", "new", "authorize"),
    [
        ("CREATE", None, {OVERRIDE_FLIGHT: "https://example.com/other.wasm"}, True),
        ("CREATE", None, {OVERRIDE_MODE: "dynamic"}, True),
        ("UPDATE", {OVERRIDE_MODE: "dynamic"}, {OVERRIDE_MODE: "dynamic"}, False),
        ("UPDATE", {OVERRIDE_MODE: "dynamic"}, {OVERRIDE_MODE: "static"}, True),
        ("UPDATE", {OVERRIDE_MODE: "dynamic"}, {}, True),
        ("UPDATE", {}, {"team": "blue"}, False),
    ],
    ids=["create flight", "create mode", "keep", "change", "remove", "other annotation"],
)
def test_changing_override_annotations_needs_authorization_first(
    operation: str, old: dict[str, str] | None, new: dict[str, str], authorize: bool
) -> None:
    airway, obj = airway_with_flight(), backend(**new)
    outcome = decide_instance(review(operation, None if old is None else backend(**old), obj), airway)
    dry_run = DryRunInstance(airway, AirwaySpec.model_validate(airway["spec"]), obj)
    assert outcome.effects == ((AuthorizeOverrides(USER), dry_run) if authorize else (dry_run,))
    assert allowed(outcome)


def test_skip_admission_webhook_keeps_only_the_override_check() -> None:
    airway = airway_with_flight(skipAdmissionWebhook=True)
    plain = decide_instance(review("CREATE", None, backend()), airway)
    assert allowed(plain, "admission skipped")
    assert plain.effects == ()
    overriding = decide_instance(review("CREATE", None, backend(**{OVERRIDE_MODE: "static"})), airway)
    assert allowed(overriding, "admission skipped")
    assert overriding.effects == (AuthorizeOverrides(USER),)

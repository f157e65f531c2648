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
from webhook_fakes import (
    CLUSTER_FLIGHT_HISTORY,
    CLUSTER_FLIGHT_REF,
    FLIGHT_HISTORY,
    FLIGHT_REF,
    INSTANCE_REF,
    RELEASE,
    airway_with_flight,
    desired_configmap,
    desired_flight_child,
    flight_child,
    live_configmap,
)

from atc.k8s.signals import ChildChange
from atc.model.specs import AirwaySpec, FlightSpec, Mode
from atc.model.target import TargetRef
from atc.model.types import Object
from atc_webhook.admission import Review, Verdict
from atc_webhook.caches import FLIGHT_KINDS, AirwayInfo, InstanceInfo
from atc_webhook.decisions import (
    AuthorizeOverrides,
    AuthorizeTargetSecret,
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


# children of Flights and ClusterFlights: the same rules, with the Flight as the instance
def flight_instance(mode: str, kind: str = "Flight") -> InstanceInfo:
    info = FLIGHT_KINDS[f"{kind}.yoke.cd"]
    return InstanceInfo(
        info,
        "" if kind == "ClusterFlight" else "ns",
        "cf" if kind == "ClusterFlight" else "f",
        "uid-f",
        cast(Mode, mode),
    )


def flight_update(kind: str, change: Callable[[Object], None], **kwargs: Any) -> Review:
    old = flight_child(kind)
    new = copy.deepcopy(old)
    change(new)
    return review("UPDATE", old, new, **kwargs)


@pytest.mark.parametrize(
    ("kind", "ref", "history", "namespace"),
    [
        ("Flight", FLIGHT_REF, FLIGHT_HISTORY, "ns"),
        ("ClusterFlight", CLUSTER_FLIGHT_REF, CLUSTER_FLIGHT_HISTORY, "default"),
    ],
)
def test_a_flight_child_is_compared_with_the_flights_history_not_its_bare_release(
    kind: str, ref: str, history: str, namespace: str
) -> None:
    lookup = child_lookup(flight_update(kind, edit_data))
    assert lookup is not None
    assert lookup.instance_ref == ref
    assert lookup.desired is not None
    assert lookup.desired.release == ("cf" if kind == "ClusterFlight" else "f")  # what takeoff stamps
    assert desired_key(lookup, flight_instance("static", kind)) == DesiredKey(
        history, namespace, "v1", "ConfigMap", "cm"
    )
    assert desired_key(lookup, flight_instance("dynamic", kind)) is None


@pytest.mark.parametrize("kind", ["Flight", "ClusterFlight"])
def test_static_flights_deny_changes_to_their_children(kind: str) -> None:
    static = ChildFacts(flight_instance("static", kind), desired_flight_child(kind))
    outcome = decide_child_change(flight_update(kind, edit_data), static)
    assert denied(outcome.verdict, "BadRequest", "cannot modify flight sub-resources")
    assert outcome.effects == ()
    deleted = decide_child_change(review("DELETE", flight_child(kind), None), static)
    assert denied(deleted.verdict, "BadRequest", "cannot delete resources managed by Air-Traffic-Controller")

    def harmless(obj: Object) -> None:
        obj["metadata"]["labels"]["team"] = "blue"

    assert allowed(decide_child_change(flight_update(kind, harmless), static))


@pytest.mark.parametrize("mode", ["dynamic", "subscription"])
def test_signalling_flights_signal_the_flight(mode: str) -> None:
    outcome = decide_child_change(flight_update("Flight", edit_data, user="bob"), ChildFacts(flight_instance(mode)))
    assert allowed(outcome)
    assert outcome.effects == (
        SubmitSignal(
            ChildChange(
                instance_api_version="yoke.cd/v1alpha1",
                instance_kind="Flight",
                instance_namespace="ns",
                instance_name="f",
                instance_uid="uid-f",
                child_ref="ns/ConfigMap:cm",
                child_resource_version="100",
                operation="UPDATE",
                username="bob",
            )
        ),
    )


def test_a_dynamic_cluster_flight_is_signalled_without_a_namespace() -> None:
    outcome = decide_child_change(
        review("DELETE", flight_child("ClusterFlight"), None), ChildFacts(flight_instance("dynamic", "ClusterFlight"))
    )
    assert allowed(outcome)
    [signal] = outcome.effects
    change = signal.change
    assert (change.instance_api_version, change.instance_kind, change.instance_namespace, change.instance_name) == (
        "yoke.cd/v1alpha1",
        "ClusterFlight",
        "",
        "cf",
    )
    assert (change.instance_key, change.operation) == ("/cf", "DELETE")


def test_standard_flights_allow_without_a_signal() -> None:
    for request in (flight_update("Flight", edit_data), review("DELETE", flight_child(), None)):
        outcome = decide_child_change(request, ChildFacts(flight_instance("standard")))
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


@pytest.mark.parametrize("mode", ["standard", "static", "dynamic", "subscription"])
def test_a_flight_mode_is_admitted_without_an_access_review(mode: str) -> None:
    flight = flight_object()
    flight["metadata"]["annotations"] = {"overrides.yoke.cd/mode": mode}
    outcome = decide_flight(review("CREATE", None, flight))
    assert allowed(outcome, "successful dryrun validation")
    [dry_run] = outcome.effects  # no access review: the Flight's author owns its children
    assert isinstance(dry_run, DryRunFlight)
    assert dry_run.mode == mode  # the dry run stamps the children as the controller will


@pytest.mark.parametrize("value", ["bogus", "", "Static", "static "])
@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_an_invalid_flight_mode_is_denied_without_echoing_it(value: str, operation: str) -> None:
    flight = flight_object("ClusterFlight")
    flight["metadata"]["annotations"] = {"overrides.yoke.cd/mode": value}
    outcome = decide_flight(review(operation, flight_object("ClusterFlight"), flight))
    assert denied(
        outcome.verdict,
        "BadRequest",
        "overrides.yoke.cd/mode must be one of: standard, static, dynamic, subscription",
    )
    assert outcome.effects == ()


def test_a_flight_being_deleted_is_not_held_to_its_mode() -> None:
    flight = flight_object()
    flight["metadata"].update(annotations={"overrides.yoke.cd/mode": "bogus"}, deletionTimestamp="2026-01-01T00:00:00Z")
    assert decide_flight(review("UPDATE", flight, flight)).verdict.allowed


# kubeconfig Secret (deploy to another cluster)
SECRET = "atc.yoke.cd/kubeconfig-secret"
KEY = "atc.yoke.cd/kubeconfig-key"
TARGET_CANNOT_CHANGE = (
    "atc.yoke.cd/kubeconfig-secret and atc.yoke.cd/kubeconfig-key cannot change: delete the object and create it again"
)


def annotated(obj: Object, **annotations: str) -> Object:
    obj["metadata"].setdefault("annotations", {}).update(annotations)
    return obj


def dry_run_target(effect: object) -> TargetRef | None:
    """The cluster a dry-run check goes to (None: this one)."""
    assert isinstance(effect, DryRunFlight | DryRunInstance)
    return effect.target


def test_a_targeted_flight_is_authorized_and_dry_run_in_its_cluster() -> None:
    flight = annotated(flight_object(), **{SECRET: "kc", KEY: "config"})
    outcome = decide_flight(review("CREATE", None, flight))
    assert allowed(outcome, "successful dryrun validation")
    access, dry_run = outcome.effects
    assert access == AuthorizeTargetSecret(USER, "ns", "kc")
    assert dry_run_target(dry_run) == TargetRef("ns", "kc", ("config",))


def test_a_targeted_cluster_flight_names_the_secrets_namespace() -> None:
    flight = annotated(flight_object("ClusterFlight"), **{SECRET: "fleet/kc"})
    del flight["metadata"]["namespace"]
    outcome = decide_flight(review("CREATE", None, flight))
    access, dry_run = outcome.effects
    assert access == AuthorizeTargetSecret(USER, "fleet", "kc")
    assert dry_run_target(dry_run) == TargetRef("fleet", "kc")


@pytest.mark.parametrize(
    ("kind", "annotations", "message"),
    [
        ("Flight", {KEY: "config"}, f"{KEY} is set without {SECRET}"),
        ("Flight", {SECRET: "other/kc"}, f"{SECRET} must name a Secret of the object's own namespace"),
        ("Flight", {SECRET: "Not_A_Name"}, f"{SECRET} is not a valid namespace/name of a Secret"),
        ("Flight", {SECRET: "kc", KEY: "a/b"}, f"{KEY} is not a valid Secret key"),
        ("ClusterFlight", {SECRET: "kc"}, f"{SECRET} of a cluster-scoped object must be namespace/name"),
    ],
    ids=["key alone", "other namespace", "bad name", "bad key", "cluster without namespace"],
)
def test_a_malformed_target_is_denied_without_checks(kind: str, annotations: dict[str, str], message: str) -> None:
    flight = annotated(flight_object(kind), **annotations)
    if kind == "ClusterFlight":
        del flight["metadata"]["namespace"]
    outcome = decide_flight(review("CREATE", None, flight))
    assert denied(outcome.verdict, "BadRequest", message)
    assert "Not_A_Name" not in outcome.verdict.message
    assert outcome.effects == ()
    instance = decide_instance(review("CREATE", None, backend(**annotations)), airway_with_flight())
    if kind == "Flight":
        assert denied(instance.verdict, "BadRequest", message)
        assert instance.effects == ()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({}, {SECRET: "kc"}),
        ({SECRET: "kc"}, {}),
        ({SECRET: "kc"}, {SECRET: "kc2"}),
        ({SECRET: "kc"}, {SECRET: "kc", KEY: "k"}),
    ],
    ids=["set", "removed", "renamed", "key added"],
)
def test_an_update_may_not_change_the_target(old: dict[str, str], new: dict[str, str]) -> None:
    flight = decide_flight(review("UPDATE", annotated(flight_object(), **old), annotated(flight_object(), **new)))
    assert denied(flight.verdict, "BadRequest", TARGET_CANNOT_CHANGE)
    assert flight.effects == ()
    instance = decide_instance(review("UPDATE", backend(**old), backend(**new)), airway_with_flight())
    assert denied(instance.verdict, "BadRequest", TARGET_CANNOT_CHANGE)
    assert instance.effects == ()


def test_an_unrelated_update_of_a_targeted_object_asks_nothing() -> None:
    old = annotated(flight_object(), **{SECRET: "kc"})
    new = annotated(flight_object(), **{SECRET: "kc", "team": "blue"})
    outcome = decide_flight(review("UPDATE", old, new))
    [dry_run] = outcome.effects  # no access review; the dry run, in the Secret's cluster
    assert dry_run_target(dry_run) == TargetRef("ns", "kc")
    instance = decide_instance(
        review("UPDATE", backend(**{SECRET: "kc"}), backend(**{SECRET: "kc", "team": "blue"})), airway_with_flight()
    )
    [dry_run] = instance.effects
    assert dry_run_target(dry_run) == TargetRef("ns", "kc")


def test_an_object_being_deleted_may_change_its_target_but_is_authorized() -> None:
    old = annotated(flight_object(), **{SECRET: "kc"})
    new = annotated(flight_object(), **{SECRET: "kc2"})
    new["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    outcome = decide_flight(review("UPDATE", old, new))
    assert outcome.verdict.allowed
    assert outcome.effects[0] == AuthorizeTargetSecret(USER, "ns", "kc2")
    removed = copy.deepcopy(new)
    del removed["metadata"]["annotations"][SECRET]
    outcome = decide_flight(review("UPDATE", old, removed))
    assert allowed(outcome, "successful dryrun validation")  # as today: no target, so the dry run
    malformed = annotated(copy.deepcopy(new), **{SECRET: "Bad_Name"})
    outcome = decide_flight(review("UPDATE", old, malformed))
    assert outcome.verdict.allowed  # finalizers can always be removed


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


def test_a_targeted_instance_is_authorized_for_overrides_and_the_secret_then_dry_run_in_its_cluster() -> None:
    annotations = {SECRET: "kc", OVERRIDE_MODE: "dynamic"}
    airway, obj = airway_with_flight(), backend(**annotations)
    outcome = decide_instance(review("CREATE", None, obj), airway)
    assert allowed(outcome)
    spec = AirwaySpec.model_validate(airway["spec"])
    assert outcome.effects == (
        AuthorizeOverrides(USER),
        AuthorizeTargetSecret(USER, "ns", "kc"),
        DryRunInstance(airway, spec, obj, TargetRef("ns", "kc")),
    )


def test_a_targeted_instance_with_skip_admission_webhook_is_still_authorized() -> None:
    airway = airway_with_flight(skipAdmissionWebhook=True)
    outcome = decide_instance(review("CREATE", None, backend(**{SECRET: "kc"})), airway)
    assert allowed(outcome, "admission skipped")
    assert outcome.effects == (AuthorizeTargetSecret(USER, "ns", "kc"),)
    malformed = decide_instance(review("CREATE", None, backend(**{KEY: "k"})), airway)
    assert denied(malformed.verdict, "BadRequest", f"{KEY} is set without {SECRET}")

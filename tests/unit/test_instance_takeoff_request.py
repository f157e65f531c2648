"""The controller's takeoff of an instance and the webhook's dry run of it are the same request.

Both go through ``atc.release.instance_request.instance_takeoff_request``; these tests call each
caller the way it runs (the reconciler's ``_request``, the webhook's ``admit_instance``) with the
flight module and the takeoff stubbed out, and compare what they would send. A dry run that differs
from the real takeoff would, under the same field manager, strip yoke's annotations from children
and be refused by ``atc-resources``: the bug this guards against.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from fakes import comparable_request as comparable
from webhook_fakes import airway_with_flight

from atc.k8s.access import LookupTracker
from atc.model.constants import ANNOTATION_INSTANCE_REF, MANAGED_BY_ATC
from atc.model.specs import AirwaySpec
from atc.model.types import Object
from atc.release import instance_request as instance_object
from atc.release.instance_request import ObjectPathError, ParentMatcher, instance_takeoff_request, value_at
from atc.release.invocation import FlightDefaults
from atc.release.takeoff import TakeoffRequest
from atc_controller.reconcilers import instance as reconciler_module
from atc_controller.reconcilers.instance import InstanceReconciler
from atc_controller.reconcilers.modes import ModeState
from atc_webhook import validation
from atc_webhook.admission import Review
from atc_webhook.routers.flights import admit_instance

MODULE = cast(Any, SimpleNamespace(url="oci://registry/flight", sha256="ab", sha1="cd"))


def instance() -> Object:
    return {
        "apiVersion": "examples.com/v1",
        "kind": "Backend",
        "metadata": {"name": "c4ts", "namespace": "team", "uid": "u-1", "resourceVersion": "7"},
        "spec": {"image": "c4ts", "replicas": 2, "nested": {"value": 1}},
    }


async def controller_request(airway_obj: Object, obj: Object, monkeypatch: pytest.MonkeyPatch) -> TakeoffRequest:
    async def load(*_: Any) -> Any:
        return MODULE

    monkeypatch.setattr(reconciler_module, "load_instance_module", load)
    context = SimpleNamespace(modules=None, flight_defaults=FlightDefaults(), gateway="controller-gateway")
    reconciler = InstanceReconciler(cast(Any, context), airway_obj, cast(Any, None), None)
    target = SimpleNamespace(remote=False, gateway="controller-gateway")
    return await reconciler._request(obj, ModeState(), LookupTracker(), cast(Any, target))


async def webhook_request(airway_obj: Object, obj: Object, monkeypatch: pytest.MonkeyPatch) -> TakeoffRequest:
    captured: list[TakeoffRequest] = []

    async def load(*_: Any) -> Any:
        return MODULE

    async def takeoff(_: Any, request: TakeoffRequest) -> Any:
        captured.append(request)
        return SimpleNamespace(warnings=[])  # a dry run that checked everything

    monkeypatch.setattr(validation, "load_instance_module", load)
    monkeypatch.setattr(validation, "takeoff", takeoff)
    monkeypatch.setattr(validation, "_gateway", lambda _: "webhook-gateway")
    services = SimpleNamespace(modules=None, cluster=None, defaults=FlightDefaults())
    review = Review(
        "admission.k8s.io/v1",
        "AdmissionReview",
        {"operation": "CREATE", "object": obj, "userInfo": {"username": "someone"}},
    )
    verdict = await admit_instance(cast(Any, services), airway_obj, review)
    assert verdict.allowed, verdict
    assert len(captured) == 1
    return captured[0]


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"objectPath": ["spec", "nested"], "clusterAccess": True, "resourceAccessMatchers": ["Secret"]},
        {"historyCapSize": 5, "prune": {"crds": True}, "timeout": "30s", "maxMemoryMib": 64, "fixDriftInterval": "1m"},
    ],
)
async def test_controller_and_webhook_build_the_same_request(spec: Object, monkeypatch: pytest.MonkeyPatch) -> None:
    airway_obj = airway_with_flight(**spec)
    real = await controller_request(airway_obj, instance(), monkeypatch)
    dry = await webhook_request(airway_obj, instance(), monkeypatch)
    assert dry.dry_run
    assert not real.dry_run
    assert comparable(dry) == comparable(real)


async def test_the_request_carries_what_atc_resources_protects(monkeypatch: pytest.MonkeyPatch) -> None:
    dry = await webhook_request(airway_with_flight(), instance(), monkeypatch)
    assert dry.managed_by == MANAGED_BY_ATC
    assert dry.extra_annotations == {ANNOTATION_INSTANCE_REF: "team/Backend.examples.com:c4ts"}
    assert dry.owner_references == [{"apiVersion": "examples.com/v1", "kind": "Backend", "name": "c4ts", "uid": "u-1"}]
    assert dry.is_parent == ParentMatcher("examples.com", "Backend", "c4ts", "team")


def test_the_parent_is_recognised_by_group_kind_name_and_namespace() -> None:
    parent = ParentMatcher("examples.com", "Backend", "c4ts", "team")
    assert parent(
        {"apiVersion": "examples.com/v2", "kind": "Backend", "metadata": {"name": "c4ts", "namespace": "team"}}
    )
    assert not parent(
        {"apiVersion": "other.com/v1", "kind": "Backend", "metadata": {"name": "c4ts", "namespace": "team"}}
    )
    assert not parent({"apiVersion": "examples.com/v1", "kind": "Backend", "metadata": {"name": "c4ts"}})


def test_object_path_through_a_non_object_is_an_error_naming_where() -> None:
    with pytest.raises(ObjectPathError) as failed:
        value_at({"spec": {"image": "x"}}, ["spec", "image", "tag"])
    assert failed.value.detail == "value at spec.image is not an object"
    assert str(failed.value) == 'failed to get object path from: "spec,image,tag": value at spec.image is not an object'
    assert value_at({"spec": {}}, ["spec", "missing", "deeper"]) is None


def test_stdin_is_the_value_at_the_object_path() -> None:
    spec = AirwaySpec.model_validate(airway_with_flight(objectPath=["spec", "nested"])["spec"])
    assert instance_object.instance_stdin(spec, instance()) == b'{"value":1}'


def test_the_builder_alone_gives_the_cluster_scoped_release_its_default_namespace() -> None:
    spec = AirwaySpec.model_validate(
        airway_with_flight()["spec"] | {"template": airway_with_flight()["spec"]["template"] | {"scope": "Cluster"}}
    )
    obj = instance()
    del obj["metadata"]["namespace"]
    request = instance_takeoff_request(airway_with_flight(), spec, obj, MODULE, defaults=FlightDefaults(), gateway=None)
    assert request.namespace == "default"
    assert request.cross_namespace


def test_a_flight_without_its_own_memory_cap_gets_the_default() -> None:
    defaults = FlightDefaults(memory_mib=256)
    for declared, cap in ((0, 256), (1024, 1024)):
        airway_obj = airway_with_flight(maxMemoryMib=declared)
        spec = AirwaySpec.model_validate(airway_obj["spec"])
        request = instance_takeoff_request(airway_obj, spec, instance(), MODULE, defaults=defaults, gateway=None)
        assert request.max_memory_mib == cap


@pytest.mark.parametrize(
    ("scope", "annotations", "refused"),
    [
        ("Namespaced", {}, True),
        ("Namespaced", {"atc.yoke.cd/allow-cluster-resources": "true"}, False),
        ("Cluster", {}, False),
    ],
)
def test_only_a_namespaced_airway_that_did_not_opt_in_refuses_privileged_output(
    scope: str, annotations: dict[str, str], refused: bool
) -> None:
    airway_obj = airway_with_flight()
    airway_obj["spec"]["template"]["scope"] = scope
    airway_obj["metadata"]["annotations"] = annotations
    spec = AirwaySpec.model_validate(airway_obj["spec"])
    request = instance_takeoff_request(airway_obj, spec, instance(), MODULE, defaults=FlightDefaults(), gateway=None)
    assert bool(request.privileged_refused) is refused

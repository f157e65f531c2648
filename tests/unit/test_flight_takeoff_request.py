"""The controller's takeoff of a Flight or ClusterFlight and the webhook's dry run of it are the same request.

Both go through ``atc.release.flight_request.flight_takeoff_request``; these tests drive each caller
the way it runs (the Flight reconciler's ``_takeoff``, the webhook's ``admit_flight``) with the
module load, the status writes and the takeoff itself replaced by recorders, and compare what they
would send (the companion of ``test_instance_takeoff_request.py``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from fakes import comparable_request as comparable

from atc.k8s.access import LookupTracker
from atc.model.specs import FlightSpec
from atc.model.types import Object
from atc.release.invocation import FlightDefaults
from atc.release.takeoff import TakeoffRequest
from atc_controller.reconcilers import flight as flight_reconciler
from atc_controller.reconcilers.flight import FlightReconciler
from atc_controller.reconcilers.modes import ModeState
from atc_webhook import validation
from atc_webhook.admission import Review
from atc_webhook.routers.flights import admit_flight

MODULE = cast(Any, SimpleNamespace(url="oci://registry/flight", sha256="ab", sha1="cd"))


class Modules:
    async def load(self, *_: Any, **__: Any) -> Any:
        return MODULE


def flight(kind: str, **spec: Any) -> Object:
    meta: Object = {"name": "edge", "uid": "f-1", "resourceVersion": "3"}
    if kind == "Flight":
        meta["namespace"] = "team"
    return {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": kind,
        "metadata": meta,
        "spec": {"wasmUrl": "oci://registry/flight", **spec},
    }


async def controller_request(obj: Object, kind: str, monkeypatch: pytest.MonkeyPatch) -> TakeoffRequest:
    captured: list[TakeoffRequest] = []

    async def takeoff(_: Any, request: TakeoffRequest) -> Any:
        captured.append(request)
        return SimpleNamespace(warnings=[])  # a dry run that checked everything

    async def nothing(*_: Any, **__: Any) -> None:
        return None

    monkeypatch.setattr(flight_reconciler, "takeoff", takeoff)
    monkeypatch.setattr(flight_reconciler, "mark_in_progress", nothing)
    context = SimpleNamespace(
        modules=Modules(), flight_defaults=FlightDefaults(), gateway="controller-gateway", cluster=None, kube=None
    )
    reconciler = FlightReconciler(cast(Any, context), kind, cast(Any, None))
    target = SimpleNamespace(remote=False, gateway="controller-gateway", cluster=None)
    spec = FlightSpec.model_validate(obj["spec"])
    await reconciler._takeoff(obj, spec, ModeState(), LookupTracker(), cast(Any, target))
    assert len(captured) == 1
    return captured[0]


async def webhook_request(obj: Object, monkeypatch: pytest.MonkeyPatch) -> TakeoffRequest:
    captured: list[TakeoffRequest] = []

    async def takeoff(_: Any, request: TakeoffRequest) -> Any:
        captured.append(request)
        return SimpleNamespace(warnings=[])  # a dry run that checked everything

    monkeypatch.setattr(validation, "takeoff", takeoff)
    monkeypatch.setattr(validation, "_gateway", lambda _: "webhook-gateway")
    services = SimpleNamespace(modules=Modules(), cluster=None, defaults=FlightDefaults())
    review = Review(
        "admission.k8s.io/v1",
        "AdmissionReview",
        {"operation": "CREATE", "kind": {"kind": obj["kind"]}, "object": obj, "userInfo": {"username": "someone"}},
    )
    verdict = await admit_flight(cast(Any, services), review)
    assert verdict.allowed, verdict
    assert len(captured) == 1
    return captured[0]


@pytest.mark.parametrize("kind", ["Flight", "ClusterFlight"])
@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"input": "{}", "args": ["--x"], "clusterAccess": True, "resourceAccessMatchers": ["Secret"]},
        {"timeout": "30s", "maxMemoryMib": 64, "historyCapSize": 4, "prune": {"crds": True}},
    ],
)
async def test_controller_and_webhook_build_the_same_flight_request(
    kind: str, spec: Object, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = flight(kind, **spec)
    real = await controller_request(obj, kind, monkeypatch)
    dry = await webhook_request(obj, monkeypatch)
    assert dry.dry_run
    assert not real.dry_run
    assert comparable(dry) == comparable(real)
    assert real.cross_namespace == (kind == "ClusterFlight")

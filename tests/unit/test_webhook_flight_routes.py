"""How the flight routes turn a decision into the answer (``atc_webhook.routers.flights.checked``).

The checks are performed in order; the first denial is the answer and stops the rest; when none
denies, the decision's verdict is. ``run_check`` is replaced by a recorder, so no module or API runs;
the SubjectAccessReviews (``atc_webhook.validation``) are checked against a recording API client.
The stage-aware dry run behind the warnings (``atc.release.takeoff._dry_run``) runs against a
recording ``apply_all``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, cast

import pytest

from atc.k8s.client import KubeError
from atc.model.target import TargetRef
from atc.model.types import Object
from atc.release import takeoff
from atc.release.takeoff import Cluster, TakeoffError, TakeoffRequest
from atc.release.targets import TargetError
from atc_webhook import validation
from atc_webhook.admission import AdmissionHTTPError, Review, Verdict, allow, deny, review_response
from atc_webhook.decisions import AuthorizeOverrides, AuthorizeTargetSecret, Check, DryRunCrd, Outcome
from atc_webhook.routers import flights

AUTHORIZE = AuthorizeOverrides({"username": "bob"})
CRD = DryRunCrd({"metadata": {"name": "backends.examples.com"}})
SERVICES = cast(Any, object())


def recording(monkeypatch: pytest.MonkeyPatch, *answers: tuple[Check, Verdict | None]) -> list[Check]:
    """Make ``run_check`` answer each check as ``answers`` say; returns the checks it is asked, in order."""
    performed: list[Check] = []

    async def run_check(services: Any, check: Check) -> Verdict | None:
        assert services is SERVICES
        performed.append(check)
        return next(answer for known, answer in answers if known is check)

    monkeypatch.setattr(flights, "run_check", run_check)
    return performed


async def test_without_a_denial_the_decision_is_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    performed = recording(monkeypatch, (AUTHORIZE, None), (CRD, None))
    verdict = await flights.checked(SERVICES, Outcome(allow("admission skipped"), (AUTHORIZE, CRD)))
    assert verdict == allow("admission skipped")
    assert performed == [AUTHORIZE, CRD]


async def test_the_first_denial_is_the_answer_and_stops_the_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    forbidden = deny("Forbidden", "user does not have permissions to create or update override annotations")
    performed = recording(monkeypatch, (AUTHORIZE, forbidden), (CRD, deny("Invalid", "never asked")))
    verdict = await flights.checked(SERVICES, Outcome(allow(), (AUTHORIZE, CRD)))
    assert verdict == forbidden
    assert performed == [AUTHORIZE]


async def test_a_decision_without_checks_performs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    performed = recording(monkeypatch)
    denial = deny("BadRequest", 'time: invalid duration "forever"')
    assert await flights.checked(SERVICES, Outcome(denial)) == denial
    assert performed == []


async def test_warnings_of_checks_that_passed_join_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    skipped = Verdict(True, warnings=("dry run skipped Gadget/g1: its kind is defined by an earlier stage",))
    recording(monkeypatch, (AUTHORIZE, None), (CRD, skipped))
    verdict = await flights.checked(SERVICES, Outcome(allow(), (AUTHORIZE, CRD)))
    assert verdict.allowed
    assert verdict.warnings == skipped.warnings


def test_warnings_reach_the_admission_response() -> None:
    review = Review("admission.k8s.io/v1", "AdmissionReview", {"uid": "u-1"})
    answer = review_response(review, Verdict(True, warnings=("one", "two")))
    assert answer["response"]["warnings"] == ["one", "two"]
    assert "warnings" not in review_response(review, allow())["response"]


# ----------------------------------------------------------------------------------------------- stage-aware dry run
GADGETS: Object = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.stages.test"},
    "spec": {
        "group": "stages.test",
        "names": {"kind": "Gadget", "plural": "gadgets"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 0}}}
                        },
                    }
                },
            }
        ],
    },
}


def gadget(size: Any) -> Object:
    return {
        "apiVersion": "stages.test/v1",
        "kind": "Gadget",
        "metadata": {"name": "g1", "namespace": "ns"},
        "spec": {"size": size},
    }


def dry_running(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The API server serves no Gadget yet; returns the kinds each ``apply_all`` dry run is sent."""
    sent: list[list[str]] = []

    async def served(mapper: Any, obj: Object) -> bool:
        return bool(obj["kind"] != "Gadget")

    async def apply_all(kube: Any, mapper: Any, objects: list[Object], *, dry_run: bool, **_: Any) -> list[Object]:
        assert dry_run
        sent.append([obj["kind"] for obj in objects])
        return objects

    monkeypatch.setattr(takeoff, "_served", served)
    monkeypatch.setattr(takeoff, "apply_all", apply_all)
    return sent


CLUSTER = Cluster(cast(Any, None), cast(Any, None), cast(Any, None))


async def test_a_kind_of_an_earlier_stage_crd_is_checked_against_its_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = dry_running(monkeypatch)
    warnings = await takeoff._dry_run(CLUSTER, [[GADGETS], [gadget(7)]])
    assert warnings == [
        "ns/stages.test/v1/gadget/g1 checked against the schema of its CustomResourceDefinition from an earlier stage"
        " (defaults, CEL rules and admission webhooks are not run before it exists)"
    ]
    assert sent == [["CustomResourceDefinition"], []]


@pytest.mark.parametrize(
    ("size", "problem"),
    [(-1, "spec.size: must be greater than or equal to 0"), ("big", "spec.size: must be of type integer")],
)
async def test_an_object_its_earlier_stage_crd_rejects_fails_the_dry_run(
    monkeypatch: pytest.MonkeyPatch, size: Any, problem: str
) -> None:
    sent = dry_running(monkeypatch)
    with pytest.raises(TakeoffError) as failed:
        await takeoff._dry_run(CLUSTER, [[GADGETS], [gadget(size)]])
    assert str(failed.value) == f"failed to apply resources: dry run: ns/stages.test/v1/gadget/g1: {problem}"
    assert sent == [["CustomResourceDefinition"]]  # the failing stage is not sent


async def test_without_a_schema_for_its_version_the_object_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = dry_running(monkeypatch)
    schemaless = {**GADGETS, "spec": {**GADGETS["spec"], "versions": [{"name": "v1", "served": True}]}}
    warnings = await takeoff._dry_run(CLUSTER, [[schemaless], [gadget("big")]])
    assert warnings == ["dry run skipped ns/stages.test/v1/gadget/g1: its kind is defined by an earlier stage"]
    assert sent == [["CustomResourceDefinition"], []]


async def test_an_object_of_a_served_kind_or_of_the_same_stage_is_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = dry_running(monkeypatch)
    assert await takeoff._dry_run(CLUSTER, [[GADGETS, gadget(-1)]]) == []  # the API server answers for it
    assert sent == [["CustomResourceDefinition", "Gadget"]]


# ----------------------------------------------------------------------------------------------- access reviews
USER = {"username": "bob", "uid": "bob-uid", "groups": ["devs", "system:authenticated"]}


class ReviewingKube:
    """Answers SubjectAccessReviews with ``allowed`` (or fails them) and records what it was asked."""

    def __init__(self, allowed: bool, failure: KubeError | None = None) -> None:
        self.allowed = allowed
        self.failure = failure
        self.asked: list[tuple[str, str, Object]] = []

    async def request(self, method: str, path: str, *, body: Any = None, **_: Mapping[str, str]) -> Object:
        self.asked.append((method, path, body))
        if self.failure is not None:
            raise self.failure
        return {**body, "status": {"allowed": self.allowed}}


def services_with(kube: ReviewingKube) -> Any:
    return cast(Any, SimpleNamespace(kube=kube))


def access_review(attributes: Object) -> tuple[str, str, Object]:
    spec = {"user": "bob", "uid": "bob-uid", "groups": ["devs", "system:authenticated"]}
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {**spec, "resourceAttributes": attributes},
    }
    return ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)


SECRET_GET = {"verb": "get", "group": "", "version": "v1", "resource": "secrets", "namespace": "fleet", "name": "kc"}


async def test_the_target_secret_review_asks_whether_the_user_may_get_it() -> None:
    kube = ReviewingKube(allowed=True)
    assert await validation.run_check(services_with(kube), AuthorizeTargetSecret(USER, "fleet", "kc")) is None
    assert kube.asked == [access_review(SECRET_GET)]


async def test_a_user_who_may_not_read_the_secret_is_denied() -> None:
    kube = ReviewingKube(allowed=False)
    verdict = await validation.run_check(services_with(kube), AuthorizeTargetSecret(USER, "fleet", "kc"))
    assert verdict == deny(
        "Forbidden", "user may not read the kubeconfig Secret fleet/kc that atc.yoke.cd/kubeconfig-secret names"
    )


async def test_a_review_that_cannot_be_made_fails_the_call() -> None:
    kube = ReviewingKube(allowed=True, failure=KubeError(503, "unavailable"))
    with pytest.raises(AdmissionHTTPError) as failure:
        await validation.run_check(services_with(kube), AuthorizeTargetSecret(USER, "fleet", "kc"))
    assert failure.value.status == 500


async def test_the_override_review_still_asks_for_airway_updates() -> None:
    kube = ReviewingKube(allowed=False)
    verdict = await validation.run_check(services_with(kube), AuthorizeOverrides(USER))
    assert verdict == deny("Forbidden", "user does not have permissions to create or update override annotations")
    airways = {"verb": "update", "group": "yoke.cd", "version": "v1alpha1", "resource": "airways"}
    assert kube.asked == [access_review(airways)]


def targeted_flight_review(secret: str) -> Review:
    flight = {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "ClusterFlight",
        "metadata": {"name": "cf", "annotations": {"atc.yoke.cd/kubeconfig-secret": secret}},
        "spec": {"wasmUrl": "https://example.com/flight.wasm"},
    }
    request = {"uid": "u-1", "operation": "CREATE", "userInfo": USER, "object": flight}
    return Review("admission.k8s.io/v1", "AdmissionReview", request)


async def test_a_targeted_cluster_flight_the_user_may_not_read_is_denied_before_any_dry_run() -> None:
    kube = ReviewingKube(allowed=False)
    verdict = await flights.admit_flight(services_with(kube), targeted_flight_review("fleet/kc"))
    assert kube.asked == [access_review(SECRET_GET)]  # no module load, no dry-run takeoff
    assert (verdict.allowed, verdict.reason) == (False, "Forbidden")


# ----------------------------------------------------------------------------------------------- dry runs there
class Clusters:
    """``RemoteClusters`` as a dry run uses it: the cluster of a Secret, or why there is none."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[TargetRef] = []

    async def cluster(self, ref: TargetRef) -> Any:
        self.asked.append(ref)
        if isinstance(self.answer, BaseException):
            raise self.answer
        if self.answer == "hang":
            await asyncio.sleep(3600)
        return self.answer


REF = TargetRef("fleet", "kc")


async def test_a_dry_run_without_a_target_stays_here() -> None:
    here: Any = SimpleNamespace(kube="kube", mapper="mapper")
    place = await validation._place(cast(Any, SimpleNamespace(cluster=here, kube="kube")), None)
    assert isinstance(place, validation._Place)
    assert place.cluster is here


async def test_a_targeted_dry_run_goes_to_the_secrets_cluster_without_owner_references(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    there: Any = SimpleNamespace(kube="remote-kube", mapper="remote-mapper")
    clusters = Clusters(there)
    place = await validation._place(cast(Any, SimpleNamespace(targets=clusters)), REF)
    assert isinstance(place, validation._Place)
    assert clusters.asked == [REF]
    assert place.cluster is there
    sent: list[tuple[Any, TakeoffRequest]] = []

    async def takeoff(cluster: Any, request: TakeoffRequest) -> Any:
        sent.append((cluster, request))
        return SimpleNamespace(warnings=[])

    monkeypatch.setattr(validation, "takeoff", takeoff)
    request = TakeoffRequest(
        release="r", namespace="ns", module=cast(Any, None), source_url="", stdin=b"", owner_references=[{"uid": "u"}]
    )
    await place.takeoff(request)
    assert sent[0][0] is there
    assert sent[0][1].owner_references == ()


@pytest.mark.parametrize(
    ("answer", "warning"),
    [
        (
            TargetError("kubeconfig Secret fleet/kc not found"),
            "dry run skipped: kubeconfig Secret fleet/kc not found",
        ),
        ("hang", "dry run skipped: the target cluster of kubeconfig Secret fleet/kc did not answer within 3s"),
    ],
    ids=["unusable", "no answer"],
)
async def test_a_target_that_cannot_be_used_admits_with_a_warning(
    answer: Any, warning: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validation, "TARGET_CONNECT_SECONDS", 0.05)
    place = await validation._place(cast(Any, SimpleNamespace(targets=Clusters(answer))), REF)
    expected = warning.replace("within 3s", "within 0s")
    assert place == Verdict(True, warnings=(expected,))


async def test_a_dry_run_there_that_takes_too_long_admits_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    async def slow(*_: Any) -> Any:
        await asyncio.sleep(3600)

    monkeypatch.setattr(validation, "takeoff", slow)
    monkeypatch.setattr(validation, "TARGET_DRY_RUN_SECONDS", 0.05)
    place = validation._Place(cast(Any, None), cast(Any, None), REF)
    request = TakeoffRequest(release="r", namespace="ns", module=cast(Any, None), source_url="", stdin=b"")
    with pytest.raises(TimeoutError):
        await place.takeoff(request)
    assert validation._timed_out(REF).warnings == (
        "dry run skipped: the target cluster of kubeconfig Secret fleet/kc did not finish the dry run within 0s",
    )

"""How the flight routes turn a decision into the answer (``atc_webhook.routers.flights.checked``).

The checks are performed in order; the first denial is the answer and stops the rest; when none
denies, the decision's verdict is. ``run_check`` is replaced by a recorder, so no module or API runs;
the SubjectAccessReviews (``atc_webhook.validation``) are checked against a recording API client.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, cast

import pytest

from atc.k8s.client import KubeError
from atc.model.types import Object
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


@pytest.mark.parametrize("may_read", [True, False])
async def test_a_targeted_cluster_flight_is_answered_by_the_access_review_alone(may_read: bool) -> None:
    kube = ReviewingKube(allowed=may_read)
    verdict = await flights.admit_flight(services_with(kube), targeted_flight_review("fleet/kc"))
    assert kube.asked == [access_review(SECRET_GET)]  # no module load, no dry-run takeoff
    if may_read:
        assert verdict.allowed
        assert verdict.warnings == (
            "dry run skipped: the resources deploy to the cluster of kubeconfig Secret fleet/kc",
        )
    else:
        assert (verdict.allowed, verdict.reason) == (False, "Forbidden")

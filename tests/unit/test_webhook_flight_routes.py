"""How the flight routes turn a decision into the answer (``atc_webhook.routers.flights.checked``).

The checks are performed in order; the first denial is the answer and stops the rest; when none
denies, the decision's verdict is. ``run_check`` is replaced by a recorder, so no module or API runs.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from atc_webhook.admission import Review, Verdict, allow, deny, review_response
from atc_webhook.decisions import AuthorizeOverrides, Check, DryRunCrd, Outcome
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

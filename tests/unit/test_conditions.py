"""Status conditions: apimachinery's SetStatusCondition semantics and yoke's MeetsConditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from atc.model.conditions import find_condition, format_time, make_condition, meets_conditions, set_status_condition

T0 = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_make_condition_serializes_in_apimachinery_order_and_omits_generation_zero() -> None:
    assert list(make_condition("Ready", "True", "Ready", "ok", 3)) == [
        "type",
        "status",
        "observedGeneration",
        "reason",
        "message",
    ]
    assert "observedGeneration" not in make_condition("Ready", "True", "Ready", "ok")


def test_format_time_is_rfc3339_utc_seconds() -> None:
    assert format_time(T0) == "2026-11-23T10:00:00Z"
    assert format_time(datetime(2026, 11, 23, 12, 0, tzinfo=timezone(timedelta(hours=2)))) == "2026-11-23T10:00:00Z"


def test_missing_condition_is_appended_with_transition_time() -> None:
    conditions: list[dict[str, Any]] = []
    assert set_status_condition(conditions, make_condition("Ready", "False", "InProgress", "go", 2), T0)
    assert conditions == [
        {
            "type": "Ready",
            "status": "False",
            "observedGeneration": 2,
            "lastTransitionTime": "2026-11-23T10:00:00Z",
            "reason": "InProgress",
            "message": "go",
        }
    ]
    assert list(conditions[0]) == ["type", "status", "observedGeneration", "lastTransitionTime", "reason", "message"]


def test_given_transition_time_wins_over_now() -> None:
    conditions: list[dict[str, Any]] = []
    condition = {**make_condition("Ready", "True", "Ready", "ok"), "lastTransitionTime": "2020-01-01T00:00:00Z"}
    set_status_condition(conditions, condition, T0)
    assert conditions[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"


def test_without_now_the_current_time_is_used() -> None:
    conditions: list[dict[str, Any]] = []
    before = datetime.now(UTC).replace(microsecond=0)
    set_status_condition(conditions, make_condition("Ready", "True", "Ready", "ok"))
    stamped = datetime.strptime(conditions[0]["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= stamped <= datetime.now(UTC)


def test_status_change_moves_transition_time() -> None:
    conditions: list[dict[str, Any]] = []
    set_status_condition(conditions, make_condition("Ready", "False", "InProgress", "go", 1), T0)
    assert set_status_condition(conditions, make_condition("Ready", "True", "Ready", "done", 1), T1)
    assert conditions[0]["status"] == "True"
    assert conditions[0]["lastTransitionTime"] == "2026-11-23T10:05:00Z"
    assert (conditions[0]["reason"], conditions[0]["message"]) == ("Ready", "done")


def test_same_status_keeps_transition_time_but_updates_reason_message_generation() -> None:
    conditions: list[dict[str, Any]] = []
    set_status_condition(conditions, make_condition("Ready", "False", "InProgress", "fetching", 1), T0)
    assert set_status_condition(conditions, make_condition("Ready", "False", "InProgress", "taking off", 2), T1)
    assert conditions[0]["lastTransitionTime"] == "2026-11-23T10:00:00Z"
    assert conditions[0]["message"] == "taking off"
    assert conditions[0]["observedGeneration"] == 2


def test_generation_back_to_zero_drops_the_field() -> None:
    conditions: list[dict[str, Any]] = []
    set_status_condition(conditions, make_condition("Ready", "True", "Ready", "ok", 4), T0)
    assert set_status_condition(conditions, make_condition("Ready", "True", "Ready", "ok"), T1)
    assert "observedGeneration" not in conditions[0]


def test_identical_condition_reports_no_change() -> None:
    conditions: list[dict[str, Any]] = []
    set_status_condition(conditions, make_condition("Ready", "True", "Ready", "ok", 1), T0)
    before = [dict(c) for c in conditions]
    assert not set_status_condition(conditions, make_condition("Ready", "True", "Ready", "ok", 1), T1)
    assert conditions == before


def test_other_conditions_are_kept_and_found_by_type() -> None:
    conditions: list[dict[str, Any]] = [{"type": "Custom", "status": "True", "reason": "r", "message": "m"}]
    set_status_condition(conditions, make_condition("Ready", "True", "Ready", "ok"), T0)
    assert [c["type"] for c in conditions] == ["Custom", "Ready"]
    assert find_condition(conditions, "Custom") is conditions[0]
    assert find_condition(conditions, "Missing") is None


def _obj(conditions: Any, generation: int = 3, status: Any = None) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": status if status is not None else {"conditions": conditions},
    }


@pytest.mark.parametrize(
    ("obj", "types", "expected"),
    [
        (_obj([{"type": "Ready", "status": "True"}]), ("Ready",), True),
        (_obj([{"type": "Ready", "status": "False"}]), ("Ready",), False),
        (_obj([{"type": "Ready", "status": "True", "observedGeneration": 3}]), ("Ready",), True),
        (_obj([{"type": "Ready", "status": "True", "observedGeneration": 2}]), ("Ready",), False),
        (_obj([{"type": "Ready", "status": "True", "observedGeneration": 0}], generation=9), ("Ready",), True),
        (_obj([{"type": "A", "status": "True"}]), ("A", "B"), False),
        (_obj([{"type": "A", "status": "True"}, {"type": "B", "status": "True"}]), ("A", "B"), True),
        (_obj([]), (), True),
        ({"metadata": {}}, (), False),
        ({"status": "Ready"}, ("Ready",), False),
        (_obj("not-a-list"), ("Ready",), False),
        (_obj([{"type": "Ready", "status": "True", "observedGeneration": "3"}]), ("Ready",), False),
        ({"status": {}}, ("Ready",), False),
    ],
)
def test_meets_conditions(obj: dict[str, Any], types: tuple[str, ...], expected: bool) -> None:
    assert meets_conditions(obj, *types) is expected

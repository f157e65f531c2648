"""Status conditions as yoke writes and reads them: ``MeetsConditions`` and ``SetStatusCondition``.

Conditions are plain dicts shaped like ``metav1.Condition`` and serialized in
apimachinery's field order: ``{type, status, observedGeneration (omitted if 0),
lastTransitionTime (RFC3339 UTC, seconds), reason, message}``.

- ``set_status_condition`` has ``meta.SetStatusCondition`` semantics: the
  Airway, Flight and instance reconcilers use it before ``UpdateStatus``;
- ``meets_conditions`` is yoke's ``MeetsConditions``: readiness (built-in and
  custom ``conditions`` rules) and the webhook use it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Condition = dict[str, Any]


def format_time(moment: datetime) -> str:
    """RFC3339 in UTC with whole seconds, as ``metav1.Time`` marshals (``2026-11-23T10:00:00Z``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_condition(
    type: str,
    status: str,
    reason: str,
    message: str,
    observed_generation: int = 0,
) -> Condition:
    """A condition without ``lastTransitionTime`` (``set_status_condition`` fills it in)."""
    condition: Condition = {"type": type, "status": status}
    if observed_generation:
        condition["observedGeneration"] = observed_generation
    condition["reason"] = reason
    condition["message"] = message
    return condition


def find_condition(conditions: list[Condition], type: str) -> Condition | None:
    """The first condition of ``type``, as ``meta.FindStatusCondition``."""
    for condition in conditions:
        if isinstance(condition, dict) and condition.get("type") == type:
            return condition
    return None


def _normalized(condition: Condition, transition: str) -> Condition:
    """``condition`` in apimachinery's field order with its ``lastTransitionTime``."""
    result: Condition = {"type": condition.get("type", ""), "status": condition.get("status", "")}
    if generation := _generation_of(condition):
        result["observedGeneration"] = generation
    result["lastTransitionTime"] = transition
    result["reason"] = condition.get("reason", "")
    result["message"] = condition.get("message", "")
    return result


def _generation_of(condition: Condition) -> int:
    value = condition.get("observedGeneration", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _transition_time(condition: Condition, now: datetime | None) -> str:
    given = condition.get("lastTransitionTime")
    if given:
        return format_time(given) if isinstance(given, datetime) else str(given)
    return format_time(now or datetime.now(UTC))


def _update_field(existing: Condition, key: str, value: str) -> bool:
    if existing.get(key, "") == value:
        return False
    existing[key] = value
    return True


def _update_generation(existing: Condition, generation: int) -> bool:
    if _generation_of(existing) == generation:
        return False
    if generation:
        existing["observedGeneration"] = generation
    else:
        existing.pop("observedGeneration", None)
    return True


def set_status_condition(conditions: list[Condition], condition: Condition, now: datetime | None = None) -> bool:
    """Add or update ``condition`` in ``conditions`` (in place); return whether anything changed.

    A new type is appended; an existing one changes ``lastTransitionTime`` only
    when its status changes (to the condition's own time, else ``now``, else the
    current time), and takes the new reason, message and observedGeneration.
    """
    existing = find_condition(conditions, str(condition.get("type", "")))
    if existing is None:
        conditions.append(_normalized(condition, _transition_time(condition, now)))
        return True
    changed = False
    if existing.get("status") != condition.get("status", ""):
        existing["status"] = condition.get("status", "")
        existing["lastTransitionTime"] = _transition_time(condition, now)
        changed = True
    changed = _update_field(existing, "reason", str(condition.get("reason", ""))) or changed
    changed = _update_field(existing, "message", str(condition.get("message", ""))) or changed
    return _update_generation(existing, _generation_of(condition)) or changed


def object_generation(obj: dict[str, Any]) -> int:
    """``metadata.generation``, 0 when absent."""
    metadata = obj.get("metadata")
    value = metadata.get("generation", 0) if isinstance(metadata, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _typed_conditions(status: dict[str, Any]) -> list[Condition] | None:
    """``status.conditions`` if it decodes as ``[]metav1.Condition`` (else None, as yoke's failed conversion)."""
    conditions = status.get("conditions")
    if conditions is None:
        return []
    if not isinstance(conditions, list) or not all(isinstance(item, dict) for item in conditions):
        return None
    for item in conditions:
        generation = item.get("observedGeneration", 0)
        if not isinstance(generation, int) or isinstance(generation, bool):
            return None
        if not all(isinstance(item.get(key, ""), str) for key in ("type", "status", "reason", "message")):
            return None
    return conditions


def _meets(condition: Condition | None, generation: int) -> bool:
    if condition is None:
        return False
    observed = _generation_of(condition)
    if observed > 0 and observed != generation:
        return False
    return condition.get("status") == "True"


def meets_conditions(obj: dict[str, Any], *types: str) -> bool:
    """Whether every condition type is present with status ``True`` (yoke's ``MeetsConditions``).

    ``status`` must be an object; a condition whose ``observedGeneration`` is
    set (> 0) must match ``metadata.generation``.
    """
    status = obj.get("status")
    if not isinstance(status, dict):
        return False
    conditions = _typed_conditions(status)
    if conditions is None:
        return False
    generation = object_generation(obj)
    return all(_meets(find_condition(conditions, wanted), generation) for wanted in types)

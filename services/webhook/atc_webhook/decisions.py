"""Every admission decision, as pure functions: a review and the cached facts it needs in, an ``Outcome`` out.

An ``Outcome`` is a ``Verdict`` and the effects the route must perform, in order. No function here
reads a cache, calls the API server, loads a module or awaits: the routes in ``atc_webhook.routers``
look the facts up beforehand, call a ``decide_*`` function, then perform its effects
(docs/webhook.md, "How a route answers").

Effects:
- ``SubmitSignal(change)``: queue a child-changed Event; it never changes the verdict;
- the checks (``Check``): ``AuthorizeOverrides``, ``ValidateAirwayModules``, ``DryRunCrd``,
  ``DryRunFlight``, ``DryRunInstance``. ``atc_webhook.validation.run_check`` performs one; the first
  check that denies is the answer and the checks after it are not run; when none denies, the
  outcome's verdict is the answer.

Decisions:
- ``decide_child_change(review, facts)``: ``/validations/resources``; ``child_lookup(review)`` and
  ``desired_key(lookup, instance)`` say which cache entries ``facts`` must hold;
- ``decide_airway(review)``, ``decide_flight(review)``, ``decide_instance(review, airway)``: the Airway,
  Flight and per-Airway instance webhooks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import ValidationError

from atc.k8s.refs import resource_ref
from atc.k8s.signals import ChildChange
from atc.model.airway_template import airway_crd
from atc.model.constants import (
    ANNOTATION_INSTANCE_REF,
    ANNOTATION_OVERRIDE_FLIGHT,
    ANNOTATION_OVERRIDE_MODE,
    ANNOTATION_RELEASE,
    ANNOTATION_RELEASE_NAMESPACE,
)
from atc.model.gocompat import DurationError
from atc.model.specs import AirwaySpec, FlightSpec
from atc.model.types import Object
from atc.release.invocation import timeout_seconds

from .admission import Review, Verdict, allow, deny
from .caches import InstanceInfo
from .comparison import annotations_message, annotations_of, changed_yoke_annotations, is_noop_update, modifies_desired

KUBE_SYSTEM_SERVICE_ACCOUNTS = "system:serviceaccount:kube-system:"
CANNOT_DELETE = "cannot delete resources managed by Air-Traffic-Controller"
CANNOT_MODIFY = "cannot modify flight sub-resources"
SIGNALLING_MODES = frozenset({"dynamic", "subscription"})
FLIGHT_DRY_RUN_PASSED = "successful dryrun validation"
ADMISSION_SKIPPED = "admission skipped"

EffectT = TypeVar("EffectT")


@dataclass(frozen=True)
class Outcome(Generic[EffectT]):
    """A decision: the verdict, and the effects to perform before answering with it."""

    verdict: Verdict
    effects: tuple[EffectT, ...] = ()


# ----------------------------------------------------------------------------------------------- effects
@dataclass(frozen=True)
class SubmitSignal:
    """Queue the child-changed Event for ``change`` (``atc_webhook.signals.SignalWriter.submit``)."""

    change: ChildChange


@dataclass(frozen=True)
class AuthorizeOverrides:
    """A SubjectAccessReview: may ``user`` (the review's ``userInfo``) update Airways? If not, deny Forbidden."""

    user: Object


@dataclass(frozen=True)
class ValidateAirwayModules:
    """Fetch and verify the Airway's flight and converter modules; deny Invalid if one is unusable."""

    spec: AirwaySpec


@dataclass(frozen=True)
class DryRunCrd:
    """Server-side dry-run apply of the CRD the Airway's template declares; deny Invalid if refused."""

    crd: Object


@dataclass(frozen=True)
class DryRunFlight:
    """Load the Flight's module and dry-run its takeoff; deny with the reason if either fails."""

    flight: Object
    kind: str
    spec: FlightSpec
    timeout: float | None


@dataclass(frozen=True)
class DryRunInstance:
    """Load the instance's flight module and dry-run its takeoff; deny with the reason if either fails."""

    airway: Object
    spec: AirwaySpec
    instance: Object


Check = AuthorizeOverrides | ValidateAirwayModules | DryRunCrd | DryRunFlight | DryRunInstance


# ----------------------------------------------------------------------------------------------- children
@dataclass(frozen=True)
class DesiredKey:
    """Where the desired state of a child is: its release's active revision, then apiVersion, kind and name."""

    release: str
    release_namespace: str
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class ChildLookup:
    """The cache entries a child review needs: its instance, and its desired object unless it is a deletion."""

    instance_ref: str
    desired: DesiredKey | None


@dataclass(frozen=True)
class ChildFacts:
    """What the caches hold for a child review (None: not cached, or not looked up)."""

    instance: InstanceInfo | None = None
    desired: Object | None = None


def _being_deleted(obj: Object) -> bool:
    """Whether ``obj`` has a deletionTimestamp: an update of it counts as a deletion."""
    metadata = obj.get("metadata")
    return isinstance(metadata, dict) and bool(metadata.get("deletionTimestamp"))


def _name(obj: Object) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("name", "")) if isinstance(metadata, dict) else ""


def _verdict_without_caches(review: Review) -> Verdict | None:
    """The answer when no cache is needed: yoke's annotations changed, a no-op, or no instanceRef."""
    prev, next_ = review.old_object, review.object
    if next_ is not None:
        changed = changed_yoke_annotations(prev, next_)
        if changed:
            return deny("BadRequest", annotations_message(changed))
        if prev is not None and is_noop_update(prev, next_):
            return allow()
    if prev is None or not annotations_of(prev).get(ANNOTATION_INSTANCE_REF, ""):
        return allow()
    return None


def child_lookup(review: Review) -> ChildLookup | None:
    """What to look up in the caches for ``review``; None when it is answered without them."""
    prev, next_ = review.old_object, review.object
    if _verdict_without_caches(review) is not None or prev is None:
        return None
    annotations = annotations_of(prev)
    desired = None
    if next_ is not None and not _being_deleted(next_):
        desired = DesiredKey(
            annotations.get(ANNOTATION_RELEASE, ""),
            annotations.get(ANNOTATION_RELEASE_NAMESPACE, ""),
            str(next_.get("apiVersion", "")),
            str(next_.get("kind", "")),
            _name(next_),
        )
    return ChildLookup(annotations.get(ANNOTATION_INSTANCE_REF, ""), desired)


def desired_key(lookup: ChildLookup, instance: InstanceInfo | None) -> DesiredKey | None:
    """The desired object to look up once the instance is known: only static mode compares with it."""
    if instance is None or instance.mode != "static":
        return None
    return lookup.desired


def decide_child_change(review: Review, facts: ChildFacts) -> Outcome[SubmitSignal]:
    """``/validations/resources``: the verdict on an UPDATE or DELETE of a child, and the signal to send."""
    early = _verdict_without_caches(review)
    if early is not None:
        return Outcome(early)
    prev, instance = review.old_object, facts.instance
    if prev is None or instance is None:
        return Outcome(allow())
    if instance.mode == "static":
        return Outcome(static_verdict(review, facts.desired))
    if instance.mode in SIGNALLING_MODES and not review.dry_run:
        return Outcome(allow(), (SubmitSignal(child_change(review, instance, prev)),))
    return Outcome(allow())


def static_verdict(review: Review, desired: Object | None) -> Verdict:
    """Static mode: no deletion but by kube-system's controllers; no change to what the flight set."""
    next_ = review.object
    if next_ is None or _being_deleted(next_):
        if review.username.startswith(KUBE_SYSTEM_SERVICE_ACCOUNTS):
            return allow()
        return deny("BadRequest", CANNOT_DELETE)
    if desired is None or not modifies_desired(next_, desired):
        return allow()
    return deny("BadRequest", CANNOT_MODIFY)


def child_change(review: Review, instance: InstanceInfo, prev: Object) -> ChildChange:
    """The signal for an admitted change of ``prev`` (the child as it was)."""
    metadata = prev.get("metadata")
    version = str(metadata.get("resourceVersion", "")) if isinstance(metadata, dict) else ""
    return ChildChange(
        instance_api_version=instance.airway.api_version,
        instance_kind=instance.airway.kind,
        instance_namespace=instance.namespace,
        instance_name=instance.name,
        instance_uid=instance.uid,
        child_ref=resource_ref(prev),
        child_resource_version=version,
        operation=review.operation,
        username=review.username,
    )


# ----------------------------------------------------------------------------------------------- airways
def decide_airway(review: Review) -> Outcome[Check]:
    """``/validations/airways.yoke.cd``: the spec parses, its modules load, its CRD passes a dry run.

    An Airway being deleted is admitted without checks, so its finalizer can always be removed
    (docs/compatibility.md).
    """
    airway = review.object or {}
    if (airway.get("metadata") or {}).get("deletionTimestamp"):
        return Outcome(allow())
    try:
        spec = AirwaySpec.model_validate(airway.get("spec") or {})
    except ValueError as exc:
        return Outcome(deny("Invalid", f"invalid airway spec: {spec_problem(exc)}"))
    crd = airway_crd(airway, copy.deepcopy(spec.template))
    return Outcome(allow(), (ValidateAirwayModules(spec), DryRunCrd(crd)))


def spec_problem(exc: ValueError) -> str:
    """Where and why a spec is invalid, without the submitted values (untrusted; docs/security.md)."""
    if not isinstance(exc, ValidationError):
        return "the spec is not valid"
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    return "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'spec'}: {e['msg']}" for e in problems[:5])


# ----------------------------------------------------------------------------------------------- flights
def decide_flight(review: Review) -> Outcome[Check]:
    """``/validations/flights.yoke.cd``: the spec and its timeout parse, then a dry-run takeoff."""
    flight = review.object or {}
    kind = str(flight.get("kind", "Flight"))
    try:
        spec = FlightSpec.model_validate(flight.get("spec") or {})
        timeout = timeout_seconds(spec.timeout)
    except ValidationError as exc:
        return Outcome(deny("BadRequest", f"invalid flight spec: {spec_problem(exc)}"))
    except (ValueError, DurationError) as exc:  # yoke's duration messages
        return Outcome(deny("BadRequest", str(exc)))
    return Outcome(allow(FLIGHT_DRY_RUN_PASSED), (DryRunFlight(flight, kind, spec, timeout),))


# ----------------------------------------------------------------------------------------------- instances
def override_annotations(obj: Object | None) -> tuple[str, str]:
    """The object's ``overrides.yoke.cd/flight`` and ``overrides.yoke.cd/mode`` ("" when absent)."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(ANNOTATION_OVERRIDE_FLIGHT, ""), annotations.get(ANNOTATION_OVERRIDE_MODE, "")


def overrides_changed(review: Review) -> bool:
    """An UPDATE that changes an override annotation, or any other operation that sets one."""
    overrides = override_annotations(review.object)
    if review.operation == "UPDATE":
        return overrides != override_annotations(review.old_object)
    return any(overrides)


def decide_instance(review: Review, airway: Object) -> Outcome[Check]:
    """``/validations/{airway}``: override annotations need Airway update rights, then a dry-run takeoff.

    ``airway`` is the cached Airway the instance belongs to; with ``skipAdmissionWebhook`` only the
    override check is made.
    """
    checks: tuple[Check, ...] = ()
    if overrides_changed(review):
        checks = (AuthorizeOverrides(review.request.get("userInfo") or {}),)
    spec = AirwaySpec.model_validate(airway["spec"])
    if spec.skip_admission_webhook:
        return Outcome(allow(ADMISSION_SKIPPED), checks)
    return Outcome(allow(), (*checks, DryRunInstance(airway, spec, review.object or {})))

"""Every admission decision, as pure functions: a review and the cached facts it needs in, an ``Outcome`` out.

An ``Outcome`` is a ``Verdict`` and the effects the route must perform, in order. No function here
reads a cache, calls the API server, loads a module or awaits: the routes in ``atc_webhook.routers``
look the facts up beforehand, call a ``decide_*`` function, then perform its effects
(docs/webhook.md, "How a route answers").

Effects:
- ``SubmitSignal(change)``: queue a child-changed Event; it never changes the verdict;
- the checks (``Check``): ``AuthorizeOverrides``, ``AuthorizeTargetSecret``, ``ValidateAirwayModules``,
  ``DryRunCrd``, ``DryRunFlight``, ``DryRunInstance``. ``atc_webhook.validation.run_check`` performs
  one; the first check that denies is the answer and the checks after it are not run; when none
  denies, the outcome's verdict is the answer.

Decisions:
- ``decide_child_change(review, facts)``: ``/validations/resources``; ``child_lookup(review)`` and
  ``desired_key(lookup, instance)`` say which cache entries ``facts`` must hold; the instance a
  child names may be a Flight or ClusterFlight (its mode is its own annotation);
- ``decide_airway(review)``, ``decide_flight(review)``, ``decide_instance(review, airway)``: the Airway,
  Flight and per-Airway instance webhooks. Flights and instances may name a kubeconfig Secret
  (``atc.model.target``, ``target_rules``): it must be well-formed, cannot change, the requesting
  user must be able to read it (``AuthorizeTargetSecret``, asked when it is set on CREATE or
  changes), and their dry-run takeoff goes to that Secret's cluster (skipped with a warning when
  that cluster cannot be used).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
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
from atc.model.specs import MODES, AirwaySpec, FlightSpec, Mode, effective_mode
from atc.model.target import (
    ANNOTATION_KUBECONFIG_KEY,
    ANNOTATION_KUBECONFIG_SECRET,
    TargetRef,
    TargetRefError,
    target_annotations,
    target_ref,
)
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
INVALID_FLIGHT_MODE = f"{ANNOTATION_OVERRIDE_MODE} must be one of: {', '.join(MODES)}"
TARGET_CANNOT_CHANGE = (
    f"{ANNOTATION_KUBECONFIG_SECRET} and {ANNOTATION_KUBECONFIG_KEY} cannot change: "
    "delete the object and create it again"
)

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
class AuthorizeTargetSecret:
    """A SubjectAccessReview: may ``user`` get the kubeconfig Secret ``namespace/name``? If not, deny Forbidden."""

    user: Object
    namespace: str
    name: str


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
    """Load the Flight's module and dry-run its takeoff; deny with the reason if either fails (a
    targeted Flight's dry run goes to its cluster, as ``DryRunInstance``'s).

    ``mode`` is the Flight's: outside ``standard`` the children carry its ``instanceRef``, as the
    controller's takeoff stamps them.
    """

    flight: Object
    kind: str
    spec: FlightSpec
    timeout: float | None
    mode: Mode = "standard"
    target: TargetRef | None = None  # the kubeconfig Secret of the cluster it deploys to (None: this one)


@dataclass(frozen=True)
class DryRunInstance:
    """Load the instance's flight module and dry-run its takeoff; deny with the reason if either fails.

    ``target``: the kubeconfig Secret of the cluster it deploys to (None: this one); the dry run goes
    there, or is skipped with a warning when that cluster cannot be used.
    """

    airway: Object
    spec: AirwaySpec
    instance: Object
    target: TargetRef | None = None


Check = AuthorizeOverrides | AuthorizeTargetSecret | ValidateAirwayModules | DryRunCrd | DryRunFlight | DryRunInstance


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
    """The desired object to look up once the instance is known: only static mode compares with it.

    A Flight's children name its bare name as their release; its revisions are under its history name
    (``InstanceInfo.history``), so the key follows the Flight itself.
    """
    if instance is None or instance.mode != "static" or lookup.desired is None:
        return None
    history = instance.history
    if history is None:
        return lookup.desired
    release, namespace = history
    return replace(lookup.desired, release=release, release_namespace=namespace)


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


# ----------------------------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """What the kubeconfig Secret annotations decide: a denial, else the Secret (None: this cluster) and checks."""

    denial: Verdict | None = None
    ref: TargetRef | None = None
    checks: tuple[Check, ...] = ()


def target_rules(review: Review) -> Target:
    """The kubeconfig Secret rules of the instance and Flight webhooks (docs/webhook.md).

    - a malformed reference is denied BadRequest with ``TargetRefError``'s message (it names the
      annotation, never its value);
    - an UPDATE may not change either annotation, unless the object is being deleted;
    - when the annotations are set on CREATE, or change, the user must be able to get the Secret
      (``AuthorizeTargetSecret``): naming a Secret makes the controller read it on the user's behalf.
      An unrelated UPDATE asks nothing.

    An object being deleted with a malformed reference is admitted as if it had none, so that
    removing its finalizers never depends on it.
    """
    new = review.object or {}
    deleting = _being_deleted(new)
    changed = review.operation == "UPDATE" and target_annotations(review.old_object) != target_annotations(new)
    try:
        ref = target_ref(new)
    except TargetRefError as exc:
        return Target() if deleting else Target(deny("BadRequest", str(exc)))
    if changed and not deleting:
        return Target(deny("BadRequest", TARGET_CANNOT_CHANGE))
    if ref is None or not (review.operation == "CREATE" or changed):
        return Target(ref=ref)
    user = review.request.get("userInfo") or {}
    return Target(ref=ref, checks=(AuthorizeTargetSecret(user, ref.namespace, ref.name),))


# ----------------------------------------------------------------------------------------------- flights
def flight_mode_problem(flight: Object) -> str:
    """Why the Flight's ``overrides.yoke.cd/mode`` is not usable ("" when it is absent or valid).

    The message names the annotation and the modes, never the value (untrusted; docs/security.md).
    """
    annotations = annotations_of(flight)
    if ANNOTATION_OVERRIDE_MODE not in annotations or annotations[ANNOTATION_OVERRIDE_MODE] in MODES:
        return ""
    return INVALID_FLIGHT_MODE


def decide_flight(review: Review) -> Outcome[Check]:
    """``/validations/flights.yoke.cd``: the spec and its timeout parse, the mode annotation is valid, the
    kubeconfig Secret rules (``target_rules``) hold, then a dry-run takeoff (in the cluster it deploys to).

    A Flight's mode needs no SubjectAccessReview: whoever may write the Flight owns its children. A
    Flight being deleted is not held to its mode annotation, so its finalizers can always be removed.
    """
    flight = review.object or {}
    kind = str(flight.get("kind", "Flight"))
    try:
        spec = FlightSpec.model_validate(flight.get("spec") or {})
        timeout = timeout_seconds(spec.timeout)
    except ValidationError as exc:
        return Outcome(deny("BadRequest", f"invalid flight spec: {spec_problem(exc)}"))
    except (ValueError, DurationError) as exc:  # yoke's duration messages
        return Outcome(deny("BadRequest", str(exc)))
    mode_problem = "" if _being_deleted(flight) else flight_mode_problem(flight)
    if mode_problem:
        return Outcome(deny("BadRequest", mode_problem))
    targeted = target_rules(review)
    if targeted.denial is not None:
        return Outcome(targeted.denial)
    mode = effective_mode(annotations_of(flight), "standard")
    dry_run = DryRunFlight(flight, kind, spec, timeout, mode, targeted.ref)
    return Outcome(allow(FLIGHT_DRY_RUN_PASSED), (*targeted.checks, dry_run))


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
    """``/validations/{airway}``: the kubeconfig Secret rules (``target_rules``), override annotations need
    Airway update rights, then a dry-run takeoff.

    ``airway`` is the cached Airway the instance belongs to; with ``skipAdmissionWebhook`` only the
    access checks are made; an instance that deploys to another cluster is dry-run there.
    """
    targeted = target_rules(review)
    if targeted.denial is not None:
        return Outcome(targeted.denial)
    checks: tuple[Check, ...] = ()
    if overrides_changed(review):
        checks = (AuthorizeOverrides(review.request.get("userInfo") or {}),)
    checks = (*checks, *targeted.checks)
    spec = AirwaySpec.model_validate(airway["spec"])
    if spec.skip_admission_webhook:
        return Outcome(allow(ADMISSION_SKIPPED), checks)
    return Outcome(allow(), (*checks, DryRunInstance(airway, spec, review.object or {}, targeted.ref)))

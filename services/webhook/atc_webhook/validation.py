"""Performs the checks the admission decisions ask for (``atc_webhook.decisions.Check``): the I/O of admission.

``run_check(services, check)`` performs one check and returns its denial, or None when it passes:
- ``AuthorizeOverrides``: a SubjectAccessReview for updating Airways (a failed review is HTTP 500);
- ``AuthorizeTargetSecret``: a SubjectAccessReview for getting the kubeconfig Secret an instance or a
  Flight names (``atc.yoke.cd/kubeconfig-secret``; a failed review is HTTP 500);
- ``ValidateAirwayModules``: the Airway's flight and converter modules are fetched and verified, not
  compiled (the compiles go on in the background, so the first instance's dry run finds them ready);
- ``DryRunCrd``: a server-side dry-run apply of the Airway's CRD;
- ``DryRunFlight`` / ``DryRunInstance``: the module is loaded (waiting a bounded time for a compile),
  then the takeoff pipeline runs as a dry run (flight run, then a dry-run apply of every stage), so a
  bad input is refused with the flight's own error text before it is stored. An object annotated
  ``atc.yoke.cd/kubeconfig-secret`` is dry-run in that Secret's cluster (``atc.release.targets``:
  its lookups and dry-run applies go there); when that cluster cannot be used (a refused kubeconfig,
  no answer within a few seconds) the request is admitted with a warning saying why.

A module that cannot be loaded denies the request with the reason instead of failing the webhook
call with HTTP 404 as yoke does (docs/compatibility.md). Called by ``atc_webhook.routers.flights``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import assert_never

from atc.k8s.client import KubeError
from atc.k8s.gateway import LoopGateway
from atc.model.constants import FIELD_MANAGER_APPLY
from atc.model.gocompat import DurationError
from atc.model.target import ANNOTATION_KUBECONFIG_SECRET, TargetRef
from atc.model.types import Object
from atc.release.flight_request import flight_takeoff_request
from atc.release.instance_request import ObjectPathError, instance_takeoff_request, load_instance_module
from atc.release.takeoff import Cluster, TakeoffError, TakeoffRequest, TakeoffResult, takeoff
from atc.release.targets import TargetError, where, without_owners
from atc.wasm.cache import LoadedModule
from atc.wasm.errors import ModuleError, ModuleNotAllowedError

from .admission import AdmissionHTTPError, Verdict, deny
from .context import FlightServices
from .decisions import (
    AuthorizeOverrides,
    AuthorizeTargetSecret,
    Check,
    DryRunCrd,
    DryRunFlight,
    DryRunInstance,
    ValidateAirwayModules,
)

DRY_RUN_FAILED = (
    "applying resource returned errors during dry-run. "
    "Either the inputs are invalid or the package implementation has errors"
)
OVERRIDE_FORBIDDEN = "user does not have permissions to create or update override annotations"
AIRWAY_UPDATE = {"verb": "update", "group": "yoke.cd", "version": "v1alpha1", "resource": "airways"}
# How long a dry run waits for its module to compile: the API server gives an instance's webhook
# 10 s and the Flight webhook 30 s (atc.model.webhook_configs), and the dry run itself needs some of that.
INSTANCE_MODULE_WAIT_SECONDS = 7.0
# A dry run in another cluster (docs/targets.md): connecting, then the takeoff there, each bounded, so
# an unreachable cluster admits with a warning before the API server's 10 s are up.
TARGET_CONNECT_SECONDS = 3.0
TARGET_DRY_RUN_SECONDS = 5.0
FLIGHT_MODULE_WAIT_SECONDS = 25.0


async def run_check(services: FlightServices, check: Check) -> Verdict | None:
    """Perform ``check``: its denial; None when it passes, or an allowing verdict with warnings."""
    match check:
        case AuthorizeOverrides():
            return await authorize_overrides(services, check)
        case AuthorizeTargetSecret():
            return await authorize_target_secret(services, check)
        case ValidateAirwayModules():
            return await validate_airway_modules(services, check)
        case DryRunCrd():
            return await dry_run_crd(services, check)
        case DryRunFlight():
            return await dry_run_flight(services, check)
        case DryRunInstance():
            return await dry_run_instance(services, check)
        case _:
            assert_never(check)


# ----------------------------------------------------------------------------------------------- access
async def authorize_overrides(services: FlightServices, check: AuthorizeOverrides) -> Verdict | None:
    """Deny Forbidden unless the user may update Airways (the permission the override annotations require)."""
    if await may_update_airways(services, check.user):
        return None
    return deny("Forbidden", OVERRIDE_FORBIDDEN)


async def may_update_airways(services: FlightServices, user: Object) -> bool:
    """The SubjectAccessReview's answer; a review that cannot be made is HTTP 500."""
    return await may(services, user, AIRWAY_UPDATE)


async def authorize_target_secret(services: FlightServices, check: AuthorizeTargetSecret) -> Verdict | None:
    """Deny Forbidden unless the user may get the kubeconfig Secret (the controller reads it for them).

    The namespace and name were validated as DNS names (``atc.model.target``), so they may be echoed.
    """
    attributes = {
        "verb": "get",
        "group": "",
        "version": "v1",
        "resource": "secrets",
        "namespace": check.namespace,
        "name": check.name,
    }
    if await may(services, check.user, attributes):
        return None
    return deny("Forbidden", target_forbidden(check.namespace, check.name))


def target_forbidden(namespace: str, name: str) -> str:
    return f"user may not read the kubeconfig Secret {namespace}/{name} that {ANNOTATION_KUBECONFIG_SECRET} names"


async def may(services: FlightServices, user: Object, attributes: Object) -> bool:
    """Whether ``user`` (an AdmissionRequest's ``userInfo``) may do what ``attributes`` say: a
    SubjectAccessReview; a review that cannot be made is HTTP 500."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user.get("username", ""),
            "uid": user.get("uid", ""),
            "groups": user.get("groups") or [],
            "resourceAttributes": attributes,
        },
    }
    try:
        answer = await services.kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review)
    except KubeError as exc:
        raise AdmissionHTTPError(500, f"failed to perform access review: {exc}") from None
    return bool((answer.get("status") or {}).get("allowed"))


# ----------------------------------------------------------------------------------------------- airways
async def validate_airway_modules(services: FlightServices, check: ValidateAirwayModules) -> Verdict | None:
    """Deny Invalid when the flight or the converter module cannot be fetched or verified."""
    spec = check.spec
    wanted = [
        (label, url, checksum)
        for label, url, checksum in (
            ("flight", spec.wasm_urls.flight, spec.wasm_urls.flight_checksum),
            ("converter", spec.wasm_urls.converter, spec.wasm_urls.converter_checksum),
        )
        if url
    ]
    outcomes = await asyncio.gather(
        *(services.modules.validate(url, checksum=checksum, insecure=spec.insecure) for _, url, checksum in wanted),
        return_exceptions=True,
    )
    for (label, url, _), outcome in zip(wanted, outcomes, strict=True):
        if isinstance(outcome, ModuleError):
            return deny("Invalid", f'failed to validate {label} url "{url}": {outcome}')
        if isinstance(outcome, BaseException):
            raise outcome
    return None


async def dry_run_crd(services: FlightServices, check: DryRunCrd) -> Verdict | None:
    """Deny Invalid when the API server refuses the CRD in a server-side dry-run apply."""
    try:
        await services.kube.apply(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{check.crd['metadata']['name']}",
            check.crd,
            field_manager=FIELD_MANAGER_APPLY,
            dry_run=True,
        )
    except KubeError as exc:
        return deny("Invalid", f"invalid crd template: {exc}")
    return None


# ----------------------------------------------------------------------------------------------- modules
class ModuleStillCompilingError(ModuleError):
    """The module is being compiled and the request cannot wait for it (the API server would time out)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the flight module is still being compiled after {seconds:.0f}s; try again in a few seconds")


async def _loaded_within(seconds: float, load: Awaitable[LoadedModule]) -> LoadedModule:
    """The module, or ``ModuleStillCompilingError`` once ``seconds`` pass (the compile goes on)."""
    try:
        return await asyncio.wait_for(load, seconds)
    except TimeoutError:
        raise ModuleStillCompilingError(seconds) from None


def _gateway(services: FlightServices) -> LoopGateway:
    return LoopGateway(services.kube, services.cluster.mapper, asyncio.get_running_loop())


# ----------------------------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class _Place:
    """Where a dry run goes: this cluster, or the cluster of the object's kubeconfig Secret."""

    cluster: Cluster
    gateway: LoopGateway
    target: TargetRef | None = None

    def request(self, request: TakeoffRequest) -> TakeoffRequest:
        return request if self.target is None else without_owners(request)

    async def takeoff(self, request: TakeoffRequest) -> TakeoffResult:
        """The dry-run takeoff; in another cluster bounded by ``TARGET_DRY_RUN_SECONDS``."""
        if self.target is None:
            return await takeoff(self.cluster, request)
        return await asyncio.wait_for(takeoff(self.cluster, self.request(request)), TARGET_DRY_RUN_SECONDS)


def _skipped(reason: str) -> Verdict:
    """Admitted without a dry run: the cluster the object deploys to could not be used (docs/targets.md)."""
    return Verdict(True, warnings=(f"dry run skipped: {reason}",))


async def _place(services: FlightServices, target: TargetRef | None) -> _Place | Verdict:
    """Where the dry run goes, or the warning that it cannot be made."""
    if target is None:
        return _Place(services.cluster, _gateway(services))
    if services.targets is None:
        return _skipped(f"{where(str(target))} is not reachable from this webhook")
    try:
        cluster = await asyncio.wait_for(services.targets.cluster(target), TARGET_CONNECT_SECONDS)
    except TargetError as exc:
        return _skipped(str(exc))
    except TimeoutError:
        return _skipped(f"{where(str(target))} did not answer within {TARGET_CONNECT_SECONDS:.0f}s")
    return _Place(cluster, LoopGateway(cluster.kube, cluster.mapper, asyncio.get_running_loop()), target)


def _timed_out(target: TargetRef | None) -> Verdict:
    return _skipped(f"{where(str(target))} did not finish the dry run within {TARGET_DRY_RUN_SECONDS:.0f}s")


# ----------------------------------------------------------------------------------------------- flights
async def dry_run_flight(services: FlightServices, check: DryRunFlight) -> Verdict | None:
    """Deny when the Flight's module cannot be loaded or its dry-run takeoff fails."""
    spec = check.spec
    try:
        load = services.modules.load(spec.wasm_url, checksum=spec.checksum, insecure=spec.insecure)
        module = await _loaded_within(FLIGHT_MODULE_WAIT_SECONDS, load)
    except ModuleNotAllowedError as exc:
        return deny("Forbidden", str(exc))
    except ModuleError as exc:
        return deny("InternalError", str(exc))
    place = await _place(services, check.target)
    if isinstance(place, Verdict):
        return place
    request = flight_takeoff_request(
        check.flight,
        check.kind,
        spec,
        module,
        timeout=check.timeout,
        defaults=services.defaults,
        gateway=place.gateway,
        dry_run=True,
        mode=check.mode,
    )
    try:
        result = await place.takeoff(request)
    except TakeoffError as exc:
        return deny("BadRequest", str(exc))
    except TimeoutError:
        return _timed_out(check.target)
    return _passed(result.warnings)


# ----------------------------------------------------------------------------------------------- instances
async def dry_run_instance(services: FlightServices, check: DryRunInstance) -> Verdict | None:
    """Deny when the instance's module cannot be loaded, its input cannot be read, or its dry-run takeoff fails."""
    try:
        load = load_instance_module(services.modules, check.spec, check.instance)
        module = await _loaded_within(INSTANCE_MODULE_WAIT_SECONDS, load)
        place = await _place(services, check.target)
        if isinstance(place, Verdict):
            return place
        request = instance_takeoff_request(
            check.airway,
            check.spec,
            check.instance,
            module,
            defaults=services.defaults,
            gateway=place.gateway,
            dry_run=True,
        )
        result = await place.takeoff(request)
    except TimeoutError:
        return _timed_out(check.target)
    except ObjectPathError as exc:
        return deny("Invalid", f"failed to get object path: {exc.detail}")
    except ModuleNotAllowedError as exc:
        return deny("Forbidden", str(exc))
    except ModuleError as exc:
        return deny("Invalid", f"failed to get flight module from cache: {exc}")
    except (TakeoffError, DurationError) as exc:
        return deny("Invalid", f"{DRY_RUN_FAILED}: {exc}")
    return _passed(result.warnings)


def _passed(warnings: list[str]) -> Verdict | None:
    """A dry run that passed: None, or an allowing verdict carrying what it could not check."""
    return Verdict(True, warnings=tuple(warnings)) if warnings else None

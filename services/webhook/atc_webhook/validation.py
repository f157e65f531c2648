"""Admission decisions that need a flight: Airways, Flights and Airway instances (spec 9.2-9.4), and conversion (9.7).

Each ``check_*`` takes the decoded admission request and returns a ``Verdict``;
the routes in ``routers/flights.py`` turn it into an AdmissionReview answer.
Instances and Flights are dry-run through the takeoff pipeline (flight run,
then a server-side dry-run apply of every stage) so a bad input is refused
with the flight's own error text before it is stored. ``convert`` runs an
Airway's converter flight on a ConversionReview and keeps each object's
status (yoke drops it: QUIRK 15.5).

Deliberate differences from yoke: a module that cannot be loaded denies the
request with the reason instead of failing the webhook call with HTTP 404
(QUIRK 15.20), and an Airway that is being deleted is admitted without
re-validation so its finalizer can always be removed (QUIRK 15.16).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable
from dataclasses import dataclass, field

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.gateway import LoopGateway
from atc.model.airway_template import airway_crd
from atc.model.constants import (
    ANNOTATION_OVERRIDE_FLIGHT,
    ANNOTATION_OVERRIDE_MODE,
    FIELD_MANAGER_APPLY,
)
from atc.model.gocompat import DurationError
from atc.model.specs import AirwaySpec, FlightSpec
from atc.model.types import Object
from atc.release.flight_request import flight_takeoff_request
from atc.release.instance_request import ObjectPathError, instance_takeoff_request, load_instance_module
from atc.release.invocation import FlightDefaults, converter_invocation, timeout_seconds
from atc.release.takeoff import Cluster, TakeoffError, takeoff
from atc.wasm.cache import LoadedModule, ModuleCache
from atc.wasm.errors import ModuleError, ModuleNotAllowedError
from atc.wasm.runner import FlightError, run_flight_async
from atc_webhook.admission import AdmissionHTTPError, Verdict, allow, deny
from atc_webhook.limits import decode_json

DRY_RUN_FAILED = (
    "applying resource returned errors during dry-run. "
    "Either the inputs are invalid or the package implementation has errors"
)
OVERRIDE_FORBIDDEN = "user does not have permissions to create or update override annotations"
# How long a dry run waits for its module to compile: the API server gives an instance's webhook
# 10 s and the Flight webhook 30 s (atc.model.webhook_configs), and the dry run itself needs some of that.
INSTANCE_MODULE_WAIT_SECONDS = 7.0
FLIGHT_MODULE_WAIT_SECONDS = 25.0


@dataclass(frozen=True)
class FlightServices:
    """What the flight-running checks need: the API, the flight runtime and the module cache."""

    cluster: Cluster
    modules: ModuleCache
    allow_list: tuple[str, ...] = ()
    defaults: FlightDefaults = field(default_factory=FlightDefaults)

    @property
    def kube(self) -> KubeClient:
        return self.cluster.kube


# ----------------------------------------------------------------------------------------------- airways
async def check_airway(services: FlightServices, airway: Object) -> Verdict:
    """``/validations/airways.yoke.cd``: modules load, and the CRD template is accepted by a dry-run."""
    if (airway.get("metadata") or {}).get("deletionTimestamp"):
        return allow()  # being deleted: let the finalizer go
    try:
        spec = AirwaySpec.model_validate(airway.get("spec") or {})
    except ValueError as exc:
        return deny("Invalid", f"invalid airway spec: {exc}")
    problem = await _modules_problem(services, spec)
    if problem:
        return deny("Invalid", problem)
    crd = airway_crd(airway, copy.deepcopy(spec.template))
    try:
        await services.kube.apply(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}",
            crd,
            field_manager=FIELD_MANAGER_APPLY,
            dry_run=True,
        )
    except KubeError as exc:
        return deny("Invalid", f"invalid crd template: {exc}")
    return allow()


async def _modules_problem(services: FlightServices, spec: AirwaySpec) -> str:
    """Why the Airway's flight or converter module is unusable ('' when both are fine), found without compiling.

    Both are fetched and verified at once; their compiles then run in the background, so the first
    instance's dry run finds them ready. yoke compiles both inside this request, which a pair of
    large modules cannot finish within the API server's 30 s webhook timeout.
    """
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
            return f'failed to validate {label} url "{url}": {outcome}'
        if isinstance(outcome, BaseException):
            raise outcome
    return ""


async def _loaded_within(seconds: float, load: Awaitable[LoadedModule]) -> LoadedModule:
    """The module, or ``ModuleStillCompilingError`` once ``seconds`` pass (the compile goes on)."""
    try:
        return await asyncio.wait_for(load, seconds)
    except TimeoutError:
        raise ModuleStillCompilingError(seconds) from None


class ModuleStillCompilingError(ModuleError):
    """The module is being compiled and the request cannot wait for it (the API server would time out)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the flight module is still being compiled after {seconds:.0f}s; try again in a few seconds")


# ----------------------------------------------------------------------------------------------- flights
async def check_flight(services: FlightServices, flight: Object, kind: str) -> Verdict:
    """``/validations/flights.yoke.cd``: a dry-run takeoff of the Flight or ClusterFlight."""
    try:
        spec = FlightSpec.model_validate(flight.get("spec") or {})
        timeout = timeout_seconds(spec.timeout)
    except (ValueError, DurationError) as exc:
        return deny("BadRequest", str(exc))
    try:
        load = services.modules.load(spec.wasm_url, checksum=spec.checksum, insecure=spec.insecure)
        module = await _loaded_within(FLIGHT_MODULE_WAIT_SECONDS, load)
    except ModuleNotAllowedError as exc:
        return deny("Forbidden", str(exc))
    except ModuleError as exc:
        return deny("InternalError", str(exc))
    request = flight_takeoff_request(
        flight,
        kind,
        spec,
        module,
        timeout=timeout,
        defaults=services.defaults,
        gateway=_gateway(services),
        dry_run=True,
    )
    try:
        await takeoff(services.cluster, request)
    except TakeoffError as exc:
        return deny("BadRequest", str(exc))
    return allow("successful dryrun validation")


# ----------------------------------------------------------------------------------------------- instances
def _gateway(services: FlightServices) -> LoopGateway:
    return LoopGateway(services.kube, services.cluster.mapper, asyncio.get_running_loop())


def override_annotations(obj: Object | None) -> tuple[str, str]:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(ANNOTATION_OVERRIDE_FLIGHT, ""), annotations.get(ANNOTATION_OVERRIDE_MODE, "")


async def may_override(kube: KubeClient, user: Object) -> bool:
    """SubjectAccessReview: may this user update Airways (the permission the overrides require)?"""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user.get("username", ""),
            "uid": user.get("uid", ""),
            "groups": user.get("groups") or [],
            "resourceAttributes": {"verb": "update", "group": "yoke.cd", "version": "v1alpha1", "resource": "airways"},
        },
    }
    try:
        answer = await kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review)
    except KubeError as exc:
        raise AdmissionHTTPError(500, f"failed to perform access review: {exc}") from None
    return bool((answer.get("status") or {}).get("allowed"))


async def check_instance(services: FlightServices, airway: Object, request: Object) -> Verdict:
    """``/validations/{airway}``: override annotations need Airway update rights; then a dry-run takeoff."""
    instance, old = request.get("object") or {}, request.get("oldObject")
    overrides = override_annotations(instance)
    changed = overrides != override_annotations(old) if request.get("operation") == "UPDATE" else any(overrides)
    if changed and not await may_override(services.kube, request.get("userInfo") or {}):
        return deny("Forbidden", OVERRIDE_FORBIDDEN)
    spec = AirwaySpec.model_validate(airway["spec"])
    if spec.skip_admission_webhook:
        return allow("admission skipped")
    try:
        module = await _loaded_within(
            INSTANCE_MODULE_WAIT_SECONDS, load_instance_module(services.modules, spec, instance)
        )
        takeoff_request = instance_takeoff_request(
            airway,
            spec,
            instance,
            module,
            defaults=services.defaults,
            gateway=_gateway(services),
            dry_run=True,
        )
        await takeoff(services.cluster, takeoff_request)
    except ObjectPathError as exc:
        return deny("Invalid", f"failed to get object path: {exc.detail}")
    except ModuleNotAllowedError as exc:
        return deny("Forbidden", str(exc))
    except ModuleError as exc:
        return deny("Invalid", f"failed to get flight module from cache: {exc}")
    except (TakeoffError, DurationError) as exc:
        return deny("Invalid", f"{DRY_RUN_FAILED}: {exc}")
    return allow("validation passed")


# ----------------------------------------------------------------------------------------------- conversion
async def convert(services: FlightServices, airway: Object, body: bytes) -> Object:
    """Run the Airway's converter on a ConversionReview; the converted objects keep their status."""
    spec = AirwaySpec.model_validate(airway["spec"])
    try:
        review = decode_json(body)
        originals = review["request"]["objects"]
        if not all(isinstance(obj, dict) for obj in originals):
            raise ValueError("request objects must be JSON objects")
    except (ValueError, KeyError, TypeError) as exc:
        raise AdmissionHTTPError(400, f"could not Unmarshal request object: {exc}") from None
    try:
        module = await services.modules.load(
            spec.wasm_urls.converter, checksum=spec.wasm_urls.converter_checksum, insecure=spec.insecure
        )
    except ModuleError as exc:
        raise AdmissionHTTPError(500, f"failed to get converter module from cache: {exc}") from None
    try:
        invocation = converter_invocation(body, services.defaults)
        result = await run_flight_async(services.cluster.engine, module.prepared, invocation)
    except FlightError as exc:
        raise AdmissionHTTPError(500, str(exc)) from None
    try:
        answer = json.loads(result.stdout)
    except ValueError as exc:
        raise AdmissionHTTPError(500, f"failed to parse review response: {exc}") from None
    review.update(answer)
    converted = (review.get("response") or {}).get("convertedObjects") or []
    for original, obj in zip(originals, converted, strict=False):
        if isinstance(obj, dict):
            keep_from_original(original, obj)
    result_review: Object = review
    return result_review


def keep_from_original(original: Object, converted: Object) -> None:
    """What a converted object must carry over from the one the API server sent.

    ``status`` is kept (yoke means to and does not; docs/compatibility.md). ``metadata`` is restored when the converter
    dropped it: the API server sends objects without metadata when server-side apply converts the
    fields a manager owns, a Go converter then omits the empty ``metadata`` (``omitzero``), and the
    API server refuses a converted object without metadata ("missing metadata in converted object").
    It takes every field of metadata but labels and annotations from its own copy anyway.
    """
    if "status" in original:
        converted["status"] = original["status"]
    if not isinstance(converted.get("metadata"), dict):
        metadata = original.get("metadata")
        converted["metadata"] = copy.deepcopy(metadata) if isinstance(metadata, dict) else {}

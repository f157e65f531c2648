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
from dataclasses import dataclass
from typing import Any

from atc.airway_template import airway_crd
from atc.constants import (
    ANNOTATION_OVERRIDE_FLIGHT,
    ANNOTATION_OVERRIDE_MODE,
    DEFAULT_YOKE_VERSION,
    FIELD_MANAGER_APPLY,
    MANAGED_BY_YOKE,
)
from atc.flight.flight_object import flight_takeoff_request
from atc.flight.invocation import converter_invocation, timeout_seconds
from atc.gocompat import DurationError, go_json
from atc.k8s.client import KubeClient, KubeError
from atc.k8s.gateway import LoopGateway
from atc.k8s.refs import split_api_version
from atc.models import AirwaySpec, FlightSpec
from atc.releases import release_name
from atc.takeoff import Cluster, TakeoffError, TakeoffRequest, takeoff
from atc.wasm.access import ClusterAccess
from atc.wasm.cache import ModuleCache
from atc.wasm.errors import ModuleError, ModuleNotAllowedError
from atc.wasm.globs import allowed
from atc.wasm.runner import FlightError, run_flight_async
from atc_webhook.admission import AdmissionHTTPError, Verdict, allow, deny

Object = dict[str, Any]
DRY_RUN_FAILED = (
    "applying resource returned errors during dry-run. "
    "Either the inputs are invalid or the package implementation has errors"
)
OVERRIDE_FORBIDDEN = "user does not have permissions to create or update override annotations"


@dataclass(frozen=True)
class FlightServices:
    """What the flight-running checks need: the API, the flight runtime and the module cache."""

    cluster: Cluster
    modules: ModuleCache
    allow_list: tuple[str, ...] = ()
    flight_stdout_limit: int = 16 << 20
    yoke_version: str = DEFAULT_YOKE_VERSION

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
    for label, url, checksum in (
        ("flight", spec.wasm_urls.flight, spec.wasm_urls.flight_checksum),
        ("converter", spec.wasm_urls.converter, spec.wasm_urls.converter_checksum),
    ):
        if not url:
            continue
        try:
            await services.modules.load(url, checksum=checksum, insecure=spec.insecure)
        except ModuleError as exc:
            return deny("Invalid", f'failed to validate {label} url "{url}": {exc}')
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


# ----------------------------------------------------------------------------------------------- flights
async def check_flight(services: FlightServices, flight: Object, kind: str) -> Verdict:
    """``/validations/flights.yoke.cd``: a dry-run takeoff of the Flight or ClusterFlight."""
    try:
        spec = FlightSpec.model_validate(flight.get("spec") or {})
        timeout = timeout_seconds(spec.timeout)
    except (ValueError, DurationError) as exc:
        return deny("BadRequest", str(exc))
    try:
        module = await services.modules.load(spec.wasm_url, checksum=spec.checksum, insecure=spec.insecure)
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
        stdout_limit=services.flight_stdout_limit,
        yoke_version=services.yoke_version,
        gateway=_gateway(services),
        dry_run=True,
    )
    try:
        await takeoff(services.cluster, request)
    except TakeoffError as exc:
        return deny("BadRequest", str(exc))
    return allow("successful dryrun validation")


# ----------------------------------------------------------------------------------------------- instances
def _owner_reference(obj: Object, kind: str | None = None) -> Object:
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion", ""),
        "kind": kind or obj.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
    }


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


def _value_at(obj: Object, path: list[str]) -> Any:
    value: Any = obj
    for key in path:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"cannot read {key!r} of a non-object")
        value = value.get(key)
    return value


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
        value = _value_at(instance, spec.object_path) if spec.object_path else instance
    except ValueError as exc:
        return deny("Invalid", f"failed to get object path: {exc}")
    try:
        takeoff_request = await _instance_takeoff(services, airway, spec, instance, go_json(value), overrides[0])
        await takeoff(services.cluster, takeoff_request)
    except ModuleNotAllowedError as exc:
        return deny("Forbidden", str(exc))
    except ModuleError as exc:
        return deny("Invalid", f"failed to get flight module from cache: {exc}")
    except (TakeoffError, DurationError) as exc:
        return deny("Invalid", f"{DRY_RUN_FAILED}: {exc}")
    return allow("validation passed")


async def _instance_takeoff(
    services: FlightServices, airway: Object, spec: AirwaySpec, instance: Object, stdin: bytes, override_url: str
) -> TakeoffRequest:
    if override_url and not allowed(override_url, services.allow_list):
        raise ModuleNotAllowedError(override_url)
    url = override_url or spec.wasm_urls.flight
    module = await services.modules.load(
        url, checksum=spec.wasm_urls.flight_checksum, insecure=spec.insecure, fresh=bool(override_url)
    )
    template = spec.template
    namespaced = template.get("scope", "Namespaced") == "Namespaced"
    meta = instance.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    release = release_name(instance, namespaced=namespaced)
    group, kind = str(template.get("group", "")), str((template.get("names") or {}).get("kind", ""))

    def is_parent(obj: Object) -> bool:
        obj_group, _ = split_api_version(str(obj.get("apiVersion", "")))
        obj_meta = obj.get("metadata") or {}
        same_object = (obj_meta.get("name"), obj_meta.get("namespace", "") or "") == (
            meta.get("name"),
            meta.get("namespace", "") or "",
        )
        return (obj_group, obj.get("kind")) == (group, kind) and same_object

    access = ClusterAccess(
        spec.cluster_access, release, namespace, tuple(spec.resource_access_matchers), _gateway(services)
    )
    return TakeoffRequest(
        release=release,
        namespace=namespace,
        module=module,
        source_url=spec.wasm_urls.flight,
        stdin=stdin,
        timeout=timeout_seconds(spec.timeout),
        max_memory_mib=spec.max_memory_mib,
        stdout_limit=services.flight_stdout_limit,
        yoke_version=services.yoke_version,
        access=access,
        managed_by=MANAGED_BY_YOKE,
        owner_references=[_owner_reference(instance)],
        cross_namespace=not namespaced,
        is_parent=is_parent,
        dry_run=True,
    )


# ----------------------------------------------------------------------------------------------- conversion
async def convert(services: FlightServices, airway: Object, body: bytes) -> Object:
    """Run the Airway's converter on a ConversionReview; the converted objects keep their status."""
    spec = AirwaySpec.model_validate(airway["spec"])
    try:
        review = json.loads(body)
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
        result = await run_flight_async(services.cluster.engine, module.prepared, converter_invocation(body))
    except FlightError as exc:
        raise AdmissionHTTPError(500, str(exc)) from None
    try:
        answer = json.loads(result.stdout)
    except ValueError as exc:
        raise AdmissionHTTPError(500, f"failed to parse review response: {exc}") from None
    review.update(answer)
    converted = (review.get("response") or {}).get("convertedObjects") or []
    for original, obj in zip(originals, converted, strict=False):
        if isinstance(obj, dict) and "status" in original:
            obj["status"] = original["status"]
    result_review: Object = review
    return result_review

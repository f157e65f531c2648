"""CRD conversion through an Airway's converter flight: ``convert(services, airway, body)`` answers a ConversionReview.

The converted objects keep their ``status`` and, when the converter dropped it, the request
object's ``metadata`` (``keep_from_original``; docs/compatibility.md). Failures are
``AdmissionHTTPError``s, which the route answers as text/plain HTTP errors.
Called by ``atc_webhook.routers.flights`` (``POST /crdconvert/{airway}``).
"""

from __future__ import annotations

import copy
import json

from atc.model.specs import AirwaySpec
from atc.model.types import Object
from atc.release.invocation import converter_invocation
from atc.wasm.errors import ModuleError
from atc.wasm.runner import FlightError, run_flight_async

from .admission import AdmissionHTTPError
from .context import FlightServices
from .limits import decode_json


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

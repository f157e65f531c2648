"""Admission and conversion endpoints that run flights (spec 9.2-9.4, 9.7).

- ``POST /validations/airways.yoke.cd``: an Airway's modules load and its CRD template passes a dry-run;
- ``POST /validations/flights.yoke.cd``: a dry-run takeoff of a Flight or ClusterFlight;
- ``POST /validations/{airway}``: override annotations need the right to update Airways, then a
  dry-run takeoff of the instance (the per-Airway configuration the controller registers points here);
- ``POST /crdconvert/{airway}``: the Airway's converter flight answers a ConversionReview.

The decisions live in ``atc_webhook.validation``; this module only decodes and answers.
"""

from __future__ import annotations

import json

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from atc.model.webhook_configs import AIRWAYS_PATH as AIRWAY_PATH
from atc.model.webhook_configs import FLIGHTS_PATH as FLIGHT_PATH
from atc_webhook.admission import AdmissionHTTPError, Review, Verdict, answer
from atc_webhook.context import WebhookContext, context_of
from atc_webhook.validation import FlightServices, check_airway, check_flight, check_instance, convert

router = APIRouter()


def _flights(context: WebhookContext) -> FlightServices:
    if context.flights is None:
        raise AdmissionHTTPError(503, "flight runtime not started")
    return context.flights


@router.post(AIRWAY_PATH)
async def validate_airway(request: Request) -> Response:
    context = context_of(request)

    async def decide(review: Review) -> Verdict:
        return await check_airway(_flights(context), review.object or {})

    return await answer(request, AIRWAY_PATH, decide)


@router.post(FLIGHT_PATH)
async def validate_flight(request: Request) -> Response:
    context = context_of(request)

    async def decide(review: Review) -> Verdict:
        kind = str((review.object or {}).get("kind", "Flight"))
        return await check_flight(_flights(context), review.object or {}, kind)

    return await answer(request, FLIGHT_PATH, decide)


@router.post("/validations/{airway}")
async def validate_instance(request: Request, airway: str) -> Response:
    context = context_of(request)
    path = f"/validations/{airway}"

    async def decide(review: Review) -> Verdict:
        found = context.caches.airway(airway)
        if found is None:
            raise AdmissionHTTPError(500, f'failed to get airway: airways.yoke.cd "{airway}" not found')
        return await check_instance(_flights(context), found, review.request)

    return await answer(request, path, decide, keep_request=True)


@router.post("/crdconvert/{airway}")
async def convert_objects(request: Request, airway: str) -> Response:
    context = context_of(request)
    found = context.caches.airway(airway)
    if found is None:
        return PlainTextResponse("failed to find airway defintion\n", status_code=500)  # sic, as yoke
    try:
        review = await convert(_flights(context), found, await request.body())
    except AdmissionHTTPError as exc:
        return PlainTextResponse(f"{exc.message}\n", status_code=exc.status)
    return Response(json.dumps(review, separators=(",", ":")), media_type="application/json")

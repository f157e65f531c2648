"""Admission and conversion endpoints that run flights; ``atc_webhook.server`` mounts them.

- ``POST /validations/airways.yoke.cd``: an Airway's modules load and its CRD template passes a dry run;
- ``POST /validations/flights.yoke.cd``: a Flight or ClusterFlight's mode annotation and kubeconfig
  Secret annotations, then its dry-run takeoff (not for one that deploys to another cluster);
- ``POST /validations/{airway}``: the kubeconfig Secret annotations; override annotations need the
  right to update Airways; then a dry-run takeoff of the instance (not for one that deploys to
  another cluster; the per-Airway configuration the controller registers points here);
- ``POST /crdconvert/{airway}``: the Airway's converter flight answers a ConversionReview.

Each admission route gathers its inputs (the flight runtime, the cached Airway), takes the pure
decision of ``atc_webhook.decisions``, and performs its checks with ``atc_webhook.validation``
(``admit_airway``, ``admit_flight``, ``admit_instance``); see docs/webhook.md.
"""

from __future__ import annotations

import dataclasses
import json

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from atc.model.types import Object
from atc.model.webhook_configs import AIRWAYS_PATH as AIRWAY_PATH
from atc.model.webhook_configs import FLIGHTS_PATH as FLIGHT_PATH
from atc_webhook.admission import AdmissionHTTPError, Review, Verdict, answer
from atc_webhook.context import FlightServices, WebhookContext, context_of
from atc_webhook.conversion import convert
from atc_webhook.decisions import Check, Outcome, decide_airway, decide_flight, decide_instance
from atc_webhook.validation import run_check

router = APIRouter()


def _flights(context: WebhookContext) -> FlightServices:
    if context.flights is None:
        raise AdmissionHTTPError(503, "flight runtime not started")
    return context.flights


def _cached_airway(context: WebhookContext, name: str) -> Object:
    found = context.caches.airway(name)
    if found is None:
        raise AdmissionHTTPError(500, f'failed to get airway: airways.yoke.cd "{name}" not found')
    return found


async def checked(services: FlightServices, outcome: Outcome[Check]) -> Verdict:
    """Run the outcome's checks in order: the first denial is the answer, else the outcome's verdict
    with the warnings the checks that passed gave (a dry run that could not check everything)."""
    warnings: list[str] = []
    for check in outcome.effects:
        verdict = await run_check(services, check)
        if verdict is not None and not verdict.allowed:
            return verdict
        if verdict is not None:
            warnings += verdict.warnings
    if not warnings:
        return outcome.verdict
    return dataclasses.replace(outcome.verdict, warnings=(*outcome.verdict.warnings, *warnings))


async def admit_airway(services: FlightServices, review: Review) -> Verdict:
    return await checked(services, decide_airway(review))


async def admit_flight(services: FlightServices, review: Review) -> Verdict:
    return await checked(services, decide_flight(review))


async def admit_instance(services: FlightServices, airway: Object, review: Review) -> Verdict:
    return await checked(services, decide_instance(review, airway))


@router.post(AIRWAY_PATH)
async def validate_airway(request: Request) -> Response:
    context = context_of(request)

    async def decide(review: Review) -> Verdict:
        return await admit_airway(_flights(context), review)

    return await answer(request, AIRWAY_PATH, decide)


@router.post(FLIGHT_PATH)
async def validate_flight(request: Request) -> Response:
    context = context_of(request)

    async def decide(review: Review) -> Verdict:
        return await admit_flight(_flights(context), review)

    return await answer(request, FLIGHT_PATH, decide)


@router.post("/validations/{airway}")
async def validate_instance(request: Request, airway: str) -> Response:
    context = context_of(request)
    path = f"/validations/{airway}"

    async def decide(review: Review) -> Verdict:
        found = _cached_airway(context, airway)
        return await admit_instance(_flights(context), found, review)

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

"""``POST /validations/resources``: UPDATE and DELETE of children of ATC releases; ``atc_webhook.server`` mounts it.

``admit_resource_change(context, review)`` answers one review in three steps (docs/webhook.md,
"The resources guard"):
1. gather: ``decisions.child_lookup`` says which cache entries the review needs (none for a change
   of yoke's annotations, a no-op or a child without instanceRef); the instance (an Airway's, or a
   Flight or ClusterFlight), and in static mode the desired object of the active revision, are read
   from memory (``atc_webhook.caches``). Right after a start a review that needs them waits up to
   ``CACHE_SYNC_WAIT_SECONDS`` for the caches, then fails with HTTP 503;
2. decide: ``decisions.decide_child_change``, a pure function of the review and those facts;
3. perform: every ``SubmitSignal`` the decision returns is queued on the Event writer
   (``atc_webhook.signals``), then the verdict is the answer.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from atc.model.webhook_configs import RESOURCES_PATH
from atc_webhook.admission import AdmissionHTTPError, Review, Verdict, answer
from atc_webhook.context import WebhookContext, context_of
from atc_webhook.decisions import ChildFacts, ChildLookup, child_lookup, decide_child_change, desired_key

router = APIRouter()


@router.post(RESOURCES_PATH)
async def validate_resources(request: Request) -> Response:
    context = context_of(request)

    async def decide(review: Review) -> Verdict:
        return await admit_resource_change(context, review)

    return await answer(request, RESOURCES_PATH, decide)


async def admit_resource_change(context: WebhookContext, review: Review) -> Verdict:
    """The answer for one review, after queuing the signals the decision asks for."""
    lookup = child_lookup(review)
    facts = await cached_facts(context, lookup) if lookup is not None else ChildFacts()
    outcome = decide_child_change(review, facts)
    for signal in outcome.effects:
        await context.signals.submit(signal.change)
    return outcome.verdict


async def cached_facts(context: WebhookContext, lookup: ChildLookup) -> ChildFacts:
    """The instance ``lookup`` names and, when the decision compares with it, the child's desired object."""
    await _wait_for_caches(context)
    instance = context.caches.instance(lookup.instance_ref)
    key = desired_key(lookup, instance)
    if key is None:
        return ChildFacts(instance)
    desired = context.caches.desired_object(key.release, key.release_namespace, key.api_version, key.kind, key.name)
    return ChildFacts(instance, desired)


async def _wait_for_caches(context: WebhookContext) -> None:
    if context.caches.synced():
        return
    if not await context.caches.wait_synced(context.settings.cache_sync_wait_seconds):
        raise AdmissionHTTPError(503, "caches are not synced yet")

"""``POST /validations/resources``: UPDATE and DELETE of children of ATC releases (spec 9.5, DESIGN.md 3 and 4).

``decide_resource_change(context, review)``, in order:
1. yoke's ownership annotations cannot change (any mode, Flight children too): deny BadRequest
   ``cannot modify yoke annotations: <a>`` (a bullet list for several);
2. a no-op update (equal but for generation, resourceVersion, managedFields) is allowed;
3. the instance named by the old object's ``instance.atc.yoke.cd/instanceRef`` is looked up in the
   caches; no Airway for its GroupKind, or no such instance, is allowed;
4. by the instance's effective mode:
   - ``static``: a DELETE (or an update of an object being deleted) is allowed only for
     ``system:serviceaccount:kube-system:*`` (garbage and namespace controllers), else denied BadRequest
     ``cannot delete resources managed by Air-Traffic-Controller``; an UPDATE that changes or removes
     something the desired object of the active revision sets is denied BadRequest
     ``cannot modify flight sub-resources`` (server defaults, status and additions pass);
   - ``dynamic`` / ``subscription``: allowed, and unless it is a dry run a child-changed Event is
     queued (``atc.k8s.signals``; the controller decides what a subscription follows);
   - ``standard``: allowed.
Everything is answered from memory (``atc_webhook.caches``); right after a start a request waits up to
``CACHE_SYNC_WAIT_SECONDS`` for the caches, then fails with HTTP 503.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from atc.k8s.refs import resource_ref
from atc.k8s.signals import ChildChange
from atc.model.constants import ANNOTATION_INSTANCE_REF, ANNOTATION_RELEASE, ANNOTATION_RELEASE_NAMESPACE
from atc.model.types import Object
from atc.model.webhook_configs import RESOURCES_PATH
from atc_webhook.admission import AdmissionHTTPError, Review, Verdict, allow, answer, deny
from atc_webhook.caches import InstanceInfo
from atc_webhook.comparison import (
    annotations_message,
    annotations_of,
    changed_yoke_annotations,
    is_noop_update,
    modifies_desired,
)
from atc_webhook.context import WebhookContext, context_of

log = logging.getLogger("atc.webhook.resources")

router = APIRouter()
KUBE_SYSTEM_SERVICE_ACCOUNTS = "system:serviceaccount:kube-system:"
CANNOT_DELETE = "cannot delete resources managed by Air-Traffic-Controller"
CANNOT_MODIFY = "cannot modify flight sub-resources"
SIGNALLING_MODES = frozenset({"dynamic", "subscription"})


@router.post(RESOURCES_PATH)
async def validate_resources(request: Request) -> Response:
    context = context_of(request)

    async def decide(review: Review) -> Verdict:
        return await decide_resource_change(context, review)

    return await answer(request, RESOURCES_PATH, decide)


async def decide_resource_change(context: WebhookContext, review: Review) -> Verdict:
    """The answer for one review; see the module docstring."""
    prev, next_ = review.old_object, review.object
    if next_ is not None:
        changed = changed_yoke_annotations(prev, next_)
        if changed:
            return deny("BadRequest", annotations_message(changed))
        if prev is not None and is_noop_update(prev, next_):
            return allow()
    instance_ref = annotations_of(prev).get(ANNOTATION_INSTANCE_REF, "")
    if prev is None or not instance_ref:
        return allow()
    await _wait_for_caches(context)
    instance = context.caches.instance(instance_ref)
    if instance is None:
        return allow()
    if instance.mode == "static":
        return static_decision(context, review, prev, next_)
    if instance.mode in SIGNALLING_MODES and not review.dry_run:
        await context.signals.submit(child_change(review, instance, prev))
    return allow()


async def _wait_for_caches(context: WebhookContext) -> None:
    if context.caches.synced():
        return
    if not await context.caches.wait_synced(context.settings.cache_sync_wait_seconds):
        raise AdmissionHTTPError(503, "caches are not synced yet")


def _being_deleted(obj: Object) -> bool:
    metadata = obj.get("metadata")
    return isinstance(metadata, dict) and bool(metadata.get("deletionTimestamp"))


def static_decision(context: WebhookContext, review: Review, prev: Object, next_: Object | None) -> Verdict:
    """Static mode: no deletion but by kube-system's controllers; no change to what the flight set."""
    if next_ is None or _being_deleted(next_):
        if review.username.startswith(KUBE_SYSTEM_SERVICE_ACCOUNTS):
            return allow()
        return deny("BadRequest", CANNOT_DELETE)
    annotations = annotations_of(prev)
    metadata = next_.get("metadata")
    name = str(metadata.get("name", "")) if isinstance(metadata, dict) else ""
    desired = context.caches.desired_object(
        annotations.get(ANNOTATION_RELEASE, ""),
        annotations.get(ANNOTATION_RELEASE_NAMESPACE, ""),
        str(next_.get("apiVersion", "")),
        str(next_.get("kind", "")),
        name,
    )
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

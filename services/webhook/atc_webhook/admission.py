"""AdmissionReview v1 plumbing shared by every admission route (docs/webhook.md, "Admission plumbing").

- ``parse_review(body)``: the decoded review (``ReviewDecodeError`` when it is not one);
- ``Verdict`` / ``allow`` / ``deny``: a decision; anything with ``allowed``, ``message`` and
  ``reason`` attributes (the ``Decision`` protocol) is accepted;
- ``review_response(review, decision)``: the reply, echoing ``apiVersion`` and ``kind`` with
  ``response = {uid, allowed, status: {status: Success|Failure, message, reason}, warnings}`` (warnings
  only when there are some); denials carry
  one of the reasons Forbidden, Invalid, InternalError or BadRequest and no code;
- ``answer(request, path, decide)``: what a route returns: reads and decodes the body (HTTP 400
  ``failed to decode review: <err>`` in text/plain otherwise), calls ``decide``, turns an
  ``AdmissionHTTPError`` into a text/plain HTTP error (any other exception into 500 ``panic``, as
  yoke's middleware does), and records metrics and denial logs.

Used by the routers in ``atc_webhook.routers``; ``atc_webhook.decisions`` builds its verdicts with
``allow`` and ``deny`` and reads ``Review``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from starlette.requests import Request
from starlette.responses import Response

from atc.model.types import Object

from . import metrics
from .limits import decode_json

log = logging.getLogger("atc.webhook.admission")

Reason = Literal["Forbidden", "Invalid", "InternalError", "BadRequest"]
VALIDATION_PASSED = "validation passed"
_JSON_CONTENT = "application/json"


class ReviewDecodeError(ValueError):
    """The body is not an AdmissionReview with a request."""


class AdmissionHTTPError(Exception):
    """The webhook cannot answer the review (an HTTP error, which the API server counts as a call failure)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Decision(Protocol):
    """An admission decision: ``reason`` is one of ``Reason`` when denied, "" when allowed."""

    @property
    def allowed(self) -> bool: ...

    @property
    def message(self) -> str: ...

    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class Verdict:
    """The plain ``Decision``."""

    allowed: bool
    message: str = VALIDATION_PASSED
    reason: str = ""
    warnings: tuple[str, ...] = ()  # admission warnings, shown by kubectl (``response.warnings``)


def allow(message: str = VALIDATION_PASSED) -> Verdict:
    return Verdict(True, message)


def deny(reason: Reason, message: str) -> Verdict:
    return Verdict(False, message, reason)


@dataclass(frozen=True)
class Review:
    """A decoded AdmissionReview; ``request`` is the AdmissionRequest as sent."""

    api_version: str
    kind: str
    request: Object

    @property
    def uid(self) -> str:
        return str(self.request.get("uid", ""))

    @property
    def operation(self) -> str:
        return str(self.request.get("operation", ""))

    @property
    def object(self) -> Object | None:
        obj = self.request.get("object")
        return obj if isinstance(obj, dict) else None

    @property
    def old_object(self) -> Object | None:
        obj = self.request.get("oldObject")
        return obj if isinstance(obj, dict) else None

    @property
    def dry_run(self) -> bool:
        return bool(self.request.get("dryRun"))

    @property
    def username(self) -> str:
        return str((self.request.get("userInfo") or {}).get("username", ""))


def parse_review(body: bytes) -> Review:
    """Decode an AdmissionReview body; ``ReviewDecodeError`` says what is wrong."""
    try:
        decoded = decode_json(body)
    except ValueError as exc:
        raise ReviewDecodeError(str(exc)) from None
    if not isinstance(decoded, dict):
        raise ReviewDecodeError(f"expected a JSON object, got {type(decoded).__name__}")
    request = decoded.get("request")
    if not isinstance(request, dict):
        raise ReviewDecodeError("review has no request")
    for field in ("object", "oldObject"):
        if request.get(field) is not None and not isinstance(request[field], dict):
            raise ReviewDecodeError(f"request.{field} is not a JSON object")
    return Review(str(decoded.get("apiVersion", "")), str(decoded.get("kind", "")), request)


def review_response(review: Review, decision: Decision, *, keep_request: bool = False) -> Object:
    """The AdmissionReview to send back (``keep_request`` leaves ``request`` in, as yoke's instance handler does)."""
    status: Object = {"status": "Success" if decision.allowed else "Failure", "message": decision.message}
    if not decision.allowed:
        status["reason"] = decision.reason
    reply: Object = {
        "apiVersion": review.api_version,
        "kind": review.kind,
        "response": {"uid": review.uid, "allowed": decision.allowed, "status": status},
    }
    if warnings := getattr(decision, "warnings", ()):
        reply["response"]["warnings"] = list(warnings)
    if keep_request:
        reply["request"] = review.request
    return reply


def _text(status: int, message: str) -> Response:
    return Response(f"{message}\n", status_code=status, media_type="text/plain")


def _log_denial(path: str, review: Review, decision: Decision) -> None:
    old = review.old_object or review.object or {}
    meta = old.get("metadata") or {}
    log.info(
        "admission denied",
        extra={
            "path": path,
            "uid": review.uid,
            "operation": review.operation,
            "user": review.username,
            "kind": old.get("kind", ""),
            "namespace": meta.get("namespace", ""),
            "objectName": meta.get("name", ""),
            "reason": decision.reason,
            "denial": decision.message,
        },
    )


async def answer(
    request: Request,
    path: str,
    decide: Callable[[Review], Awaitable[Decision]],
    *,
    keep_request: bool = False,
) -> Response:
    """Decode the review in ``request``, decide, and reply; ``path`` labels metrics and logs."""
    started = time.perf_counter()
    try:
        review = parse_review(await request.body())
    except ReviewDecodeError as exc:
        metrics.observe_admission(path, "error", time.perf_counter() - started)
        return _text(400, f"failed to decode review: {exc}")
    try:
        decision = await decide(review)
    except AdmissionHTTPError as exc:
        metrics.observe_admission(path, "error", time.perf_counter() - started)
        log.warning(
            "admission failed", extra={"path": path, "uid": review.uid, "status": exc.status, "error": str(exc)}
        )
        return _text(exc.status, exc.message)
    except Exception:  # a bug: answer like yoke's panic middleware, keep serving
        metrics.observe_admission(path, "error", time.perf_counter() - started)
        log.exception("admission handler failed", extra={"path": path, "uid": review.uid})
        return _text(500, "panic")
    body = json.dumps(review_response(review, decision, keep_request=keep_request), separators=(",", ":"))
    result = "allowed" if decision.allowed else "denied"
    metrics.observe_admission(path, result, time.perf_counter() - started, decision.reason)
    if not decision.allowed:
        _log_denial(path, review, decision)
    return Response(body, media_type=_JSON_CONTENT)

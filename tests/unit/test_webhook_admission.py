"""AdmissionReview plumbing: decoding, the response shapes (docs/webhook.md), HTTP errors and metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from atc.model.types import Object
from atc_webhook import metrics
from atc_webhook.admission import (
    AdmissionHTTPError,
    Review,
    ReviewDecodeError,
    Verdict,
    allow,
    answer,
    deny,
    parse_review,
    review_response,
)


def review_body(**request: Any) -> Object:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": "UPDATE", **request},
    }


def test_parse_review_reads_the_request() -> None:
    body = review_body(
        object={"kind": "ConfigMap"}, oldObject={"kind": "ConfigMap"}, dryRun=True, userInfo={"username": "alice"}
    )
    review = parse_review(json.dumps(body).encode())
    assert (review.api_version, review.kind, review.uid, review.operation) == (
        "admission.k8s.io/v1",
        "AdmissionReview",
        "u-1",
        "UPDATE",
    )
    assert review.object == {"kind": "ConfigMap"}
    assert review.old_object == {"kind": "ConfigMap"}
    assert review.dry_run
    assert review.username == "alice"


def test_delete_reviews_have_no_object() -> None:
    review = parse_review(json.dumps(review_body(operation="DELETE", object=None, oldObject={})).encode())
    assert review.object is None
    assert review.old_object == {}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "Expecting property name"),
        (b"[]", "expected a JSON object, got list"),
        (b'{"kind": "AdmissionReview"}', "review has no request"),
        (json.dumps(review_body(object="x")).encode(), "request.object is not a JSON object"),
    ],
)
def test_parse_review_rejects_what_is_not_a_review(body: bytes, error: str) -> None:
    with pytest.raises(ReviewDecodeError, match=error):
        parse_review(body)


def test_allowed_response_shape() -> None:
    review = Review("admission.k8s.io/v1", "AdmissionReview", {"uid": "u-1"})
    assert review_response(review, allow()) == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u-1", "allowed": True, "status": {"status": "Success", "message": "validation passed"}},
    }


def test_denied_response_shape_has_a_reason_and_no_code() -> None:
    review = Review("admission.k8s.io/v1beta1", "AdmissionReview", {"uid": "u-2"})
    reply = review_response(review, deny("BadRequest", "cannot modify flight sub-resources"))
    assert reply["apiVersion"] == "admission.k8s.io/v1beta1"  # echoed
    assert reply["response"] == {
        "uid": "u-2",
        "allowed": False,
        "status": {"status": "Failure", "message": "cannot modify flight sub-resources", "reason": "BadRequest"},
    }
    assert "request" not in reply


def test_the_request_can_be_kept_in_the_reply() -> None:
    review = Review("admission.k8s.io/v1", "AdmissionReview", {"uid": "u-3", "operation": "CREATE"})
    assert review_response(review, allow(), keep_request=True)["request"] == review.request


# ----------------------------------------------------------------------------------------------- answer()
def app_deciding(decision: Verdict | Exception) -> FastAPI:
    app = FastAPI()

    @app.post("/validations/test")
    async def route(request: Request) -> Response:
        async def decide(review: Review) -> Verdict:
            if isinstance(decision, Exception):
                raise decision
            return decision

        return await answer(request, "/validations/test", decide)

    return app


async def post(app: FastAPI, content: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/validations/test", content=content)


def counter(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_answer_replies_with_the_review_and_counts_the_result() -> None:
    denied_before = counter("atc_webhook_requests_total", path="/validations/test", result="denied")
    reasons_before = counter("atc_webhook_denials_total", path="/validations/test", reason="Forbidden")
    response = await post(app_deciding(deny("Forbidden", "no")), json.dumps(review_body()).encode())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["response"]["status"] == {"status": "Failure", "message": "no", "reason": "Forbidden"}
    assert counter("atc_webhook_requests_total", path="/validations/test", result="denied") == denied_before + 1
    assert counter("atc_webhook_denials_total", path="/validations/test", reason="Forbidden") == reasons_before + 1


async def test_an_undecodable_body_is_http_400_in_plain_text() -> None:
    errors_before = counter("atc_webhook_requests_total", path="/validations/test", result="error")
    response = await post(app_deciding(allow()), b"garbage")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("failed to decode review: Expecting value")
    assert response.text.endswith("\n")
    assert counter("atc_webhook_requests_total", path="/validations/test", result="error") == errors_before + 1


async def test_a_webhook_error_is_its_http_status() -> None:
    response = await post(app_deciding(AdmissionHTTPError(503, "caches are not synced yet")), b'{"request": {}}')
    assert (response.status_code, response.text) == (503, "caches are not synced yet\n")


async def test_a_bug_is_http_500_panic_and_the_service_keeps_answering() -> None:
    response = await post(app_deciding(RuntimeError("boom")), b'{"request": {}}')
    assert (response.status_code, response.text) == (500, "panic\n")

"""The webhook's bounds on a request: body size (413 before the body is held) and JSON nesting (400)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from atc_webhook.admission import ReviewDecodeError, parse_review
from atc_webhook.limits import TOO_DEEP, BodyLimit, decode_json

LIMIT = 1024


async def echo_size(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/review", echo_size, methods=["POST"])])
    app.add_middleware(BodyLimit, max_bytes=LIMIT)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://webhook") as test_client:
        yield test_client


async def test_a_body_within_the_limit_passes(client: httpx.AsyncClient) -> None:
    answer = await client.post("/review", content=b"x" * LIMIT)
    assert (answer.status_code, answer.text) == (200, str(LIMIT))


async def test_a_declared_oversized_body_is_refused_before_it_is_read(client: httpx.AsyncClient) -> None:
    answer = await client.post("/review", content=b"x" * (LIMIT + 1))
    assert answer.status_code == 413
    assert answer.text == f"request body larger than {LIMIT} bytes\n"


async def test_a_streamed_body_is_refused_once_it_passes_the_limit(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 512  # no Content-Length: chunked

    answer = await client.post("/review", content=chunks())
    assert answer.status_code == 413


def test_deep_nesting_is_a_value_error_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ValueError, match=TOO_DEEP):
        decode_json(deep)
    with pytest.raises(ReviewDecodeError, match=TOO_DEEP):
        parse_review(b'{"request": ' + deep + b"}")

"""Bounds on what a request may make the webhook hold: body size and JSON nesting.

Admission and conversion bodies come from the API server, but their content comes from whoever
wrote the object. ``BodyLimit`` (ASGI middleware, installed by ``server.build_app``) answers 413
to a request whose body is larger than ``MAX_REQUEST_MIB``, by its Content-Length or as soon as
the bytes read pass the limit, so a 100 MB body is never held. ``decode_json`` (used by
``admission.parse_review`` and the conversion route) turns nesting deeper than Python's parser
can take into a plain ``ValueError`` (HTTP 400), never an unhandled ``RecursionError``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_DEEP = "JSON nests too deeply"


class BodyTooLargeError(Exception):
    """Raised inside the app when the body outgrows the limit mid-stream."""


def decode_json(body: bytes) -> Any:
    """``json.loads``, with too-deep nesting as a ``ValueError`` like any other malformed input."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before they are held in memory."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        text = f"request body larger than {self.max_bytes} bytes\n".encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": text})

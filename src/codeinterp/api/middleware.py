"""ASGI middleware: a request id on every response, and a cap on request body size."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codeinterp.errors import QuotaExceeded
from codeinterp.ids import new_id


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("request").encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _too_large(message: str, code: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    ).encode()


async def _send_413(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit: by Content-Length before reading them, and, for chunked
    JSON bodies, while reading them (buffered up to the limit, which is small). Chunked uploads
    are bounded by the multipart parser and the store's own size cap as they stream."""

    def __init__(
        self, app: ASGIApp, json_limit: int, upload_cap: int, upload_overhead: int
    ) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_cap = upload_cap
        self.upload_limit = upload_cap + upload_overhead  # the multipart framing around the file

    def _capped(self, receive: Receive) -> Receive:
        """`receive` that fails the request (413, through the error table) past the limit."""
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.upload_limit:
                    raise QuotaExceeded(
                        f"File is too large: the upload limit is {self.upload_cap} bytes."
                    )
            return message

        return capped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        if multipart:
            if length is not None and length.isdigit() and int(length) > self.upload_limit:
                await _send_413(
                    send,
                    _too_large(
                        f"File is too large: the upload limit is {self.upload_cap} bytes.",
                        "file_too_large",
                    ),
                )
                return
            if length is None:  # chunked: count as it arrives (file parts are not capped there)
                receive = self._capped(receive)
            await self.app(scope, receive, send)
            return
        too_big = _too_large(
            f"The request body is too large: the limit is {self.json_limit} bytes.",
            "request_too_large",
        )
        if length is not None:
            if length.isdigit() and int(length) > self.json_limit:
                await _send_413(send, too_big)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read the body here, refusing it past the limit.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.json_limit:
                await _send_413(send, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

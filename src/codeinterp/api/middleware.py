"""ASGI middleware: a request id on every response, a cap on request body size, and a cap on
how deeply a JSON body nests."""

from __future__ import annotations

import asyncio
import json
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codeinterp.errors import QuotaExceeded
from codeinterp.ids import new_id
from codeinterp.telemetry import logs, metrics


class TraceContextMiddleware:
    """A request with a W3C `traceparent` header: every span made while it is handled (runs,
    responses, executions, including the tasks it starts) joins the caller's trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(k == b"traceparent" for k, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, propagate

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        token = context.attach(propagate.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("request")
        token = logs.request_id.set(request_id)
        started = time.monotonic()
        status = 500  # what a request that fails before answering is counted as

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _account(scope, status, time.monotonic() - started)
            logs.request_id.reset(token)


def _account(scope: Scope, status: int, seconds: float) -> None:
    """The request in /metrics (by its route's template, so ids do not make new series) and as
    one log line."""
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    method = scope["method"]
    metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
    metrics.HTTP_SECONDS.labels(method, route).observe(seconds)
    logs.event(
        logs.requests,
        "request",
        method=method,
        path=scope["path"],
        route=route,
        status=status,
        duration_ms=round(seconds * 1000, 1),
    )


def _envelope(message: str, code: str | None) -> bytes:
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
                await _send_json(
                    send,
                    413,
                    _envelope(
                        f"File is too large: the upload limit is {self.upload_cap} bytes.",
                        "file_too_large",
                    ),
                )
                return
            if length is None:  # chunked: count as it arrives (file parts are not capped there)
                receive = self._capped(receive)
            await self.app(scope, receive, send)
            return
        too_big = _envelope(
            f"The request body is too large: the limit is {self.json_limit} bytes.",
            "request_too_large",
        )
        if length is not None:
            if length.isdigit() and int(length) > self.json_limit:
                await _send_json(send, 413, too_big)
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
                await _send_json(send, 413, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(b"".join(chunks), receive), send)


# A JSON string, escapes included (possessive, so a long string never backtracks).
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")
_SCAN_IN_THREAD = 1 << 16  # brackets: past this many, scan off the event loop


def _brackets(body: bytes) -> bytes:
    """The body's brackets outside JSON strings, in order."""
    return _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)


def _deeper_than(brackets: bytes, limit: int) -> bool:
    """Whether the brackets nest more than `limit` deep (linear, no recursion; it does not
    validate: the route's parser does that)."""
    depth = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return False


class JsonDepthMiddleware:
    """Refuse a request body that nests deeper than `max_depth` with a 400 envelope, before any
    route, relay or the MCP transport parses it.

    Python's JSON parser recurses once per level: 50,000 `[` raise RecursionError inside it,
    and bodies that parse still make every later walk (validation, storage, relaying) recurse as
    deep. One check here covers every route that reads a JSON body. Multipart bodies (uploads)
    are left alone; every other body is read (the size middleware outside bounds it) and
    replayed to the app."""

    def __init__(self, app: ASGIApp, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if content_type.startswith(b"multipart/"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away while sending: nobody to answer
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if await self._too_deep(body):
            answer = _envelope(
                "We could not parse the JSON body of your request: it nests arrays and objects "
                f"more than {self.max_depth} levels deep.",
                None,
            )
            await _send_json(send, 400, answer)
            return
        await self.app(scope, replay_body(body, receive), send)

    async def _too_deep(self, body: bytes) -> bool:
        if body.count(b"[") + body.count(b"{") <= self.max_depth:
            return False  # the common case: too few brackets to nest that deep at all
        brackets = _brackets(body)
        if len(brackets) > _SCAN_IN_THREAD:
            return await asyncio.to_thread(_deeper_than, brackets, self.max_depth)
        return _deeper_than(brackets, self.max_depth)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """`receive` that gives the app the body read already, then whatever comes next (a
    disconnect)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

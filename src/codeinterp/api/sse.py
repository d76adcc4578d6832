"""Server-sent events: OpenAI's framing, a heartbeat on quiet streams, and the two producers,
runs (relayed from the event bus, ending with `done`) and executions (ending with `end`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from codeinterp.agent.bus import EventBus
from codeinterp.errors import CodeInterpError

log = logging.getLogger("codeinterp.api")

HEARTBEAT_SECONDS = 15.0
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEP_ALIVE = b": keep-alive\n\n"


def frame(event: str, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def run_stream(
    bus: EventBus,
    run_id: str,
    start: Callable[[], None],
    prelude: list[tuple[str, Any]],
    heartbeat: float = HEARTBEAT_SECONDS,
) -> StreamingResponse:
    """Subscribe to the run's events, then start it, and relay until it stops.

    Subscribing before starting means no event can be missed. A client that goes away does not
    stop the run (as with OpenAI); it can poll or stream again later.
    """
    queue = bus.subscribe(run_id)
    start()

    async def events() -> AsyncIterator[bytes]:
        try:
            for event, data in prelude:
                yield frame(event, data)
            while True:
                try:
                    async with asyncio.timeout(heartbeat):
                        event, data = await queue.get()
                except TimeoutError:
                    yield KEEP_ALIVE
                    continue
                yield frame(event, data)
                if event == "done":
                    return
        finally:
            bus.unsubscribe(run_id, queue)

    return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)


_DONE = object()


# What a failure after the stream began is sent as: its exception and how many events came
# before it -> the data of the stream's last event, `error`.
Failure = Callable[[Exception, int], Any]


def error_envelope(exc: Exception, sent: int = 0) -> dict[str, Any]:
    """OpenAI's error envelope, {"error": {...}}: how a Chat Completions stream or a container
    execution's stream reports its failure (the SDK raises APIError); `sent` is not in it."""
    from .errors import error_body

    if isinstance(exc, CodeInterpError):
        return error_body(exc)[1]
    return {"error": {"message": "internal server error", "type": "server_error"}}


def response_error_event(exc: Exception, sent: int) -> dict[str, Any]:
    """The Responses API's error event (the spec's ResponseErrorEvent). Its sequence number
    follows the stream's: a response's events are numbered from 0, one by one, so the `sent`
    events before it took the numbers below `sent`."""
    error = error_envelope(exc)["error"]
    return {
        "type": "error",
        "code": error.get("code") or error["type"],
        "message": error["message"],
        "param": error.get("param"),
        "sequence_number": sent,
    }


def data_frame(event: str, data: Any) -> bytes:
    """Chat Completions' framing: `data:` lines only (the event name is not sent)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def execution_stream(
    source: AsyncGenerator[tuple[str, Any], None],
    heartbeat: float = HEARTBEAT_SECONDS,
    framer: Callable[[str, Any], bytes] = frame,
    headers: dict[str, str] | None = None,
    *,
    failure: Failure = error_envelope,
) -> StreamingResponse:
    """Relay an execution's events as server-sent events as they happen (see `relay`)."""
    return StreamingResponse(
        relay(source, heartbeat, framer, failure),
        media_type="text/event-stream",
        headers={**HEADERS, **(headers or {})},
    )


async def relay(
    source: AsyncGenerator[tuple[str, Any], None],
    heartbeat: float,
    framer: Callable[[str, Any], bytes],
    failure: Failure,
    keep_alive: bytes = KEEP_ALIVE,
) -> AsyncIterator[bytes]:
    """`source`'s (event, data) items framed as they come, with `keep_alive` while it is quiet.

    A failure after the stream began ends it with an `error` event whose data `failure` makes.
    The events are pulled by a task of their own, so a heartbeat never interrupts the source.
    When the client goes away, Starlette cancels this stream, which cancels that task inside
    the source: an execution is interrupted (see Session.execute), a batch stops its tasks.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pull() -> None:
        try:
            async with contextlib.aclosing(source) as items:
                async for item in items:
                    queue.put_nowait(item)
            queue.put_nowait(_DONE)
        except Exception as exc:  # the stream has begun: the failure becomes its last event
            log.exception("stream failed")
            queue.put_nowait(exc)

    puller = asyncio.create_task(pull(), name="stream source")
    sent = 0
    try:
        while True:
            try:
                async with asyncio.timeout(heartbeat):
                    item = await queue.get()
            except TimeoutError:
                yield keep_alive
                continue
            if item is _DONE:
                return
            if isinstance(item, Exception):
                yield framer("error", failure(item, sent))
                return
            yield framer(*item)
            sent += 1
    finally:
        if not puller.done():
            puller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await puller

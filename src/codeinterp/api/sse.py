"""Server-sent events for runs: OpenAI's framing, a heartbeat, and a terminal `done`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from codeinterp.agent.bus import EventBus

HEARTBEAT_SECONDS = 15.0


def frame(event: str, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def run_stream(
    bus: EventBus, run_id: str, start: Callable[[], None], prelude: list[tuple[str, Any]]
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
                    async with asyncio.timeout(HEARTBEAT_SECONDS):
                        event, data = await queue.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                yield frame(event, data)
                if event == "done":
                    return
        finally:
            bus.unsubscribe(run_id, queue)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

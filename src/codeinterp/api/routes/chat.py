"""Chat Completions: /v1/chat/completions, with the code interpreter run here when asked for
(agent/chat.py), relayed to the upstream model unchanged otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from codeinterp.agent.chat import CONTAINER_HEADER, ChatLoop, wants_code_interpreter
from codeinterp.api.deps import Project, ServicesDep
from codeinterp.api.sse import data_frame, execution_stream
from codeinterp.errors import InvalidRequest

router = APIRouter(prefix="/v1/chat", tags=["chat"])

# Response headers of the upstream worth passing on when relaying.
RELAYED_HEADERS = ("content-type", "x-request-id", "openai-processing-ms", "retry-after")


@router.post("/completions", response_model=None)
async def chat_completions(request: Request, services: ServicesDep, project: Project) -> Response:
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):  # RecursionError: nesting (the middleware caps it)
        raise InvalidRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    header = request.headers.get(CONTAINER_HEADER)
    if not wants_code_interpreter(body, header):
        return await _relay(services, body)
    chat = services.chat
    loop, container_id, created = await chat.start(project, body, header)
    headers = {CONTAINER_HEADER: container_id}
    if not body.get("stream"):
        try:
            return JSONResponse(await loop.run(), headers=headers)
        except BaseException:
            await chat.discard(project, container_id, created)
            raise
    return execution_stream(
        _chunks(loop), services.settings.sse_heartbeat_seconds, data_frame, headers
    )


async def _chunks(loop: ChatLoop) -> AsyncGenerator[tuple[str, Any], None]:
    """The loop's chunks as they come, then [DONE]."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    finished = object()

    async def run() -> None:
        try:
            await loop.run(queue.put_nowait)
        finally:
            queue.put_nowait(finished)

    task = asyncio.create_task(run(), name=f"chat {loop.id}")
    try:
        while (chunk := await queue.get()) is not finished:
            yield "chunk", chunk
        await task  # a failure ends the stream with an error event
        yield "done", "[DONE]"
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _relay(services: ServicesDep, body: dict[str, Any]) -> Response:
    upstream = await services.chat.relay(body)
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in RELAYED_HEADERS}
    if not body.get("stream") or not upstream.is_success:
        try:
            content = await upstream.aread()
        finally:
            await upstream.aclose()
        return Response(content, status_code=upstream.status_code, headers=headers)

    async def passthrough() -> AsyncIterator[bytes]:
        try:
            async for piece in upstream.aiter_raw():
                yield piece
        finally:
            await upstream.aclose()

    return StreamingResponse(passthrough(), status_code=upstream.status_code, headers=headers)

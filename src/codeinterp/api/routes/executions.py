"""The throughput door (an extension): one-shot executions, each in a fresh session of its own.

POST /v1/executions          one task; answered with the execution object
POST /v1/executions/batch    many; the results stream back as NDJSON, one line per task as it
                             finishes: the execution object with the task's `index` in the
                             batch, or `{"index", "error": {message, type, param, code}}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from codeinterp.errors import CodeInterpError
from codeinterp.protocol.executions import TaskBatchRequest, TaskRequest

from ..deps import Project, ServicesDep
from ..errors import error_body

log = logging.getLogger("codeinterp.api")
router = APIRouter(prefix="/v1/executions", tags=["executions"])
NDJSON = "application/x-ndjson"


@router.post("", response_model=None)
async def create_execution(
    body: TaskRequest, services: ServicesDep, project: Project
) -> JSONResponse:
    return JSONResponse(await services.executions.run(project, body))


@router.post("/batch", response_model=None)
async def run_batch(
    body: TaskBatchRequest, services: ServicesDep, project: Project
) -> StreamingResponse:
    results = services.executions.batch(project, body)
    heartbeat = services.settings.sse_heartbeat_seconds
    return StreamingResponse(
        _lines(results, heartbeat), media_type=NDJSON, headers={"Cache-Control": "no-cache"}
    )


async def _lines(results: AsyncIterator[dict[str, Any]], heartbeat: float) -> AsyncIterator[bytes]:
    """One JSON line per result; an empty line after `heartbeat` quiet seconds, so that proxies
    and clients know the batch is alive (NDJSON readers skip empty lines). A client that goes
    away stops the batch: its running tasks are interrupted and their sessions closed."""
    iterator = aiter(results)
    next_result: asyncio.Task[dict[str, Any]] | None = None
    try:
        while True:
            if next_result is None:
                next_result = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({next_result}, timeout=heartbeat)
            if not done:
                yield b"\n"
                continue
            try:
                line = next_result.result()
            except StopAsyncIteration:
                return
            finally:
                next_result = None
            error = line.get("error")
            if isinstance(error, Exception):
                if not isinstance(error, CodeInterpError):
                    log.error("batch task %s failed", line["index"], exc_info=error)
                _, envelope = error_body(error)
                line = {"index": line["index"], **envelope}
            yield json.dumps(line, separators=(",", ":")).encode() + b"\n"
    finally:
        if next_result is not None:  # the client went away mid-wait: stop the batch
            next_result.cancel()
            await asyncio.wait({next_result})  # done before the generator can be closed
        await iterator.aclose()  # type: ignore[attr-defined]

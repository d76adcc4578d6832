"""The throughput door (an extension): one-shot executions, each in a fresh session of its own.

POST /v1/executions          one task; answered with the execution object
POST /v1/executions/batch    many; the results stream back as NDJSON, one line per task as it
                             finishes: the execution object with the task's `index` in the
                             batch, or `{"index", "error": {message, type, param, code}}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from codeinterp.errors import CodeInterpError
from codeinterp.protocol.executions import TaskBatchRequest, TaskRequest

from ..deps import Project, ServicesDep
from ..errors import error_body
from ..sse import error_envelope, relay

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
    """Empty lines after `sse_heartbeat_seconds` of quiet tell proxies and clients that the
    batch is alive (NDJSON readers skip them). A client that goes away stops the batch: its
    running tasks are interrupted and their sessions closed."""
    lines = relay(
        _results(services.executions.batch(project, body)),
        services.settings.sse_heartbeat_seconds,
        _ndjson_line,
        error_envelope,
        keep_alive=b"\n",
    )
    return StreamingResponse(lines, media_type=NDJSON, headers={"Cache-Control": "no-cache"})


async def _results(
    results: AsyncGenerator[dict[str, Any], None],
) -> AsyncGenerator[tuple[str, Any], None]:
    async with contextlib.aclosing(results):
        async for result in results:
            yield "result", result


def _ndjson_line(event: str, data: dict[str, Any]) -> bytes:
    """A result, a task's failure (in its place: `{"index", "error"}`), or the batch's own
    failure (`{"error"}`, the last line), as one JSON line."""
    error = data.get("error")
    if event == "result" and isinstance(error, Exception):
        if not isinstance(error, CodeInterpError):
            log.error("batch task %s failed", data["index"], exc_info=error)
        data = {"index": data["index"], **error_body(error)[1]}
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"

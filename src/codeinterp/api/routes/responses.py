"""Responses API: /v1/responses with the code_interpreter tool."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from codeinterp.api.deps import Project, ServicesDep
from codeinterp.api.sse import execution_stream, response_error_event
from codeinterp.protocol.responses import ResponseCreate

router = APIRouter(prefix="/v1/responses", tags=["responses"])


@router.post("", response_model=None)
async def create_response(
    body: ResponseCreate, services: ServicesDep, project: Project
) -> JSONResponse | StreamingResponse:
    responses = services.responses
    response, context = await responses.prepare(project, body)
    if body.stream:
        events = responses.stream(project, response, context)
        return execution_stream(
            events, services.settings.sse_heartbeat_seconds, failure=response_error_event
        )
    return JSONResponse(await responses.complete(project, response, context))


@router.get("/{response_id}")
async def retrieve_response(
    response_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.responses.retrieve(project, response_id)


@router.delete("/{response_id}")
async def delete_response(
    response_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.responses.delete(project, response_id)


@router.get("/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    services: ServicesDep,
    project: Project,
    after: str | None = None,
    limit: int = 20,
    order: str = "desc",
) -> dict[str, Any]:
    return await services.responses.input_items(project, response_id, after, limit, order)

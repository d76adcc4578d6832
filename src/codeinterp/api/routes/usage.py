"""Usage: /v1/organization/usage/code_interpreter_sessions, and /health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from codeinterp.api.deps import Project, ServicesDep
from codeinterp.errors import InvalidRequest

router = APIRouter(tags=["usage"])


def _int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(
            f"Invalid value for '{name}': {value!r} is not an integer.", param=name
        ) from None


@router.get("/v1/organization/usage/code_interpreter_sessions")
async def code_interpreter_sessions(
    request: Request, services: ServicesDep, project: Project
) -> dict[str, Any]:
    query = request.query_params
    start = _int(query.get("start_time"), "start_time")
    if start is None:
        raise InvalidRequest("Missing required parameter: 'start_time'.", param="start_time")
    group_by = query.getlist("group_by") + query.getlist("group_by[]")
    return await services.usage.code_interpreter_sessions(
        project,
        start,
        _int(query.get("end_time"), "end_time"),
        query.get("bucket_width", "1d"),
        _int(query.get("limit"), "limit"),
        group_by,
    )


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    sandbox = request.app.state.sandbox
    return {
        "status": "ok",
        "sandbox": {"isolated": not sandbox.unsafe, "warm_sessions": sandbox.pool_ready},
    }

"""Runs and run steps: /v1/threads/{id}/runs..., /v1/threads/runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from codeinterp.api.deps import Project, ServicesDep
from codeinterp.api.sse import run_stream
from codeinterp.protocol.runs import (
    Run,
    RunCreate,
    RunUpdate,
    SubmitToolOutputs,
    ThreadAndRunCreate,
)

router = APIRouter(prefix="/v1/threads", tags=["runs"])


def poll_after_ms(services: ServicesDep, run_id: str) -> str:
    """How long the SDK's poll helper should wait: briefly while a run is young (most finish
    within a second), then less and less often."""
    age = services.runs.age_seconds(run_id)
    base = services.settings.poll_after_ms
    if age is None or age < 1:
        return str(base)
    return str(max(base, 100 if age < 10 else 500))


def _poll_header(response: Response, services: ServicesDep, run_id: str) -> None:
    response.headers["openai-poll-after-ms"] = poll_after_ms(services, run_id)


def _started(
    request: Request,
    services: ServicesDep,
    project: str,
    run: Run,
    stream: bool | None,
    prelude: list[tuple[str, Any]] | None = None,
) -> JSONResponse | StreamingResponse:
    """Start the run; answer with it (JSON) or with its event stream."""
    bus = request.app.state.bus
    if stream:
        return run_stream(
            bus,
            run.id,
            lambda: services.runs.start(project, run),
            prelude or [],
            services.settings.sse_heartbeat_seconds,
        )
    services.runs.start(project, run)
    return JSONResponse(
        run.model_dump(mode="json"),
        headers={"openai-poll-after-ms": poll_after_ms(services, run.id)},
    )


@router.post("/runs", response_model=None)
async def create_thread_and_run(
    request: Request, body: ThreadAndRunCreate, services: ServicesDep, project: Project
) -> JSONResponse | StreamingResponse:
    thread, run = await services.runs.create_thread_and_run(project, body)
    return _started(request, services, project, run, body.stream, [("thread.created", thread)])


@router.post("/{thread_id}/runs", response_model=None)
async def create_run(
    request: Request, thread_id: str, body: RunCreate, services: ServicesDep, project: Project
) -> JSONResponse | StreamingResponse:
    run = await services.runs.create(project, thread_id, body)
    return _started(request, services, project, run, body.stream)


@router.get("/{thread_id}/runs")
async def list_runs(
    thread_id: str,
    services: ServicesDep,
    project: Project,
    after: str | None = None,
    before: str | None = None,
    limit: int = 20,
    order: str = "desc",
) -> dict[str, Any]:
    return await services.runs.list(project, thread_id, after, before, limit, order)


@router.get("/{thread_id}/runs/{run_id}")
async def retrieve_run(
    request: Request,
    thread_id: str,
    run_id: str,
    response: Response,
    services: ServicesDep,
    project: Project,
) -> dict[str, Any]:
    hold = services.settings.poll_hold_ms
    if hold and request.headers.get("x-stainless-poll-helper") == "true":
        # The SDK's create_and_poll/poll helpers only want the run once it settles: answer them
        # then (a long poll) instead of making them sleep a poll tick past the run's end.
        run = await services.runs.settled(project, thread_id, run_id, hold / 1000)
    else:
        run = await services.runs.current(project, thread_id, run_id)
    _poll_header(response, services, run_id)
    return run.model_dump(mode="json")


@router.post("/{thread_id}/runs/{run_id}")
async def modify_run(
    thread_id: str, run_id: str, body: RunUpdate, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.runs.update(project, thread_id, run_id, body)


@router.post("/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    thread_id: str, run_id: str, response: Response, services: ServicesDep, project: Project
) -> dict[str, Any]:
    _poll_header(response, services, run_id)
    return await services.runs.cancel(project, thread_id, run_id)


@router.post("/{thread_id}/runs/{run_id}/submit_tool_outputs", response_model=None)
async def submit_tool_outputs(
    request: Request,
    thread_id: str,
    run_id: str,
    body: SubmitToolOutputs,
    services: ServicesDep,
    project: Project,
) -> JSONResponse | StreamingResponse:
    # Checked before anything starts: a wrong submission is a 400, never a broken stream.
    deliver = await services.runs.prepare_tool_outputs(project, thread_id, run_id, body)
    if body.stream:
        return run_stream(request.app.state.bus, run_id, deliver, [])
    deliver()
    run = await services.runs.current(project, thread_id, run_id)
    return JSONResponse(
        run.model_dump(mode="json"),
        headers={"openai-poll-after-ms": poll_after_ms(services, run_id)},
    )


@router.get("/{thread_id}/runs/{run_id}/steps")
async def list_run_steps(
    thread_id: str,
    run_id: str,
    services: ServicesDep,
    project: Project,
    after: str | None = None,
    before: str | None = None,
    limit: int = 20,
    order: str = "desc",
) -> dict[str, Any]:
    return await services.runs.list_steps(project, thread_id, run_id, after, before, limit, order)


@router.get("/{thread_id}/runs/{run_id}/steps/{step_id}")
async def retrieve_run_step(
    thread_id: str, run_id: str, step_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.runs.get_step(project, thread_id, run_id, step_id)

"""What routes depend on: the services (from app.state) and the caller's project (from the key).
`Annotated` aliases keep route signatures readable as contracts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from codeinterp.config import DEFAULT_PROJECT, Settings
from codeinterp.errors import Unauthorized
from codeinterp.services.assistants import AssistantsService
from codeinterp.services.chat import ChatService
from codeinterp.services.containers import ContainersService
from codeinterp.services.environments import EnvironmentsService
from codeinterp.services.executions import ExecutionsService
from codeinterp.services.files import FilesService
from codeinterp.services.models import ModelsService
from codeinterp.services.responses import ResponsesService
from codeinterp.services.runs import RunsService
from codeinterp.services.threads import ThreadsService
from codeinterp.services.traces import TracesService
from codeinterp.services.usage import UsageService


@dataclass
class Services:
    settings: Settings
    files: FilesService
    assistants: AssistantsService
    threads: ThreadsService
    runs: RunsService
    usage: UsageService
    containers: ContainersService
    executions: ExecutionsService
    environments: EnvironmentsService
    responses: ResponsesService
    chat: ChatService
    models: ModelsService
    traces: TracesService | None  # None: the trace store is off


# Both are `async def` though they never wait: FastAPI runs a plain `def` dependency in a worker
# thread, which cost ~0.5 ms per request.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_project(request: Request) -> str:
    """The caller's project: from a configured key, or the default one when none are set."""
    return project_for(request.app.state.key_projects, request.headers.get("authorization", ""))


def project_for(keys: dict[str, str], authorization: str) -> str:
    """The project of an Authorization header's bearer key; Unauthorized if it names none."""
    scheme, _, key = authorization.partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    if not keys:
        return DEFAULT_PROJECT
    if not key:
        raise Unauthorized(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    project = keys.get(key)
    if project is None:
        shown = f"{key[:3]}...{key[-4:]}" if len(key) > 8 else "***"
        raise Unauthorized(f"Incorrect API key provided: {shown}.")
    return project


ServicesDep = Annotated[Services, Depends(get_services)]
Project = Annotated[str, Depends(get_project)]

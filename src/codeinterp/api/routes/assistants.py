"""Assistants API: /v1/assistants."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from codeinterp.api.deps import Project, ServicesDep
from codeinterp.protocol.assistants import AssistantCreate, AssistantUpdate

router = APIRouter(prefix="/v1/assistants", tags=["assistants"])


@router.post("")
async def create_assistant(
    body: AssistantCreate, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.assistants.create(project, body)


@router.get("")
async def list_assistants(
    services: ServicesDep,
    project: Project,
    after: str | None = None,
    before: str | None = None,
    limit: int = 20,
    order: str = "desc",
) -> dict[str, Any]:
    return await services.assistants.list(project, after, before, limit, order)


@router.get("/{assistant_id}")
async def retrieve_assistant(
    assistant_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return (await services.assistants.get(project, assistant_id)).model_dump(mode="json")


@router.post("/{assistant_id}")
async def modify_assistant(
    assistant_id: str, body: AssistantUpdate, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.assistants.update(project, assistant_id, body)


@router.delete("/{assistant_id}")
async def delete_assistant(
    assistant_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.assistants.delete(project, assistant_id)

"""Environments (an extension): /v1/environments, the package sets `codeinterp env build` made."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from codeinterp.api.deps import Project, ServicesDep

router = APIRouter(prefix="/v1/environments", tags=["environments"])


@router.get("")
async def list_environments(services: ServicesDep, project: Project) -> dict[str, Any]:
    return await services.environments.list_environments()


@router.get("/{environment_id}")
async def retrieve_environment(
    environment_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.environments.retrieve(environment_id)

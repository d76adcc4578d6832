"""Models: /v1/models, the upstream's list relayed, with each name of the model map added."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from codeinterp.api.deps import Project, ServicesDep

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
async def list_models(services: ServicesDep, project: Project) -> dict[str, Any]:
    return await services.models.list_models()


# `:path`: upstream model ids may contain slashes ("org/model")
@router.get("/{model:path}")
async def retrieve_model(model: str, services: ServicesDep, project: Project) -> dict[str, Any]:
    return await services.models.retrieve(model)

"""Models: the upstream's list relayed, with each name of the model map added."""

from __future__ import annotations

from typing import Any

from codeinterp.agent.upstream import Upstream
from codeinterp.errors import NotFound

# owned_by of a mapped name whose target the upstream does not list
MAP_OWNER = "codeinterp"


class ModelsService:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def list_models(self) -> dict[str, Any]:
        listed = await self.upstream.list_models()
        return {"object": "list", "data": with_mapped(listed, self.upstream.model_map)}

    async def retrieve(self, model: str) -> dict[str, Any]:
        for entry in with_mapped(await self.upstream.list_models(), self.upstream.model_map):
            if entry["id"] == model:
                return entry
        raise NotFound(f"The model '{model}' does not exist or you do not have access to it.")


def with_mapped(listed: list[dict[str, Any]], model_map: dict[str, str]) -> list[dict[str, Any]]:
    """The upstream's models as they come, then one entry per mapped name, owned and dated as
    its target. A listed model that is also a mapped name gives way to the mapped entry:
    requests naming it go to the target."""
    by_id = {entry["id"]: entry for entry in listed}
    mapped = [_mapped_entry(alias, by_id.get(target)) for alias, target in model_map.items()]
    return [entry for entry in listed if entry["id"] not in model_map] + mapped


def _mapped_entry(alias: str, target: dict[str, Any] | None) -> dict[str, Any]:
    target = target or {}
    created = target.get("created")
    owner = target.get("owned_by")
    return {
        "id": alias,
        "object": "model",
        "created": created if isinstance(created, int) else 0,
        "owned_by": owner if isinstance(owner, str) else MAP_OWNER,
    }

"""Assistants: create, retrieve, modify, delete, list."""

from __future__ import annotations

from typing import Any

from codeinterp.ids import new_id
from codeinterp.protocol.assistants import (
    Assistant,
    AssistantCreate,
    AssistantUpdate,
    ToolResources,
)
from codeinterp.store import ObjectRecord, Store

from .common import check_limit, check_order, list_envelope, now
from .session_fields import session_fields


def assistant_from(record: ObjectRecord) -> Assistant:
    return Assistant.model_validate(record.body)


def assistant_to_wire(record: ObjectRecord) -> dict[str, Any]:
    return assistant_from(record).model_dump(mode="json")


async def check_file_ids(store: Store, project: str, resources: ToolResources | None) -> None:
    """Every file named in code_interpreter.file_ids must exist in this project."""
    if resources and resources.code_interpreter:
        for file_id in resources.code_interpreter.file_ids:
            await store.get_file(project, file_id)


class AssistantsService:
    def __init__(self, store: Store, data_dir: str) -> None:
        self.store = store
        self.data_dir = data_dir  # where environments are

    async def create(self, project: str, body: AssistantCreate) -> dict[str, Any]:
        await check_file_ids(self.store, project, body.tool_resources)
        fields = session_fields(self.data_dir, body.environment, body.network_policy)
        assistant = Assistant(
            id=new_id("assistant"),
            created_at=now(),
            name=body.name,
            description=body.description,
            model=body.model,
            instructions=body.instructions,
            tools=body.tools or [],
            tool_resources=body.tool_resources or ToolResources(),
            metadata=body.metadata or {},
            temperature=body.temperature,
            top_p=body.top_p,
            response_format=body.response_format or "auto",
            **fields,
        )
        await self.store.create_object("assistant", project, assistant.id, assistant.stored())
        return assistant.model_dump(mode="json")

    async def get(self, project: str, assistant_id: str) -> Assistant:
        return assistant_from(await self.store.get_object("assistant", project, assistant_id))

    async def update(
        self, project: str, assistant_id: str, body: AssistantUpdate
    ) -> dict[str, Any]:
        current = await self.get(project, assistant_id)
        await check_file_ids(self.store, project, body.tool_resources)
        changes = body.model_dump(
            mode="json",
            exclude_unset=True,
            exclude={"metadata", "environment", "network_policy"},
        )
        stored = current.stored()
        stored.update({k: v for k, v in changes.items() if k in Assistant.model_fields})
        if stored.get("tool_resources") is None:
            stored["tool_resources"] = {}  # as create makes it
        if "metadata" in body.model_fields_set:
            stored["metadata"] = body.metadata or {}
        asked = session_fields(self.data_dir, body.environment, body.network_policy)
        if "environment" in body.model_fields_set:
            stored["environment"] = asked.get("environment")
        if "network_policy" in body.model_fields_set:
            stored["network_policy"] = asked.get("network_policy")
            stored["domain_secrets"] = asked.get("domain_secrets")
        assistant = Assistant.model_validate(stored)
        await self.store.update_object("assistant", project, assistant_id, assistant.stored())
        return assistant.model_dump(mode="json")

    async def delete(self, project: str, assistant_id: str) -> dict[str, Any]:
        await self.store.delete_object("assistant", project, assistant_id)
        return {"id": assistant_id, "object": "assistant.deleted", "deleted": True}

    async def list(
        self, project: str, after: str | None, before: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        page = await self.store.list_objects(
            "assistant",
            project,
            after=after,
            before=before,
            limit=check_limit(limit),
            order=check_order(order),
        )
        return list_envelope(page.items, page.has_more, assistant_to_wire)

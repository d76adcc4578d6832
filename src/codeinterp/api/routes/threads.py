"""Threads and messages: /v1/threads, /v1/threads/{id}/messages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from codeinterp.api.deps import Project, ServicesDep
from codeinterp.protocol.threads import MessageCreate, MessageUpdate, ThreadCreate, ThreadUpdate

router = APIRouter(prefix="/v1/threads", tags=["threads"])


@router.post("")
async def create_thread(
    services: ServicesDep, project: Project, body: ThreadCreate | None = None
) -> dict[str, Any]:
    thread = await services.threads.create(project, body or ThreadCreate())
    return thread.model_dump(mode="json")


@router.get("/{thread_id}")
async def retrieve_thread(
    thread_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return (await services.threads.get(project, thread_id)).model_dump(mode="json")


@router.post("/{thread_id}")
async def modify_thread(
    thread_id: str, body: ThreadUpdate, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.threads.update(project, thread_id, body)


@router.delete("/{thread_id}")
async def delete_thread(thread_id: str, services: ServicesDep, project: Project) -> dict[str, Any]:
    return await services.threads.delete(project, thread_id)


@router.post("/{thread_id}/messages")
async def create_message(
    thread_id: str, body: MessageCreate, services: ServicesDep, project: Project
) -> dict[str, Any]:
    message = await services.threads.add_message(project, thread_id, body)
    return message.model_dump(mode="json")


@router.get("/{thread_id}/messages")
async def list_messages(
    thread_id: str,
    services: ServicesDep,
    project: Project,
    after: str | None = None,
    before: str | None = None,
    limit: int = 20,
    order: str = "desc",
    run_id: str | None = None,
) -> dict[str, Any]:
    return await services.threads.list_messages(
        project, thread_id, after, before, limit, order, run_id
    )


@router.get("/{thread_id}/messages/{message_id}")
async def retrieve_message(
    thread_id: str, message_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    message = await services.threads.get_message(project, thread_id, message_id)
    return message.model_dump(mode="json")


@router.post("/{thread_id}/messages/{message_id}")
async def modify_message(
    thread_id: str, message_id: str, body: MessageUpdate, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.threads.update_message(project, thread_id, message_id, body)


@router.delete("/{thread_id}/messages/{message_id}")
async def delete_message(
    thread_id: str, message_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.threads.delete_message(project, thread_id, message_id)

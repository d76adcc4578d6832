"""Threads and their messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from codeinterp.errors import InvalidRequest
from codeinterp.ids import new_id
from codeinterp.protocol.assistants import ToolResources
from codeinterp.protocol.runs import ACTIVE_RUN_STATUSES
from codeinterp.protocol.threads import (
    ImageFileContent,
    ImageFileRef,
    ImageUrlContent,
    ImageUrlRef,
    Message,
    MessageCreate,
    MessageUpdate,
    Text,
    TextContent,
    Thread,
    ThreadCreate,
    ThreadUpdate,
)
from codeinterp.store import ObjectRecord, Store

from .assistants import check_file_ids
from .common import check_limit, check_order, list_envelope, now


def thread_from(record: ObjectRecord) -> Thread:
    return Thread.model_validate(record.body)


def message_from(record: ObjectRecord) -> Message:
    return Message.model_validate(record.body)


def message_to_wire(record: ObjectRecord) -> dict[str, Any]:
    return message_from(record).model_dump(mode="json")


def user_content(body: MessageCreate) -> list[Any]:
    if isinstance(body.content, str):
        return [TextContent(text=Text(value=body.content))]
    parts: list[Any] = []
    for part in body.content:
        if part.type == "text":
            parts.append(TextContent(text=Text(value=part.text)))
        elif part.type == "image_file":
            file = part.image_file
            parts.append(
                ImageFileContent(image_file=ImageFileRef(file_id=file.file_id, detail=file.detail))
            )
        else:
            url = part.image_url
            parts.append(ImageUrlContent(image_url=ImageUrlRef(url=url.url, detail=url.detail)))
    if not parts:
        raise InvalidRequest("Message content must not be empty.", param="content")
    return parts


# Called when a thread is deleted, so its sandbox session is closed too.
ThreadClosedHook = Callable[[str, str], Awaitable[None]]


class ThreadsService:
    def __init__(self, store: Store, on_thread_deleted: ThreadClosedHook | None = None) -> None:
        self.store = store
        self.on_thread_deleted = on_thread_deleted

    # -- threads --------------------------------------------------------------------------------

    async def create(self, project: str, body: ThreadCreate) -> Thread:
        await check_file_ids(self.store, project, body.tool_resources)
        for message in body.messages or []:
            await self._check_attachments(project, message)
        thread = Thread(
            id=new_id("thread"),
            created_at=now(),
            metadata=body.metadata or {},
            tool_resources=body.tool_resources or ToolResources(),
        )
        await self.store.create_object("thread", project, thread.id, thread.model_dump(mode="json"))
        for message in body.messages or []:
            await self.add_message(project, thread.id, message, check_thread=False)
        return thread

    async def get(self, project: str, thread_id: str) -> Thread:
        return thread_from(await self.store.get_object("thread", project, thread_id))

    async def update(self, project: str, thread_id: str, body: ThreadUpdate) -> dict[str, Any]:
        thread = await self.get(project, thread_id)
        await check_file_ids(self.store, project, body.tool_resources)
        if "metadata" in body.model_fields_set:
            thread.metadata = body.metadata or {}
        if "tool_resources" in body.model_fields_set:
            thread.tool_resources = body.tool_resources or ToolResources()
        wire = thread.model_dump(mode="json")
        await self.store.update_object("thread", project, thread_id, wire)
        return wire

    async def delete(self, project: str, thread_id: str) -> dict[str, Any]:
        await self.get(project, thread_id)
        await self.store.delete_thread_cascade(project, thread_id)
        if self.on_thread_deleted is not None:
            await self.on_thread_deleted(project, thread_id)
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    # -- messages -------------------------------------------------------------------------------

    async def _check_attachments(self, project: str, body: MessageCreate) -> None:
        for attachment in body.attachments or []:
            await self.store.get_file(project, attachment.file_id)
        if not isinstance(body.content, str):
            for part in body.content:
                if part.type == "image_file":
                    await self.store.get_file(project, part.image_file.file_id)

    async def add_message(
        self,
        project: str,
        thread_id: str,
        body: MessageCreate,
        *,
        check_thread: bool = True,
        run_id: str | None = None,
        assistant_id: str | None = None,
    ) -> Message:
        """Add a message. From a client (check_thread), the thread must exist and have no run
        in flight, as OpenAI requires; a run adding its own messages skips both checks."""
        if check_thread:
            await self.get(project, thread_id)
            await self._check_no_active_run(project, thread_id)
        await self._check_attachments(project, body)
        created = now()
        message = Message(
            id=new_id("message"),
            created_at=created,
            thread_id=thread_id,
            status="completed",
            completed_at=created,
            role=body.role,
            content=user_content(body),
            assistant_id=assistant_id,
            run_id=run_id,
            attachments=body.attachments or [],
            metadata=body.metadata or {},
        )
        await self.store.create_object(
            "message",
            project,
            message.id,
            message.model_dump(mode="json"),
            thread_id=thread_id,
            run_id=run_id,
        )
        return message

    async def active_run(self, project: str, thread_id: str) -> str | None:
        """The id of the thread's run still in flight, if any (runs are newest first)."""
        page = await self.store.list_objects("run", project, thread_id=thread_id, limit=20)
        for record in page.items:
            if record.status in ACTIVE_RUN_STATUSES:
                return record.id
        return None

    async def _check_no_active_run(self, project: str, thread_id: str) -> None:
        active = await self.active_run(project, thread_id)
        if active is not None:
            raise InvalidRequest(
                f"Can't add messages to {thread_id} while a run {active} is active.",
                param="thread_id",
            )

    async def get_message(self, project: str, thread_id: str, message_id: str) -> Message:
        record = await self.store.get_object("message", project, message_id)
        if record.thread_id != thread_id:
            from codeinterp.errors import NotFound

            raise NotFound(f"No message found with id '{message_id}'.")
        return message_from(record)

    async def update_message(
        self, project: str, thread_id: str, message_id: str, body: MessageUpdate
    ) -> dict[str, Any]:
        message = await self.get_message(project, thread_id, message_id)
        if "metadata" in body.model_fields_set:
            message.metadata = body.metadata or {}
        wire = message.model_dump(mode="json")
        await self.store.update_object("message", project, message_id, wire)
        return wire

    async def delete_message(self, project: str, thread_id: str, message_id: str) -> dict[str, Any]:
        await self.get_message(project, thread_id, message_id)
        await self.store.delete_object("message", project, message_id)
        return {"id": message_id, "object": "thread.message.deleted", "deleted": True}

    async def list_messages(
        self,
        project: str,
        thread_id: str,
        after: str | None,
        before: str | None,
        limit: int,
        order: str,
        run_id: str | None,
    ) -> dict[str, Any]:
        await self.get(project, thread_id)
        page = await self.store.list_objects(
            "message",
            project,
            thread_id=thread_id,
            run_id=run_id,
            after=after,
            before=before,
            limit=check_limit(limit),
            order=check_order(order),
        )
        return list_envelope(page.items, page.has_more, message_to_wire)

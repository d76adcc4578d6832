"""Build a run's steps and messages while streaming their deltas, and store them.

The openai SDK rebuilds steps from `*.created` plus deltas (strings concatenated, numbers added,
list entries merged by index), so deltas carry code and outputs incrementally and every number
is sent once (see the API reference, §3.4).
"""

from __future__ import annotations

import time
from typing import Any

from codeinterp.ids import new_id
from codeinterp.protocol.runs import RunStep
from codeinterp.protocol.threads import (
    FilePathAnnotation,
    FilePathRef,
    ImageFileContent,
    ImageFileRef,
    Message,
    Text,
    TextContent,
)
from codeinterp.store import Store

from .bus import EventBus


class Emitter:
    """Stores objects and publishes their events, for one run."""

    def __init__(self, store: Store, bus: EventBus, project: str, run_id: str) -> None:
        self.store = store
        self.bus = bus
        self.project = project
        self.run_id = run_id

    def publish(self, event: str, data: Any) -> None:
        self.bus.publish(self.run_id, event, data)


class StepWriter:
    def __init__(self, emitter: Emitter, step: RunStep) -> None:
        self.emitter = emitter
        self.step = step

    @classmethod
    async def create(
        cls,
        emitter: Emitter,
        assistant_id: str,
        thread_id: str,
        kind: str,
        details: dict[str, Any],
    ) -> StepWriter:
        step = RunStep(
            id=new_id("step"),
            created_at=int(time.time()),
            assistant_id=assistant_id,
            thread_id=thread_id,
            run_id=emitter.run_id,
            type=kind,  # type: ignore[arg-type]
            step_details=details,
        )
        wire = step.model_dump(mode="json")
        await emitter.store.create_object(
            "run_step",
            emitter.project,
            step.id,
            wire,
            thread_id=thread_id,
            run_id=emitter.run_id,
            status=step.status,
        )
        emitter.publish("thread.run.step.created", wire)
        emitter.publish("thread.run.step.in_progress", wire)
        return cls(emitter, step)

    def delta(self, details: dict[str, Any]) -> None:
        self.emitter.publish(
            "thread.run.step.delta",
            {
                "id": self.step.id,
                "object": "thread.run.step.delta",
                "delta": {"step_details": details},
            },
        )

    async def save(self) -> None:
        await self.emitter.store.update_object(
            "run_step",
            self.emitter.project,
            self.step.id,
            self.step.model_dump(mode="json"),
            status=self.step.status,
        )

    async def finish(self, status: str, last_error: dict[str, str] | None = None) -> None:
        """Move to a final status (completed, failed, cancelled, expired) and say so."""
        if self.step.status != "in_progress":
            return
        stamp = int(time.time())
        self.step.status = status  # type: ignore[assignment]
        if status == "completed":
            self.step.completed_at = stamp
        elif status == "failed":
            self.step.failed_at = stamp
        elif status == "cancelled":
            self.step.cancelled_at = stamp
        elif status == "expired":
            self.step.expired_at = stamp
        if last_error is not None:
            self.step.last_error = last_error  # type: ignore[assignment]
        await self.save()
        self.emitter.publish(f"thread.run.step.{status}", self.step.model_dump(mode="json"))


class MessageWriter:
    """The assistant's message: images first, then the text as it streams."""

    def __init__(self, emitter: Emitter, message: Message, step: StepWriter) -> None:
        self.emitter = emitter
        self.message = message
        self.step = step
        self.text = ""
        self.images: list[str] = []

    @classmethod
    async def create(
        cls, emitter: Emitter, assistant_id: str, thread_id: str, images: list[str]
    ) -> MessageWriter:
        message = Message(
            id=new_id("message"),
            created_at=int(time.time()),
            thread_id=thread_id,
            status="in_progress",
            role="assistant",
            content=[],
            assistant_id=assistant_id,
            run_id=emitter.run_id,
            attachments=[],
        )
        step = await StepWriter.create(
            emitter,
            assistant_id,
            thread_id,
            "message_creation",
            {"type": "message_creation", "message_creation": {"message_id": message.id}},
        )
        wire = message.model_dump(mode="json")
        await emitter.store.create_object(
            "message",
            emitter.project,
            message.id,
            wire,
            thread_id=thread_id,
            run_id=emitter.run_id,
        )
        emitter.publish("thread.message.created", wire)
        emitter.publish("thread.message.in_progress", wire)
        writer = cls(emitter, message, step)
        for file_id in images:
            writer.add_image(file_id)
        return writer

    def add_image(self, file_id: str) -> None:
        index = len(self.images)
        self.images.append(file_id)
        self._delta([{"index": index, "type": "image_file", "image_file": {"file_id": file_id}}])

    def add_text(self, chunk: str) -> None:
        self.text += chunk
        self._delta([{"index": len(self.images), "type": "text", "text": {"value": chunk}}])

    def _delta(self, content: list[dict[str, Any]]) -> None:
        self.emitter.publish(
            "thread.message.delta",
            {
                "id": self.message.id,
                "object": "thread.message.delta",
                "delta": {"role": "assistant", "content": content},
            },
        )

    def _content(self, annotations: list[FilePathAnnotation]) -> list[Any]:
        parts: list[Any] = [
            ImageFileContent(image_file=ImageFileRef(file_id=f)) for f in self.images
        ]
        if self.text or not parts:
            parts.append(TextContent(text=Text(value=self.text, annotations=annotations)))
        return parts

    async def finish(self, citations: list[tuple[str, int, int, str]]) -> None:
        """Complete the message; `citations` are (text, start, end, file id) to annotate."""
        annotations = [
            FilePathAnnotation(text=t, start_index=s, end_index=e, file_path=FilePathRef(file_id=f))
            for t, s, e, f in citations
        ]
        if annotations:
            self._delta(
                [
                    {
                        "index": len(self.images),
                        "type": "text",
                        "text": {
                            "annotations": [
                                {"index": i, **a.model_dump(mode="json")}
                                for i, a in enumerate(annotations)
                            ]
                        },
                    }
                ]
            )
        await self._close("completed", annotations)
        await self.step.finish("completed")

    async def _close(self, status: str, annotations: list[FilePathAnnotation]) -> None:
        stamp = int(time.time())
        self.message.status = status  # type: ignore[assignment]
        self.message.content = self._content(annotations)
        if status == "completed":
            self.message.completed_at = stamp
        else:
            self.message.incomplete_at = stamp
        wire = self.message.model_dump(mode="json")
        await self.emitter.store.update_object(
            "message", self.emitter.project, self.message.id, wire
        )
        self.emitter.publish(f"thread.message.{status}", wire)

    async def abandon(self, reason: str, step_status: str) -> None:
        """The run stopped before the message was done: keep what it has, marked incomplete."""
        if self.message.status != "in_progress":
            return
        self.message.incomplete_details = {"reason": reason}
        await self._close("incomplete", [])
        await self.step.finish(step_status)

"""Runs and run steps: create (with the active-run rule), retrieve, list, modify, cancel,
submit tool outputs, create a thread and run it."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from codeinterp.agent.manager import RunManager
from codeinterp.errors import InvalidRequest, NotFound
from codeinterp.ids import new_id
from codeinterp.protocol.runs import (
    Run,
    RunCreate,
    RunFields,
    RunStep,
    RunUpdate,
    SubmitToolOutputs,
    ThreadAndRunCreate,
)
from codeinterp.protocol.threads import ThreadCreate
from codeinterp.store import ObjectRecord, Store

from .assistants import AssistantsService
from .common import check_limit, check_order, list_envelope, now
from .threads import ThreadsService


def run_to_wire(record: ObjectRecord) -> dict[str, Any]:
    return Run.model_validate(record.body).model_dump(mode="json")


def step_to_wire(record: ObjectRecord) -> dict[str, Any]:
    return RunStep.model_validate(record.body).model_dump(mode="json")


class RunsService:
    def __init__(
        self,
        store: Store,
        assistants: AssistantsService,
        threads: ThreadsService,
        runs: RunManager,
        expiry_seconds: int,
    ) -> None:
        self.store = store
        self.assistants = assistants
        self.threads = threads
        self.runs = runs
        self.expiry_seconds = expiry_seconds
        self._thread_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # what create() read, handed to the run when it starts
        self._loaded: dict[str, tuple[Any, Any]] = {}

    async def create(self, project: str, thread_id: str, body: RunCreate) -> Run:
        """Store a queued run; the caller starts it (as JSON or as a stream)."""
        thread = await self.threads.get(project, thread_id)
        async with self._thread_locks[thread_id]:
            await self._check_no_active_run(project, thread_id)
            assistant = await self.assistants.get(project, body.assistant_id)
            for message in body.additional_messages or []:
                await self.threads.add_message(project, thread_id, message, check_thread=False)
            run = self._new_run(project, thread_id, assistant, body)
            await self.store.create_object(
                "run",
                project,
                run.id,
                run.model_dump(mode="json"),
                thread_id=thread_id,
                status=run.status,
            )
            self._loaded[run.id] = (assistant, thread)
        return run

    def _new_run(self, project: str, thread_id: str, assistant: Any, body: RunFields) -> Run:
        instructions = (
            body.instructions if body.instructions is not None else assistant.instructions
        )
        if body.additional_instructions:
            instructions = f"{instructions or ''}\n\n{body.additional_instructions}".strip()
        created = now()
        return Run(
            id=new_id("run"),
            created_at=created,
            thread_id=thread_id,
            assistant_id=assistant.id,
            status="queued",
            expires_at=created + self.expiry_seconds,
            model=body.model or assistant.model,
            instructions=instructions or "",
            tools=body.tools if body.tools is not None else assistant.tools,
            metadata=body.metadata or {},
            temperature=body.temperature if body.temperature is not None else assistant.temperature,
            top_p=body.top_p if body.top_p is not None else assistant.top_p,
            max_prompt_tokens=body.max_prompt_tokens,
            max_completion_tokens=body.max_completion_tokens,
            truncation_strategy=body.truncation_strategy or {"type": "auto", "last_messages": None},
            response_format=body.response_format or assistant.response_format or "auto",
            tool_choice=body.tool_choice or "auto",
            parallel_tool_calls=True
            if body.parallel_tool_calls is None
            else body.parallel_tool_calls,
        )

    async def _check_no_active_run(self, project: str, thread_id: str) -> None:
        active = await self.threads.active_run(project, thread_id)
        if active is not None:
            raise InvalidRequest(
                f"Thread {thread_id} already has an active run {active}.", param="thread_id"
            )

    async def create_thread_and_run(
        self, project: str, body: ThreadAndRunCreate
    ) -> tuple[dict[str, Any], Run]:
        await self.assistants.get(project, body.assistant_id)
        thread = await self.threads.create(project, body.thread or ThreadCreate())
        fields = body.model_dump(exclude={"thread", "tool_resources"}, exclude_unset=True)
        run = await self.create(project, thread.id, RunCreate(**fields))
        return thread.model_dump(mode="json"), run

    def start(self, project: str, run: Run) -> None:
        assistant, thread = self._loaded.pop(run.id, (None, None))
        self.runs.start(project, run, assistant, thread)

    async def current(self, project: str, thread_id: str, run_id: str) -> Run:
        """The run as it is now: from memory while it is in flight, else from the store."""
        record = await self.get(project, thread_id, run_id)
        executor = self.runs.executor(run_id)
        return executor.run if executor else Run.model_validate(record.body)

    async def settled(self, project: str, thread_id: str, run_id: str, timeout: float) -> Run:
        """The run once it leaves queued/in_progress, or as it is after `timeout` seconds."""
        await self.current(project, thread_id, run_id)  # 404 before waiting on anything
        await self.runs.wait_until_settled(run_id, timeout)
        return await self.current(project, thread_id, run_id)

    def age_seconds(self, run_id: str) -> float | None:
        """Seconds since the run started here, or None if it is not in flight."""
        executor = self.runs.executor(run_id)
        return None if executor is None else time.monotonic() - executor.started

    async def get(self, project: str, thread_id: str, run_id: str) -> ObjectRecord:
        record = await self.store.get_object("run", project, run_id)
        if record.thread_id != thread_id:
            raise NotFound(f"No run found with id '{run_id}'.")
        return record

    async def list(
        self,
        project: str,
        thread_id: str,
        after: str | None,
        before: str | None,
        limit: int,
        order: str,
    ) -> dict[str, Any]:
        await self.threads.get(project, thread_id)
        page = await self.store.list_objects(
            "run",
            project,
            thread_id=thread_id,
            after=after,
            before=before,
            limit=check_limit(limit),
            order=check_order(order),
        )
        return list_envelope(page.items, page.has_more, self._run_now)

    def _run_now(self, record: ObjectRecord) -> dict[str, Any]:
        executor = self.runs.executor(record.id)
        return executor.run.model_dump(mode="json") if executor else run_to_wire(record)

    async def update(
        self, project: str, thread_id: str, run_id: str, body: RunUpdate
    ) -> dict[str, Any]:
        record = await self.get(project, thread_id, run_id)
        executor = self.runs.executor(run_id)
        run = executor.run if executor else Run.model_validate(record.body)
        if "metadata" in body.model_fields_set:
            run.metadata = body.metadata or {}
        wire = run.model_dump(mode="json")
        await self.store.update_object("run", project, run_id, wire, status=run.status)
        return wire

    async def cancel(self, project: str, thread_id: str, run_id: str) -> dict[str, Any]:
        record = await self.get(project, thread_id, run_id)
        run = await self.runs.cancel(run_id)
        if run is None:
            raise InvalidRequest(f"Cannot cancel run with status '{record.status}'.")
        return run.model_dump(mode="json")

    async def prepare_tool_outputs(
        self, project: str, thread_id: str, run_id: str, body: SubmitToolOutputs
    ) -> Callable[[], None]:
        """Check a submission; returns the call that hands the outputs to the waiting run."""
        run = await self.current(project, thread_id, run_id)
        if run.status != "requires_action":
            raise InvalidRequest(
                f'Runs in status "{run.status}" do not accept tool outputs.', param="run_id"
            )
        return self.runs.prepare_tool_outputs(run_id, body.tool_outputs)

    async def get_step(
        self, project: str, thread_id: str, run_id: str, step_id: str
    ) -> dict[str, Any]:
        await self.get(project, thread_id, run_id)
        record = await self.store.get_object("run_step", project, step_id)
        if record.run_id != run_id:
            raise NotFound(f"No run step found with id '{step_id}'.")
        return step_to_wire(record)

    async def list_steps(
        self,
        project: str,
        thread_id: str,
        run_id: str,
        after: str | None,
        before: str | None,
        limit: int,
        order: str,
    ) -> dict[str, Any]:
        await self.get(project, thread_id, run_id)
        page = await self.store.list_objects(
            "run_step",
            project,
            run_id=run_id,
            after=after,
            before=before,
            limit=check_limit(limit),
            order=check_order(order),
        )
        return list_envelope(page.items, page.has_more, step_to_wire)

"""One run, from queued to a final status: the model ⇄ python tool loop.

    queued → in_progress → (model turn → python calls → model turn ...)* → completed
                        ↘ requires_action (function tools) → queued → in_progress ...
    any time: cancel → cancelling → cancelled; past expires_at → expired; failure → failed

The model's turns are streamed and relayed as message and step deltas. Python calls run in the
thread's sandbox session; their output goes back to the model, errors included, so it can fix
its code. Images become files (assistants_output) shown on the step and in the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from codeinterp.config import Settings
from codeinterp.errors import (
    CodeInterpError,
    NotFound,
    QuotaExceeded,
    TimeLimitExceeded,
    ToolBudgetExceeded,
)
from codeinterp.protocol.assistants import Assistant
from codeinterp.protocol.runs import Run, ToolOutput
from codeinterp.protocol.threads import Message, Thread
from codeinterp.sessions import ManagedSession, SessionManager, execution
from codeinterp.sessions.options import options_for
from codeinterp.store import FileRecord, Store

from . import prompt, python_tool
from .annotations import find_citations
from .bus import EventBus
from .history import conversation
from .loop import MAX_TOOL_CALLS_SETTING, LoopRequest, ModelLoop, ToolResult
from .upstream import Completion, ToolCallDraft, Upstream
from .writers import Emitter, MessageWriter, StepWriter

log = logging.getLogger("codeinterp.agent")

SHUTDOWN_MESSAGE = "The server shut down while this run was in progress."


class OutputFiles(Protocol):
    """Where a run's files go (the Files API, purpose assistants_output)."""

    async def create_output(
        self, project: str, filename: str, data: bytes | AsyncIterator[bytes]
    ) -> FileRecord: ...


@dataclass
class AgentDeps:
    store: Store
    bus: EventBus
    sessions: SessionManager
    files: OutputFiles
    upstream: Upstream
    settings: Settings


class RunFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _now() -> int:
    return int(time.time())


class RunExecutor:
    def __init__(
        self,
        deps: AgentDeps,
        project: str,
        run: Run,
        assistant: Assistant | None = None,
        thread: Thread | None = None,
    ) -> None:
        self.deps = deps
        self.project = project
        self.run = run
        self._assistant = assistant  # as the caller already read them, to save two reads
        self._thread = thread
        self.emitter = Emitter(deps.store, deps.bus, project, run.id)
        self.tool_outputs: asyncio.Future[list[ToolOutput]] | None = None
        self.started = time.monotonic()
        self.shutting_down = False  # set by the manager: a cancel then means the server stops
        self._message: MessageWriter | None = None
        self._step: StepWriter | None = None
        self._pending_images: list[str] = []
        self._copied_bytes = 0  # of cited files copied out of the session, for max_output_bytes
        self.loop: ModelLoop | None = None
        self._relayed: dict[int, str] = {}  # the turn's tool call index -> code relayed so far
        self._entries: dict[str, dict[str, Any]] = {}  # the turn's step details, by call id
        self._file_ids: list[str] = []  # files the run's session gets

    # -- run state ------------------------------------------------------------------------------

    async def save_run(self, event: str | None = None, *, persist: bool = True) -> None:
        """Publish the run's new state; store it too unless it is a passing one.

        While a run is in flight, readers get it from memory (RunsService.current), and after a
        crash every stored run that is not terminal is failed anyway: storing queued ->
        in_progress -> requires_action would only cost time on the run's critical path.
        """
        wire = self.run.model_dump(mode="json")
        if persist:
            await self.deps.store.update_object(
                "run", self.project, self.run.id, wire, status=self.run.status
            )
        if event:
            self.emitter.publish(event, wire)

    async def _set_status(self, status: str) -> None:
        """A passing status (queued, in_progress, requires_action): published, not stored."""
        self.run.status = status  # type: ignore[assignment]
        await self.save_run(f"thread.run.{status}", persist=False)

    def _usage(self) -> dict[str, int]:
        if self.loop is None:
            return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return self.loop.usage()

    async def _finish(self, status: str, last_error: dict[str, str] | None = None) -> None:
        stamp = _now()
        self.run.status = status  # type: ignore[assignment]
        self.run.expires_at = None
        self.run.required_action = None
        self.run.usage = self._usage()  # type: ignore[assignment]
        if status == "completed":
            self.run.completed_at = stamp
        elif status == "failed":
            self.run.failed_at = stamp
            self.run.last_error = last_error  # type: ignore[assignment]
        elif status == "cancelled":
            self.run.cancelled_at = stamp
        await self.save_run(f"thread.run.{status}")

    # -- entry point ----------------------------------------------------------------------------

    async def execute(self) -> None:
        try:
            self.emitter.publish("thread.run.created", self.run.model_dump(mode="json"))
            self.emitter.publish("thread.run.queued", self.run.model_dump(mode="json"))
            # expires_at is in whole seconds; the run's lifetime is measured from now, exactly.
            lifetime = (
                self.run.expires_at - self.run.created_at
                if self.run.expires_at
                else self.deps.settings.run_expiry_seconds
            )
            await self._loop(max(0, lifetime))
        except TimeLimitExceeded:
            await self._stop_open_work("run_expired", "expired")
            await self._finish("expired")
        except asyncio.CancelledError:
            await asyncio.shield(self._cancelled())
        except RunFailed as exc:
            await self._stop_open_work("run_failed", "failed")
            await self._finish("failed", {"code": exc.code, "message": str(exc)})
        except ToolBudgetExceeded as exc:
            await self._stop_open_work("run_failed", "failed")
            await self._finish("failed", {"code": "server_error", "message": str(exc)})
        except Exception as exc:  # a bug or an unexpected failure: the run says so
            log.exception("run %s failed", self.run.id)
            await self._stop_open_work("run_failed", "failed")
            message = str(exc) if isinstance(exc, CodeInterpError) else "internal server error"
            await self._finish("failed", {"code": "server_error", "message": message})
        finally:
            self.deps.bus.end(self.run.id)

    async def _cancelled(self) -> None:
        if self.shutting_down:
            await self._stop_open_work("run_failed", "failed")
            await self._finish("failed", {"code": "server_error", "message": SHUTDOWN_MESSAGE})
            return
        await self._stop_open_work("run_cancelled", "cancelled")
        await self._finish("cancelled")

    async def _stop_open_work(self, reason: str, step_status: str) -> None:
        if self._message is not None:
            await self._message.abandon(reason, step_status)
            self._message = None
        if self._step is not None:
            await self._step.finish(step_status)
            self._step = None

    # -- the loop -------------------------------------------------------------------------------

    async def _loop(self, lifetime: float) -> None:
        store = self.deps.store
        assistant = self._assistant = self._assistant or Assistant.model_validate(
            (await store.get_object("assistant", self.project, self.run.assistant_id)).body
        )
        thread = self._thread or Thread.model_validate(
            (await store.get_object("thread", self.project, self.run.thread_id)).body
        )
        self.run.started_at = _now()
        await self._set_status("in_progress")
        self.loop = ModelLoop(
            self.deps.upstream, await self._request(assistant, thread, lifetime), self
        )
        outcome = await self.loop.run()
        if self._message is not None:
            await self._complete_message()
        if self._pending_images:
            await self._open_message()
            await self._complete_message()
        if outcome.status == "incomplete":
            self.run.incomplete_details = {"reason": outcome.reason}
            await self._finish("incomplete")
            return
        await self._finish("completed")

    async def _request(self, assistant: Assistant, thread: Thread, lifetime: float) -> LoopRequest:
        run = self.run
        uses_python = any(t.type == "code_interpreter" for t in run.tools)
        messages = await self._thread_messages()
        self._file_ids = self._file_ids_of(assistant, thread, messages) if uses_python else []
        paths = await self._plan_paths(self._file_ids)
        system = prompt.system_message(
            run.instructions, None, uses_python, sorted(paths.values()), assistant.allowed_domains
        )
        truncation = run.truncation_strategy or {}
        last = (
            truncation.get("last_messages") if truncation.get("type") == "last_messages" else None
        )
        history = await conversation(self.deps.store, self.project, messages, run.id, last)
        return LoopRequest(
            model=run.model,
            messages=history,
            system=[system],
            python=uses_python,
            function_tools=[
                {"type": "function", "function": t.function.model_dump(exclude_none=True)}
                for t in run.tools
                if t.type == "function"
            ],
            max_tool_calls=self.deps.settings.max_tool_calls_per_run,
            max_tool_calls_setting=MAX_TOOL_CALLS_SETTING,
            time_limit=lifetime,
            time_limit_setting="the run's expires_at (CODEINTERP_RUN_EXPIRY_SECONDS)",
            call_id_seed=run.id,
            tool_choice=python_tool.tool_choice_for_model(run.tool_choice),
            options=_sampling(run),
            max_prompt_tokens=run.max_prompt_tokens,
            max_completion_tokens=run.max_completion_tokens,
            trace={
                "codeinterp.door": "assistants",
                "codeinterp.project": self.project,
                "codeinterp.run.id": run.id,
                "gen_ai.agent.id": run.assistant_id,
                "gen_ai.conversation.id": run.thread_id,
            },
        )

    @staticmethod
    def _file_ids_of(assistant: Assistant, thread: Thread, messages: list[Message]) -> list[str]:
        ids: list[str] = []
        for resources in (assistant.tool_resources, thread.tool_resources):
            if resources and resources.code_interpreter:
                ids.extend(resources.code_interpreter.file_ids)
        for message in messages:
            for attachment in message.attachments or []:
                if (
                    any(t.type == "code_interpreter" for t in attachment.tools)
                    or not attachment.tools
                ):
                    ids.append(attachment.file_id)
        return list(dict.fromkeys(ids))

    async def _thread_messages(self) -> list[Message]:
        messages: list[Message] = []
        after = None
        while True:
            page = await self.deps.store.list_objects(
                "message",
                self.project,
                thread_id=self.run.thread_id,
                after=after,
                limit=100,
                order="asc",
            )
            messages.extend(Message.model_validate(r.body) for r in page.items)
            if not page.has_more or not page.items:
                return messages
            after = page.items[-1].id

    async def _plan_paths(self, file_ids: list[str]) -> dict[str, str]:
        known = await self.deps.sessions.known_files(self.project, "thread", self.run.thread_id)
        records = []
        for file_id in file_ids:
            if file_id not in known:
                with contextlib.suppress(NotFound):
                    records.append(await self.deps.store.get_file(self.project, file_id))
        return {**known, **SessionManager.plan_paths(known, records)}

    # -- one model turn -------------------------------------------------------------------------

    async def _open_message(self) -> MessageWriter:
        if self._message is None:
            self._message = await MessageWriter.create(
                self.emitter, self.run.assistant_id, self.run.thread_id, self._pending_images
            )
            self._pending_images = []
        return self._message

    # -- the loop's events (ToolHost) -----------------------------------------------------------

    async def text(self, delta: str) -> None:
        (await self._open_message()).add_text(delta)

    async def tool_call(self, call: ToolCallDraft, fragment: str) -> None:
        await self._relay_tool_call(call, fragment)

    async def turn_streamed(self, completion: Completion) -> None:
        self._relayed = {}
        if self._message is not None:
            await self._complete_message()

    async def run_python(self, call: ToolCallDraft, code: str) -> str:
        step = await self._tool_step()
        outputs, result = await self._run_python(step, call, code)
        self._entries[call.id] = {
            "id": call.id,
            "type": "code_interpreter",
            "code_interpreter": {"input": code, "outputs": outputs},
        }
        return result

    async def call_functions(self, calls: list[ToolCallDraft]) -> dict[str, str] | None:
        step = await self._tool_step()
        for call in calls:
            self._entries[call.id] = _function_entry(call, None)
        step.step.step_details = {"type": "tool_calls", "tool_calls": list(self._entries.values())}
        await step.save()
        submitted = await self._require_action(calls)
        return {output.tool_call_id: output.output for output in submitted}

    async def turn_done(self, results: Sequence[ToolResult]) -> None:
        step = await self._tool_step()
        details = []
        for result in results:
            if result.kind == "python":
                details.append(self._entries[result.call.id])
            else:
                output = result.output if result.kind == "function" else "unknown tool"
                details.append(_function_entry(result.call, output))
        step.step.step_details = {"type": "tool_calls", "tool_calls": details}
        await step.finish("completed")
        self._step = None
        self._entries = {}

    async def _tool_step(self) -> StepWriter:
        if self._step is None:
            self._step = await StepWriter.create(
                self.emitter,
                self.run.assistant_id,
                self.run.thread_id,
                "tool_calls",
                {"type": "tool_calls", "tool_calls": []},
            )
        return self._step

    async def _relay_tool_call(self, call: ToolCallDraft, fragment: str) -> None:
        relayed = self._relayed
        if self._message is not None:
            await self._complete_message()  # text before a tool call is its own message
        step = await self._tool_step()
        is_python = call.name == python_tool.TOOL_NAME
        if call.index not in relayed:
            relayed[call.index] = ""
            entry: dict[str, Any] = {"index": call.index, "id": call.id or f"call_{call.index}"}
            if is_python:
                entry.update(type="code_interpreter", code_interpreter={"input": "", "outputs": []})
            else:
                entry.update(
                    type="function", function={"name": call.name, "arguments": "", "output": None}
                )
            step.delta({"type": "tool_calls", "tool_calls": [entry]})
        if is_python:
            code = python_tool.partial_code(call.arguments)
            shown = relayed[call.index]
            if code.startswith(shown) and len(code) > len(shown):
                relayed[call.index] = code
                step.delta(
                    {
                        "type": "tool_calls",
                        "tool_calls": [
                            {
                                "index": call.index,
                                "type": "code_interpreter",
                                "code_interpreter": {"input": code[len(shown) :]},
                            }
                        ],
                    }
                )
        elif fragment:
            step.delta(
                {
                    "type": "tool_calls",
                    "tool_calls": [
                        {
                            "index": call.index,
                            "type": "function",
                            "function": {"arguments": fragment},
                        }
                    ],
                }
            )

    async def _complete_message(self) -> None:
        writer = self._message
        if writer is None:
            return
        self._message = None
        citations = []
        managed = self.deps.sessions.peek(self.project, "thread", self.run.thread_id)
        for citation in find_citations(writer.text):
            if managed is None:
                break
            file_id = await self._copy_cited_file(managed, citation.name)
            if file_id is not None:
                citations.append((citation.text, citation.start, citation.end, file_id))
        await writer.finish(citations)

    async def _copy_cited_file(self, managed: ManagedSession, name: str) -> str | None:
        """A file the model cited, streamed into a new File; None (the text is left alone) if
        it is not there, is over the per-file limit, or would pass the run's budget."""
        settings = self.deps.settings
        try:
            reader = await managed.session.open_file(name, settings.max_download_bytes)
        except CodeInterpError as exc:
            if isinstance(exc, QuotaExceeded):
                log.warning("run %s: cited file not copied: %s", self.run.id, exc)
            return None  # or the model cited a file that is not there
        with reader:
            if self._copied_bytes + reader.size > settings.max_output_bytes:
                log.warning(
                    "run %s: cited file %s (%d bytes) not copied: the run's files would pass "
                    "max_output_bytes (%d bytes)",
                    self.run.id,
                    reader.name,
                    reader.size,
                    settings.max_output_bytes,
                )
                return None
            self._copied_bytes += reader.size
            try:
                record = await self.deps.files.create_output(
                    self.project, name.rsplit("/", 1)[-1], reader.chunks()
                )
            except CodeInterpError as exc:  # over the upload limit, or it changed meanwhile
                log.warning("run %s: cited file %s not copied: %s", self.run.id, reader.name, exc)
                return None
        return str(record.id)

    # -- tools ----------------------------------------------------------------------------------

    async def _require_action(self, calls: list[Any]) -> list[ToolOutput]:
        self.tool_outputs = asyncio.get_running_loop().create_future()
        self.run.required_action = {  # type: ignore[assignment]
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in calls
                ]
            },
        }
        await self._set_status("requires_action")
        self.deps.bus.end(self.run.id)  # streams stop here; submit_tool_outputs starts a new one
        outputs = await self.tool_outputs
        self.tool_outputs = None
        self.run.required_action = None
        await self._set_status("queued")
        await self._set_status("in_progress")
        return outputs

    async def _session(self) -> ManagedSession:
        sessions = self.deps.sessions
        # A thread's session is made as the assistant of the run that first needs it asks.
        assistant = self._assistant
        options = (
            None
            if assistant is None
            else options_for(
                self.deps.settings.data_dir,
                assistant.environment,
                assistant.network_request(),
            )
        )
        managed = await sessions.acquire(self.project, "thread", self.run.thread_id, options)
        await sessions.load_files(managed, self._file_ids)
        return managed

    async def _run_python(
        self, step: StepWriter, call: ToolCallDraft, code: str
    ) -> tuple[list[dict[str, Any]], str]:
        """Run the code in the thread's session, relaying its logs and images as step deltas;
        returns the call's outputs and what the model reads back."""
        managed = await self._session()
        index = call.index
        outputs: list[dict[str, Any]] = []
        logs_index: int | None = None

        def show(output: dict[str, Any], at: int) -> None:
            entry = {"index": index, "type": "code_interpreter"}
            step.delta(
                {
                    "type": "tool_calls",
                    "tool_calls": [
                        {**entry, "code_interpreter": {"outputs": [{"index": at, **output}]}}
                    ],
                }
            )

        def add_logs(text: str) -> None:
            nonlocal logs_index
            if not text:
                return
            if logs_index is None:
                logs_index = len(outputs)
                outputs.append({"type": "logs", "logs": ""})
            outputs[logs_index]["logs"] += text
            show({"type": "logs", "logs": text}, logs_index)

        result: dict[str, Any] = {}
        images = 0
        events = execution.execute(
            managed, code, self.deps.settings.execution_timeout, self._save_image, call_id=call.id
        )
        async for name, data in events:
            if name in ("stdout", "stderr"):
                add_logs(data["text"])
            elif name == "result" and data.get("file_id"):
                images += 1
                image = {"type": "image", "image": {"file_id": data["file_id"]}}
                outputs.append(image)
                show(image, len(outputs) - 1)
            elif name == "result" and data["type"] == "execute_result":
                if "text/plain" in data["data"]:
                    add_logs(str(data["data"]["text/plain"]) + "\n")
            elif name == "error":
                add_logs(data["traceback"] + "\n")
            elif name == "end":
                result = data
        if result["status"] not in ("ok", "error") and result["message"]:
            add_logs(f"[{result['status']}] {result['message']}\n")
        return outputs, python_tool.result_for_model(result, images)

    async def _save_image(self, extension: str, data: bytes) -> dict[str, str] | None:
        """A displayed image becomes a File (assistants_output), shown on the step and attached
        to the run's next message."""
        record = await self.deps.files.create_output(
            self.project, f"image-{self.run.id[-6:]}{extension}", data
        )
        self._pending_images.append(str(record.id))
        return {"file_id": str(record.id)}


def _sampling(run: Run) -> dict[str, Any]:
    """The run's settings that go to the model with every turn."""
    options: dict[str, Any] = {"temperature": run.temperature, "top_p": run.top_p}
    if run.response_format not in (None, "auto"):
        options["response_format"] = run.response_format
    if run.tools:  # the model refuses parallel_tool_calls without tools
        options["parallel_tool_calls"] = run.parallel_tool_calls
    return options


def _function_entry(call: ToolCallDraft, output: str | None) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments, "output": output},
    }

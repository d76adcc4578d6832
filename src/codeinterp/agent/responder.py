"""One response of the Responses API: the model loop with `code_interpreter` in a container.

The loop is the run loop's, in the Responses API's terms: each model turn streams text (a
`message` item) and tool calls; python calls run in the response's container through the
containers service (the same sessions, files and usage as every other door) and become
`code_interpreter_call` items; function calls become `function_call` items and end the
response, for the client to answer in its next request (`previous_response_id` plus
`function_call_output`). A streaming client gets the events of the reference §4.3 as the
response is built, each with its sequence number.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codeinterp.config import Settings
from codeinterp.errors import CodeInterpError
from codeinterp.ids import new_id
from codeinterp.services.containers import ContainersService

from . import prompt, python_tool
from .annotations import find_citations
from .upstream import (
    Completion,
    TextDelta,
    ToolCallDelta,
    ToolCallDraft,
    Upstream,
    UpstreamFailure,
)

log = logging.getLogger("codeinterp.responses")

# An event for a streaming client: its type and its JSON (made when it happens: the objects it
# shows keep changing).
StreamEvent = tuple[str, str]
Emit = Callable[[StreamEvent], None]


@dataclass
class ResponseContext:
    """What the loop needs besides the request: who asks, the container, the conversation."""

    project: str
    messages: list[dict[str, Any]]  # chat messages so far (no system message)
    system: str | None
    container_id: str | None
    function_names: set[str]
    function_tools: list[dict[str, Any]]
    include_outputs: bool
    max_tool_calls: int
    file_url: Callable[[str, str], str]  # (container id, file id) -> URL of its content
    sampling: dict[str, Any] = field(default_factory=dict)
    input_items: list[dict[str, Any]] = field(default_factory=list)  # as given, with ids


class ResponseBuilder:
    """The response object as it is built, and the stream events that follow its changes."""

    def __init__(self, response: dict[str, Any], emit: Emit | None) -> None:
        self.response = response
        self._emit_to = emit
        self._sequence = 0

    def emit(self, kind: str, **fields: Any) -> None:
        if self._emit_to is None:
            return
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        self._emit_to((kind, json.dumps(payload, separators=(",", ":"))))

    def lifecycle(self, kind: str) -> None:
        self.emit(kind, response=self.response)

    def add(self, item: dict[str, Any]) -> int:
        self.response["output"].append(item)
        index = len(self.response["output"]) - 1
        self.emit("response.output_item.added", output_index=index, item=item)
        return index

    def done(self, index: int) -> None:
        self.emit(
            "response.output_item.done", output_index=index, item=self.response["output"][index]
        )


class _Message:
    """The assistant message item of one model turn, open while its text streams."""

    def __init__(self, builder: ResponseBuilder) -> None:
        self.builder = builder
        self.item: dict[str, Any] = {
            "id": new_id("message"),
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        self.index = builder.add(self.item)
        self.text = ""
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        builder.emit("response.content_part.added", **self._where(), content_index=0, part=part)

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.item["id"], "output_index": self.index}

    def add(self, delta: str) -> None:
        self.text += delta
        self.builder.emit(
            "response.output_text.delta", **self._where(), content_index=0, delta=delta, logprobs=[]
        )

    def close(self, annotations: list[dict[str, Any]]) -> None:
        where = self._where()
        self.builder.emit(
            "response.output_text.done", **where, content_index=0, text=self.text, logprobs=[]
        )
        for number, annotation in enumerate(annotations):
            self.builder.emit(
                "response.output_text.annotation.added",
                **where,
                content_index=0,
                annotation_index=number,
                annotation=annotation,
            )
        part = {
            "type": "output_text",
            "text": self.text,
            "annotations": annotations,
            "logprobs": [],
        }
        self.item["content"] = [part]
        self.item["status"] = "completed"
        self.builder.emit("response.content_part.done", **where, content_index=0, part=part)
        self.builder.done(self.index)

    def abandon(self) -> None:
        """The response failed while this message was open: it stays, incomplete."""
        part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
        self.item["content"] = [part]
        self.item["status"] = "incomplete"
        self.builder.emit("response.content_part.done", **self._where(), content_index=0, part=part)
        self.builder.done(self.index)


class _CodeCall:
    """A code_interpreter_call item, open while its code streams and runs."""

    def __init__(self, builder: ResponseBuilder, container_id: str) -> None:
        self.builder = builder
        self.item: dict[str, Any] = {
            "id": new_id("code_interpreter_call"),
            "type": "code_interpreter_call",
            "status": "in_progress",
            "code": "",
            "container_id": container_id,
            "outputs": None,
        }
        self.index = builder.add(self.item)
        builder.emit("response.code_interpreter_call.in_progress", **self._where())

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.item["id"], "output_index": self.index}

    def code_so_far(self, code: str) -> None:
        if len(code) > len(self.item["code"]) and code.startswith(self.item["code"]):
            delta = code[len(self.item["code"]) :]
            self.item["code"] = code
            self.builder.emit(
                "response.code_interpreter_call_code.delta", **self._where(), delta=delta
            )

    def interpreting(self, code: str) -> None:
        self.item["code"] = code
        self.builder.emit("response.code_interpreter_call_code.done", **self._where(), code=code)
        self.item["status"] = "interpreting"
        self.builder.emit("response.code_interpreter_call.interpreting", **self._where())

    def finish(self, status: str, outputs: list[dict[str, Any]] | None) -> None:
        self.item["status"] = status
        self.item["outputs"] = outputs
        self.builder.emit("response.code_interpreter_call.completed", **self._where())
        self.builder.done(self.index)

    def abandon(self) -> None:
        """The response failed before this call ran to its end."""
        self.item["status"] = "incomplete"
        self.builder.done(self.index)


class ResponseExecutor:
    def __init__(
        self,
        upstream: Upstream,
        containers: ContainersService,
        settings: Settings,
        builder: ResponseBuilder,
        context: ResponseContext,
    ) -> None:
        self.upstream = upstream
        self.containers = containers
        self.settings = settings
        self.builder = builder
        self.context = context
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.new_files: dict[str, str] = {}  # container file id -> its path, made in this response
        self._code_calls: dict[int, _CodeCall] = {}  # the turn's python calls, by call index
        self._message: _Message | None = None  # the turn's message while its text streams
        self._turns = 0
        self._running: _CodeCall | None = None  # the call whose code runs now

    @property
    def response(self) -> dict[str, Any]:
        return self.builder.response

    async def execute(self) -> None:
        """Build the response to its end: completed, or failed with `error`."""
        self.builder.lifecycle("response.created")
        self.builder.lifecycle("response.in_progress")
        limit = self.settings.run_expiry_seconds
        try:
            async with asyncio.timeout(limit):
                await self._loop()
        except TimeoutError:
            self._fail("server_error", f"the response took longer than {limit} s and was stopped")
        except UpstreamFailure as exc:
            self._fail(exc.code, str(exc))
        except CodeInterpError as exc:
            self._fail("server_error", str(exc))
        except Exception:
            log.exception("response %s failed", self.response["id"])
            self._fail("server_error", "internal server error")
        else:
            self.response["status"] = "completed"
        if self.response["status"] != "completed":
            self._abandon_open_items()
            self._answer_unanswered_calls()
        self._set_usage()
        self.builder.lifecycle(
            "response.completed" if self.response["status"] == "completed" else "response.failed"
        )

    def _abandon_open_items(self) -> None:
        """Every item still open is closed as incomplete, so none stays in progress."""
        if self._message is not None:
            self._message.abandon()
            self._message = None
        for call in [*self._code_calls.values(), *([self._running] if self._running else [])]:
            call.abandon()
        self._code_calls.clear()
        self._running = None

    def _answer_unanswered_calls(self) -> None:
        """A failure can leave the conversation's last tool calls without results, and a model
        refuses such a conversation: a follow-up (previous_response_id) gets an error result."""
        messages = self.context.messages
        for index in range(len(messages) - 1, -1, -1):
            if messages[index].get("tool_calls"):
                answered = {m.get("tool_call_id") for m in messages[index + 1 :]}
                for call in messages[index]["tool_calls"]:
                    if call["id"] not in answered and call["function"]["name"] not in (
                        self.context.function_names
                    ):
                        messages.append(
                            {
                                "role": "tool",
                                "tool_call_id": call["id"],
                                "content": "error: the response failed before this call finished",
                            }
                        )
                return

    def _fail(self, code: str, message: str) -> None:
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}

    def _set_usage(self) -> None:
        self.response["usage"] = {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def _tools(self) -> list[dict[str, Any]]:
        tools = [python_tool.DEFINITION] if self.context.container_id else []
        return tools + self.context.function_tools

    async def _loop(self) -> None:
        context = self.context
        calls_made = 0
        while True:
            system = [{"role": "system", "content": context.system}] if context.system else []
            completion = await self._model_turn(system + context.messages)
            await self._close_message()
            if not completion.tool_calls:
                context.messages.append({"role": "assistant", "content": completion.text})
                return
            calls_made += len(completion.tool_calls)
            if calls_made > context.max_tool_calls:
                raise CodeInterpError(
                    f"the response made more than {context.max_tool_calls} tool calls"
                )
            context.messages.append(
                {
                    "role": "assistant",
                    "content": completion.text or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in completion.tool_calls
                    ],
                }
            )
            for call in completion.tool_calls:
                if call.name not in context.function_names:
                    content = await self._run_call(call)
                    context.messages.append(
                        {"role": "tool", "tool_call_id": call.id, "content": content}
                    )
            if any(c.name in context.function_names for c in completion.tool_calls):
                self._function_calls(completion)
                return  # the client runs its functions and answers in its next request

    async def _close_message(self) -> None:
        message, self._message = self._message, None
        if message is not None:
            message.close(await self._annotations(message.text))

    async def _model_turn(self, messages: list[dict[str, Any]]) -> Completion:
        completion = Completion()
        code_calls = self._code_calls = {}
        sampling = dict(self.context.sampling)
        if self._turns:  # a forced tool is the first turn's: later turns may answer in text
            sampling.pop("tool_choice", None)
        self._turns += 1
        try:
            async for delta in self.upstream.stream(
                self.response["model"], messages, self._tools(), completion, **sampling
            ):
                if isinstance(delta, TextDelta):
                    if self._message is None:
                        self._message = _Message(self.builder)
                    self._message.add(delta.text)
                elif isinstance(delta, ToolCallDelta) and delta.call.name == python_tool.TOOL_NAME:
                    call = code_calls.get(delta.call.index)
                    if call is None:
                        await self._close_message()  # its text is complete: calls come last
                        assert self.context.container_id is not None
                        call = code_calls[delta.call.index] = _CodeCall(
                            self.builder, self.context.container_id
                        )
                    call.code_so_far(python_tool.partial_code(delta.call.arguments))
        finally:
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
        for draft in completion.tool_calls:
            if not draft.id:
                draft.id = f"call_{self.response['id'][-8:]}{draft.index}"
        return completion

    async def _run_call(self, draft: ToolCallDraft) -> str:
        if draft.name != python_tool.TOOL_NAME or self.context.container_id is None:
            return f"error: there is no tool named {draft.name!r}"
        code = python_tool.code_from_arguments(draft.arguments)
        call = self._code_calls.pop(draft.index, None)
        if call is None:  # no fragment of it was seen while streaming: open its item now
            call = _CodeCall(self.builder, self.context.container_id)
        call.interpreting(code)
        self._running = call
        result = await self.containers.run(
            self.context.project, self.context.container_id, code, self.settings.execution_timeout
        )
        self._running = None
        images = [r for r in result["results"] if r.get("file_id")]
        for image in images:  # saved by the containers service as it arrived
            self.new_files[image["file_id"]] = image["path"]
        for change in result["files"]:  # written by the code
            if change.get("id") and change["change"] != "deleted":
                self.new_files[change["id"]] = change["path"]
        outputs: list[dict[str, Any]] | None = None
        if self.context.include_outputs:
            outputs = []
            logs = result["stdout"] + result["stderr"]
            if result.get("error"):
                logs += result["error"].get("traceback") or result["error"].get("value", "")
            if logs:
                outputs.append({"type": "logs", "logs": logs})
            outputs.extend(
                {
                    "type": "image",
                    "url": self.context.file_url(call.item["container_id"], r["file_id"]),
                }
                for r in images
            )
        call.finish("completed" if result["status"] in ("ok", "error") else "failed", outputs)
        return python_tool.result_for_model(result, len(images))

    def _function_calls(self, completion: Completion) -> None:
        for draft in completion.tool_calls:
            if draft.name not in self.context.function_names:
                continue
            item = {
                "id": new_id("function_call"),
                "type": "function_call",
                "status": "completed",
                "call_id": draft.id,
                "name": draft.name,
                "arguments": draft.arguments,
            }
            index = self.builder.add(item)
            self.builder.emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=draft.arguments,
            )
            self.builder.done(index)

    async def _annotations(self, text: str) -> list[dict[str, Any]]:
        """container_file_citation for each file the text links (sandbox:/mnt/data/NAME) and
        each file this response made that it does not link (at 0, as OpenAI does)."""
        container_id = self.context.container_id
        if container_id is None:
            return []
        annotations = []
        cited: set[str] = set()
        by_path = {path: file_id for file_id, path in self.new_files.items()}
        for citation in find_citations(text):
            path = f"/mnt/data/{citation.name}"
            file_id = by_path.get(path) or await self._file_id(container_id, path)
            if file_id is None:
                continue
            cited.add(file_id)
            annotations.append(_citation(container_id, file_id, path, citation.start, citation.end))
        for file_id, path in self.new_files.items():
            if file_id not in cited:
                annotations.append(_citation(container_id, file_id, path, 0, 0))
        self.new_files.clear()
        return annotations

    async def _file_id(self, container_id: str, path: str) -> str | None:
        try:
            listing = await self.containers.all_files(self.context.project, container_id)
        except CodeInterpError:
            return None
        for entry in listing:
            if entry["path"] == path:
                return str(entry["id"])
        return None


def _citation(container_id: str, file_id: str, path: str, start: int, end: int) -> dict[str, Any]:
    return {
        "type": "container_file_citation",
        "container_id": container_id,
        "file_id": file_id,
        "filename": path.rsplit("/", 1)[-1],
        "start_index": start,
        "end_index": end,
    }


def system_text(instructions: str | None, code_interpreter: bool, paths: list[str]) -> str | None:
    """The system message: the client's instructions, and the sandbox note with its files."""
    text = prompt.system_message(instructions or "", None, code_interpreter, paths)["content"]
    return str(text) or None

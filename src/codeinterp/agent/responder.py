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

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from codeinterp.config import Settings
from codeinterp.errors import CodeInterpError
from codeinterp.ids import new_id
from codeinterp.sessions.execution import IMAGE_TYPES

from . import prompt, python_tool
from .annotations import find_citations
from .loop import TIME_LIMIT_SETTING, LoopRequest, ModelLoop, ToolResult
from .upstream import Completion, ToolCallDraft, Upstream, UpstreamFailure

log = logging.getLogger("codeinterp.responses")

RunCode = Callable[[str, str], Awaitable[dict[str, Any]]]  # (code, tool call id)
FindFile = Callable[[str], Awaitable[str | None]]
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
    function_tools: list[dict[str, Any]]
    include_outputs: bool
    max_tool_calls: int
    max_tool_calls_setting: str  # what to raise past it: the request's or the server's
    run_code: RunCode  # python in the response's container: the execution's `end` body
    find_file: FindFile  # a container file's id by its path, or None
    sampling: dict[str, Any] = field(default_factory=dict)
    input_items: list[dict[str, Any]] = field(default_factory=list)  # as given, with ids

    @property
    def function_names(self) -> set[str]:
        return {t["function"]["name"] for t in self.function_tools}


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
    """One response built by the loop: the Responses door's adapter of it."""

    def __init__(
        self,
        upstream: Upstream,
        settings: Settings,
        builder: ResponseBuilder,
        context: ResponseContext,
    ) -> None:
        self.upstream = upstream
        self.settings = settings
        self.builder = builder
        self.context = context
        self.loop = ModelLoop(upstream, self._request(), self)
        self.new_files: dict[str, str] = {}  # container file id -> its path, made in this response
        self._code_calls: dict[int, _CodeCall] = {}  # the turn's python calls, by call index
        self._message: _Message | None = None  # the turn's message while its text streams
        self._running: _CodeCall | None = None  # the call whose code runs now

    @property
    def response(self) -> dict[str, Any]:
        return self.builder.response

    def _request(self) -> LoopRequest:
        context = self.context
        sampling = dict(context.sampling)
        tool_choice = sampling.pop("tool_choice", None)
        # The conversation goes on in context.messages (stored for previous_response_id); the
        # system message is this response's own and is not kept.
        return LoopRequest(
            model=self.response["model"],
            messages=context.messages,
            python=context.container_id is not None,
            function_tools=context.function_tools,
            max_tool_calls=context.max_tool_calls,
            max_tool_calls_setting=context.max_tool_calls_setting,
            time_limit=self.settings.run_expiry_seconds,
            time_limit_setting=TIME_LIMIT_SETTING,
            call_id_seed=self.response["id"],
            tool_choice=tool_choice,
            options=sampling,
            system=[{"role": "system", "content": context.system}] if context.system else [],
            trace={
                "codeinterp.door": "responses",
                "codeinterp.project": context.project,
                "codeinterp.response.id": self.response["id"],
                "codeinterp.container.id": context.container_id,
                "gen_ai.conversation.id": context.container_id,
            },
        )

    async def execute(self, before_end: Callable[[], Awaitable[None]] | None = None) -> None:
        """Build the response to its end: completed, or failed with `error`; `before_end` is
        awaited just before the terminal event (to store the response)."""
        self.builder.lifecycle("response.created")
        self.builder.lifecycle("response.in_progress")
        try:
            await self.loop.run()
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
        if before_end is not None:
            await before_end()
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
        usage = self.loop.usage()
        self.response["usage"] = {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"],
        }

    # -- the loop's events (ToolHost) -------------------------------------------------------

    async def text(self, delta: str) -> None:
        if self._message is None:
            self._message = _Message(self.builder)
        self._message.add(delta)

    async def tool_call(self, call: ToolCallDraft, fragment: str) -> None:
        if call.name != python_tool.TOOL_NAME or self.context.container_id is None:
            return
        item = self._code_calls.get(call.index)
        if item is None:
            await self._close_message()  # its text is complete: calls come last
            item = self._code_calls[call.index] = _CodeCall(self.builder, self.context.container_id)
        item.code_so_far(python_tool.partial_code(call.arguments))

    async def turn_streamed(self, completion: Completion) -> None:
        await self._close_message()

    async def run_python(self, call: ToolCallDraft, code: str) -> str:
        container_id = self.context.container_id
        assert container_id is not None
        item = self._code_calls.pop(call.index, None)
        if item is None:  # no fragment of it was seen while streaming: open its item now
            item = _CodeCall(self.builder, container_id)
        item.interpreting(code)
        self._running = item
        result = await self.context.run_code(code, call.id)
        self._running = None
        images = [r for r in result["results"] if r.get("file_id")]
        for image in images:  # saved as container files as they arrived
            self.new_files[image["file_id"]] = image["path"]
        for change in result["files"]:  # written by the code
            if change.get("id") and change["change"] != "deleted":
                self.new_files[change["id"]] = change["path"]
        outputs = _outputs(result, images) if self.context.include_outputs else None
        item.finish("completed" if result["status"] in ("ok", "error") else "failed", outputs)
        return python_tool.result_for_model(result, len(images))

    async def call_functions(self, calls: list[ToolCallDraft]) -> dict[str, str] | None:
        for draft in calls:
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
        return None  # the client runs its functions and answers in its next request

    async def turn_done(self, results: Sequence[ToolResult]) -> None:
        pass

    # -- messages and their citations -------------------------------------------------------

    async def _close_message(self) -> None:
        message, self._message = self._message, None
        if message is not None:
            message.close(await self._annotations(message.text))

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
            file_id = by_path.get(path) or await self.context.find_file(path)
            if file_id is None:
                continue
            cited.add(file_id)
            annotations.append(_citation(container_id, file_id, path, citation.start, citation.end))
        for file_id, path in self.new_files.items():
            if file_id not in cited:
                annotations.append(_citation(container_id, file_id, path, 0, 0))
        self.new_files.clear()
        return annotations


def _outputs(result: dict[str, Any], images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A code_interpreter_call's outputs: its logs, and each image as a data URI, as OpenAI
    sends it (the image is a container file too, cited in the next message)."""
    outputs: list[dict[str, Any]] = []
    logs = result["stdout"] + result["stderr"]
    if result.get("error"):
        logs += result["error"].get("traceback") or result["error"].get("value", "")
    if logs:
        outputs.append({"type": "logs", "logs": logs})
    for image in images:
        mime = next((m for m in IMAGE_TYPES if isinstance(image["data"].get(m), str)), None)
        if mime is not None:
            outputs.append({"type": "image", "url": f"data:{mime};base64,{image['data'][mime]}"})
    return outputs


def _citation(container_id: str, file_id: str, path: str, start: int, end: int) -> dict[str, Any]:
    return {
        "type": "container_file_citation",
        "container_id": container_id,
        "file_id": file_id,
        "filename": path.rsplit("/", 1)[-1],
        "start_index": start,
        "end_index": end,
    }


def system_text(
    instructions: str | None,
    code_interpreter: bool,
    paths: list[str],
    allowed_domains: Sequence[str] = (),
) -> str | None:
    """The system message: the client's instructions, and the sandbox note with its files and
    the domains its network policy allows."""
    text = prompt.system_message(
        instructions or "", None, code_interpreter, paths, allowed_domains
    )["content"]
    return str(text) or None

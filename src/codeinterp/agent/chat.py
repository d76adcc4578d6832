"""Chat Completions with the code interpreter run on the server, for clients that speak only
Chat Completions.

A request whose `tools` include `{"type": "code_interpreter"}` (optionally with `"container"`: an
id, or `{"type": "auto", "file_ids", "memory_limit"}`), or whose X-Codeinterp-Container header
names a container, is answered here: the model gets the `python` tool, its python calls run in
the container, and the client gets the final completion, streamed or not, with the container's
id in the X-Codeinterp-Container header so that a later request can continue in it. Calls to the
client's own function tools end the loop and go back to the client as usual. Every other request
is relayed to the upstream unchanged (see the route).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from codeinterp.config import Settings
from codeinterp.errors import InvalidRequest
from codeinterp.ids import new_id

from . import prompt, python_tool
from .loop import MAX_TOOL_CALLS_SETTING, TIME_LIMIT_SETTING, LoopRequest, ModelLoop, ToolResult
from .upstream import Completion, ToolCallDraft, Upstream

CONTAINER_HEADER = "x-codeinterp-container"
# Request fields the loop sets itself; every other field goes to the model as the client gave it.
OWN_FIELDS = ("model", "messages", "tools", "tool_choice", "stream", "stream_options", "n")

Chunk = dict[str, Any]


def code_interpreter_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("type") == "code_interpreter":
            return tool
    return None


def wants_code_interpreter(body: dict[str, Any], container_header: str | None) -> bool:
    return bool(container_header) or code_interpreter_tool(body) is not None


def check_request(body: dict[str, Any]) -> None:
    """What the loop needs of a request; anything else is the model's to judge."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    if body.get("n", 1) != 1:
        raise InvalidRequest("Only n=1 is supported with the code_interpreter tool.", param="n")
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict) or tool.get("type") not in ("function", "code_interpreter"):
            raise InvalidRequest(
                "With the code_interpreter tool, other tools must be functions.", param="tools"
            )
        function = tool.get("function")
        if tool["type"] == "function":
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise InvalidRequest("A function tool needs a function name.", param="tools")
            if function["name"] == python_tool.TOOL_NAME:
                raise InvalidRequest(
                    "The function name 'python' is reserved for the code_interpreter tool.",
                    param="tools",
                )


RunCode = Callable[[str, str], Awaitable[dict[str, Any]]]  # (code, tool call id)


class ChatLoop:
    """One Chat Completions request run to its final answer: the door's adapter of the loop."""

    def __init__(
        self,
        upstream: Upstream,
        settings: Settings,
        body: dict[str, Any],
        run_code: RunCode,
        paths: list[str],
        container_id: str,
        project: str,
    ) -> None:
        self.project = project
        self.upstream = upstream
        self.settings = settings
        self.body = body
        self.run_code = run_code  # runs python in the request's container; the `end` body
        self.paths = paths  # the container's files, for the prompt
        self.container_id = container_id
        self.id = new_id("chat_completion")
        self.created = int(time.time())
        self.loop: ModelLoop | None = None

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> Chunk:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def usage(self) -> dict[str, int]:
        if self.loop is None:
            return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return self.loop.usage()

    def _request(self) -> LoopRequest:
        note = prompt.system_message("", None, True, self.paths)
        functions = [t for t in self.body.get("tools") or () if t.get("type") == "function"]
        return LoopRequest(
            model=self.body["model"],
            messages=list(self.body["messages"]),
            system=[note],
            python=True,
            function_tools=functions,
            max_tool_calls=self.settings.max_tool_calls_per_run,
            max_tool_calls_setting=MAX_TOOL_CALLS_SETTING,
            time_limit=self.settings.run_expiry_seconds,
            time_limit_setting=TIME_LIMIT_SETTING,
            call_id_seed=self.id,
            tool_choice=python_tool.tool_choice_for_model(self.body.get("tool_choice")),
            options={k: v for k, v in self.body.items() if k not in OWN_FIELDS},
            trace={
                "codeinterp.door": "chat_completions",
                "codeinterp.project": self.project,
                "codeinterp.chat.id": self.id,
                "codeinterp.container.id": self.container_id,
                "gen_ai.conversation.id": self.container_id,
            },
        )

    async def run(self, emit: Callable[[Chunk], None] | None = None) -> dict[str, Any]:
        """The final chat.completion; with `emit`, its chunks are sent as they happen."""
        host = _ChatHost(self, emit)
        self.loop = ModelLoop(self.upstream, self._request(), host)
        if emit:
            emit(self._chunk({"role": "assistant", "content": ""}))
        outcome = await self.loop.run()
        return self._final(host.text_so_far, outcome.pending, outcome.completion, emit)

    def _final(
        self,
        text: str,
        calls: list[ToolCallDraft],
        completion: Completion,
        emit: Callable[[Chunk], None] | None,
    ) -> dict[str, Any]:
        tool_calls = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ]
        reason = "tool_calls" if tool_calls else (completion.finish_reason or "stop")
        if emit:
            if tool_calls:
                emit(
                    self._chunk(
                        {"tool_calls": [{"index": i, **c} for i, c in enumerate(tool_calls)]}
                    )
                )
            emit(self._chunk({}, reason))
            options = self.body.get("stream_options") or {}
            if options.get("include_usage"):
                usage_chunk = self._chunk({})
                usage_chunk["choices"] = []
                usage_chunk["usage"] = self.usage()
                emit(usage_chunk)
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.body["model"],
            "choices": [
                {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
            ],
            "usage": self.usage(),
        }


class _ChatHost:
    """The loop's events as one growing assistant message: the text of every turn, a blank line
    between turns; python runs in the container; the client's functions end the loop."""

    def __init__(self, chat: ChatLoop, emit: Callable[[Chunk], None] | None) -> None:
        self.chat = chat
        self.emit = emit
        self.text_so_far = ""
        self._turn_has_text = False

    async def text(self, delta: str) -> None:
        piece = delta
        if not self._turn_has_text and self.text_so_far:
            piece = "\n\n" + delta  # a later turn's text: its own paragraph
        self._turn_has_text = True
        self.text_so_far += piece
        if self.emit:
            self.emit(self.chat._chunk({"content": piece}))

    async def tool_call(self, call: ToolCallDraft, fragment: str) -> None:
        pass  # the client sees only the final answer and its own functions' calls

    async def turn_streamed(self, completion: Completion) -> None:
        self._turn_has_text = False

    async def run_python(self, call: ToolCallDraft, code: str) -> str:
        result = await self.chat.run_code(code, call.id)
        images = sum(1 for r in result["results"] if r.get("file_id"))
        return python_tool.result_for_model(result, images)

    async def call_functions(self, calls: list[ToolCallDraft]) -> dict[str, str] | None:
        return None  # the client runs them and sends their outputs in its next request

    async def turn_done(self, results: Sequence[ToolResult]) -> None:
        pass

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
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from codeinterp.config import Settings
from codeinterp.errors import InvalidRequest, UpstreamError
from codeinterp.ids import new_id
from codeinterp.protocol.containers import ContainerCreate
from codeinterp.services.containers import ContainersService

from . import prompt, python_tool
from .upstream import Completion, TextDelta, Upstream

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


async def open_container(
    containers: ContainersService, project: str, body: dict[str, Any], header: str | None
) -> tuple[str, bool]:
    """The container named by the header or the tool, or a new one (auto); whether it is new."""
    tool = code_interpreter_tool(body) or {}
    named = header or (tool.get("container") if isinstance(tool.get("container"), str) else None)
    if named:
        await containers.ensure_usable(project, named)
        return named, False
    given = tool.get("container")
    auto: dict[str, Any] = given if isinstance(given, dict) else {}
    try:
        create = ContainerCreate.model_validate(
            {
                "name": "chat",
                "file_ids": auto.get("file_ids") or [],
                "memory_limit": auto.get("memory_limit"),
            }
        )
    except ValidationError as exc:
        raise InvalidRequest(
            f"Invalid code_interpreter container: {exc.errors()[0]['msg']}.", param="tools"
        ) from None
    created = await containers.create(project, create)
    return str(created["id"]), True


class ChatLoop:
    """One Chat Completions request run to its final answer."""

    def __init__(
        self,
        upstream: Upstream,
        containers: ContainersService,
        settings: Settings,
        project: str,
        body: dict[str, Any],
        container_id: str,
    ) -> None:
        self.upstream = upstream
        self.containers = containers
        self.settings = settings
        self.project = project
        self.body = body
        self.container_id = container_id
        self.id = new_id("chat_completion")
        self.created = int(time.time())
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> Chunk:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    async def run(self, emit: Callable[[Chunk], None] | None = None) -> dict[str, Any]:
        """The final chat.completion; with `emit`, its chunks are sent as they happen."""
        files = await self.containers.all_files(self.project, self.container_id)
        paths = [entry["path"] for entry in files]
        note = prompt.system_message("", None, True, paths)
        messages: list[dict[str, Any]] = [note, *self.body["messages"]]
        tools = [python_tool.DEFINITION] + [
            t for t in self.body.get("tools") or () if t.get("type") == "function"
        ]
        client_functions = {t["function"]["name"] for t in tools[1:] if "function" in t}
        options = {k: v for k, v in self.body.items() if k not in OWN_FIELDS}
        options["tool_choice"] = _tool_choice(self.body.get("tool_choice"))
        if emit:
            emit(self._chunk({"role": "assistant", "content": ""}))
        text = ""
        calls_made = 0
        while True:
            completion = Completion()
            separated = not text
            if calls_made:  # a forced tool is the first turn's: later turns may answer in text
                options.pop("tool_choice", None)
            try:
                async for delta in self.upstream.stream(
                    self.body["model"], messages, tools, completion, **options
                ):
                    if isinstance(delta, TextDelta):
                        piece = delta.text if separated else "\n\n" + delta.text
                        separated = True
                        text += piece
                        if emit:
                            emit(self._chunk({"content": piece}))
            finally:
                self.prompt_tokens += completion.prompt_tokens
                self.completion_tokens += completion.completion_tokens
            theirs = [c for c in completion.tool_calls if c.name in client_functions]
            ours = [c for c in completion.tool_calls if c.name == python_tool.TOOL_NAME]
            if theirs or not ours:
                return self._final(text, theirs, completion.finish_reason, emit)
            calls_made += len(ours)
            if calls_made > self.settings.max_tool_calls_per_run:
                raise UpstreamError(
                    f"the model made more than {self.settings.max_tool_calls_per_run} python "
                    "calls; raise CODEINTERP_MAX_TOOL_CALLS_PER_RUN to allow more"
                )
            messages.append(
                {
                    "role": "assistant",
                    "content": completion.text or None,
                    "tool_calls": [
                        {
                            "id": call.id or f"call_{self.id[-8:]}{call.index}",
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in ours
                    ],
                }
            )
            for call, sent in zip(ours, messages[-1]["tool_calls"], strict=True):
                code = python_tool.code_from_arguments(call.arguments)
                result = await self.containers.run(
                    self.project, self.container_id, code, self.settings.execution_timeout
                )
                images = sum(1 for r in result["results"] if r.get("file_id"))
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": sent["id"],
                        "content": python_tool.result_for_model(result, images),
                    }
                )

    def _final(
        self,
        text: str,
        calls: list[Any],
        finish_reason: str | None,
        emit: Callable[[Chunk], None] | None,
    ) -> dict[str, Any]:
        tool_calls = [
            {
                "id": call.id or f"call_{self.id[-8:]}{call.index}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ]
        reason = "tool_calls" if tool_calls else (finish_reason or "stop")
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


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "code_interpreter":
        return python_tool.FORCED_CHOICE
    return choice

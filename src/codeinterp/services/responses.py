"""Responses: POST /v1/responses with the code_interpreter tool, stored for retrieval and for
`previous_response_id`, which continues the conversation and its container."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

from codeinterp.agent import python_tool
from codeinterp.agent.loop import MAX_TOOL_CALLS_SETTING
from codeinterp.agent.responder import (
    FindFile,
    ResponseBuilder,
    ResponseContext,
    ResponseExecutor,
    RunCode,
    StreamEvent,
    system_text,
)
from codeinterp.agent.upstream import Upstream
from codeinterp.config import Settings
from codeinterp.errors import CodeInterpError, ContainerExpired, InvalidRequest, NotFound
from codeinterp.ids import new_id
from codeinterp.protocol.containers import ContainerCreate
from codeinterp.protocol.responses import AutoContainer, ResponseCreate
from codeinterp.store import Store

from .common import check_limit, check_order, dict_envelope, now
from .containers import ContainersService


class ResponsesService:
    def __init__(
        self,
        store: Store,
        containers: ContainersService,
        upstream: Upstream,
        settings: Settings,
    ) -> None:
        self.store = store
        self.containers = containers
        self.upstream = upstream
        self.settings = settings

    # -- creating -------------------------------------------------------------------------------

    async def prepare(
        self, project: str, body: ResponseCreate
    ) -> tuple[dict[str, Any], ResponseContext]:
        """Check the request and set up its container and conversation; errors raise here,
        before a streaming answer has begun."""
        previous: dict[str, Any] = {}
        if body.previous_response_id:
            record = await self.store.get_object("response", project, body.previous_response_id)
            previous = record.body
        items = (
            [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
        )
        input_messages(items, {})  # a malformed input is refused before anything is made
        for file_id in _input_file_ids(items) + _auto_file_ids(body):
            await self.store.get_file(project, file_id)  # 404 before anything is made
        messages = list(previous.get("messages", []))
        _check_outputs_answer_calls(messages, items)
        earlier = previous.get("container_id") or _container_in_input(items)
        container_id, created = await self._container(project, body, earlier)
        try:
            attached = await self._attach_files(project, container_id, items)
            paths = await self._paths(project, container_id) if container_id else []
            domains = (
                await self.containers.allowed_domains(project, container_id) if container_id else []
            )
        except BaseException:
            if created and container_id:
                await self.containers.delete(project, container_id)
            raise
        messages.extend(input_messages(items, attached))
        response = {
            "id": new_id("response"),
            "object": "response",
            "created_at": now(),
            "status": "in_progress",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "max_tool_calls": body.max_tool_calls,
            "model": body.model,
            "output": [],
            "parallel_tool_calls": body.parallel_tool_calls,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "store": body.store,
            "temperature": body.temperature if body.temperature is not None else 1.0,
            "text": {"format": (body.text or {}).get("format") or {"type": "text"}},
            "tool_choice": body.tool_choice,
            "tools": body.tools,
            "top_p": body.top_p if body.top_p is not None else 1.0,
            "truncation": "disabled",
            "usage": None,
            "metadata": body.metadata or {},
        }
        context = ResponseContext(
            project=project,
            messages=messages,
            system=system_text(body.instructions, container_id is not None, paths, domains),
            container_id=container_id,
            function_tools=[
                {
                    "type": "function",
                    "function": f.model_dump(exclude_none=True, exclude={"type", "strict"}),
                }
                for f in body.functions()
            ],
            include_outputs=body.include_outputs,
            max_tool_calls=body.max_tool_calls or self.settings.max_tool_calls_per_run,
            max_tool_calls_setting="max_tool_calls"
            if body.max_tool_calls
            else MAX_TOOL_CALLS_SETTING,
            run_code=self._code_runner(project, container_id),
            find_file=self._file_finder(project, container_id),
            sampling={
                "temperature": body.temperature,
                "top_p": body.top_p,
                "max_completion_tokens": body.max_output_tokens,
                "response_format": body.response_format(),
                "tool_choice": python_tool.tool_choice_for_model(body.tool_choice)
                if body.tools
                else None,
            },
        )
        context.input_items = _with_ids(items)
        return response, context

    def _code_runner(self, project: str, container_id: str | None) -> RunCode:
        async def run_code(code: str, call_id: str) -> dict[str, Any]:
            assert container_id is not None  # the loop offers python only with a container
            return await self.containers.run(
                project, container_id, code, self.settings.execution_timeout, call_id=call_id
            )

        return run_code

    def _file_finder(self, project: str, container_id: str | None) -> FindFile:
        async def find_file(path: str) -> str | None:
            if container_id is None:
                return None
            try:
                listing = await self.containers.all_files(project, container_id)
            except CodeInterpError:
                return None
            return next((str(f["id"]) for f in listing if f["path"] == path), None)

        return find_file

    async def complete(
        self, project: str, response: dict[str, Any], context: ResponseContext
    ) -> dict[str, Any]:
        """Build the whole response (non-streaming)."""
        await self._execute(project, response, context, None)
        return response

    async def stream(
        self, project: str, response: dict[str, Any], context: ResponseContext
    ) -> AsyncGenerator[StreamEvent, None]:
        """The response's events as they happen. If the client goes away, the response stops
        (its code is interrupted) and is not stored."""
        queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue()

        async def build() -> None:
            try:
                await self._execute(project, response, context, queue.put_nowait)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(build(), name=f"response {response['id']}")
        try:
            while (event := await queue.get()) is not None:
                yield event
            await task  # its failure, if any, ends the stream
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _execute(
        self,
        project: str,
        response: dict[str, Any],
        context: ResponseContext,
        emit: Callable[[StreamEvent], None] | None,
    ) -> None:
        builder = ResponseBuilder(response, emit)
        executor = ResponseExecutor(self.upstream, self.settings, builder, context)

        async def store() -> None:
            if response["store"]:
                await self.store.create_object(
                    "response",
                    project,
                    response["id"],
                    {
                        "response": response,
                        "messages": context.messages,
                        "container_id": context.container_id,
                        "input_items": context.input_items,
                    },
                    status=response["status"],
                    created_at=response["created_at"],
                )

        # Stored before the terminal event: a client that saw `response.completed` can
        # retrieve it, and a failure to store is the stream's error instead.
        await executor.execute(before_end=store)

    async def _container(
        self, project: str, body: ResponseCreate, previous_container: str | None
    ) -> tuple[str | None, bool]:
        """The response's container (None: no code_interpreter tool), and whether it is new."""
        tool = body.code_interpreter()
        if tool is None:
            return None, False
        if isinstance(tool.container, str):
            await self.containers.ensure_usable(project, tool.container)
            return tool.container, False
        auto: AutoContainer = tool.container
        # `auto` goes on in the container an earlier call of the conversation used, whether the
        # conversation came by previous_response_id or was sent back as input.
        if previous_container:
            with contextlib.suppress(ContainerExpired, NotFound):
                await self.containers.ensure_usable(project, previous_container)
                for file_id in auto.file_ids:  # files named now join the continued container
                    await self.containers.copy_file(project, previous_container, file_id)
                return previous_container, False
        created = await self.containers.create(
            project,
            ContainerCreate(
                name="auto",
                file_ids=auto.file_ids,
                memory_limit=auto.memory_limit,
                network_policy=auto.network_policy,
            ),
        )
        return str(created["id"]), True

    async def _attach_files(
        self, project: str, container_id: str | None, items: list[dict[str, Any]]
    ) -> dict[str, str]:
        """Copy every input_file into the container; returns file id -> its path there."""
        attached: dict[str, str] = {}
        for item in items:
            content = item.get("content")
            for part in content if isinstance(content, list) else ():
                if isinstance(part, dict) and part.get("type") == "input_file":
                    file_id = part.get("file_id")
                    if not isinstance(file_id, str):
                        raise InvalidRequest("input_file needs a file_id here.", param="input")
                    if container_id is None:
                        await self.store.get_file(project, file_id)  # 404 if it is not ours
                        attached[file_id] = ""
                        continue
                    copied = await self.containers.copy_file(project, container_id, file_id)
                    attached[file_id] = copied["path"]
        return attached

    async def _paths(self, project: str, container_id: str) -> list[str]:
        return [entry["path"] for entry in await self.containers.all_files(project, container_id)]

    # -- reading --------------------------------------------------------------------------------

    async def retrieve(self, project: str, response_id: str) -> dict[str, Any]:
        record = await self.store.get_object("response", project, response_id)
        return dict(record.body["response"])

    async def delete(self, project: str, response_id: str) -> dict[str, Any]:
        await self.store.delete_object("response", project, response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(
        self, project: str, response_id: str, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        record = await self.store.get_object("response", project, response_id)
        items = list(record.body.get("input_items", []))
        if check_order(order) == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise InvalidRequest(
                    f"after={after!r} is not an input item of this response.", param="after"
                )
            items = items[ids.index(after) + 1 :]
        page = items[: check_limit(limit)]
        return dict_envelope(page, len(items) > len(page))


def _input_file_ids(items: list[dict[str, Any]]) -> list[str]:
    ids = []
    for item in items:
        content = item.get("content")
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") == "input_file":
                if not isinstance(part.get("file_id"), str):
                    raise InvalidRequest("input_file needs a file_id here.", param="input")
                ids.append(part["file_id"])
    return ids


def _check_outputs_answer_calls(
    messages: list[dict[str, Any]], items: list[dict[str, Any]]
) -> None:
    """Every function_call_output answers a call of the previous response or of this input
    (without a previous response the request model checks it): an orphan would make the model
    refuse the whole conversation."""
    called = {c["id"] for m in messages for c in m.get("tool_calls") or ()}
    for item in items:
        if item.get("type") == "function_call":
            called.add(item.get("call_id"))
        elif item.get("type") == "function_call_output" and item.get("call_id") not in called:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {item.get('call_id')}.",
                param="input",
            )


def _container_in_input(items: list[dict[str, Any]]) -> str | None:
    """The container of the latest code_interpreter_call among the input items, if any."""
    for item in reversed(items):
        if item.get("type") == "code_interpreter_call" and isinstance(
            item.get("container_id"), str
        ):
            return str(item["container_id"])
    return None


def _auto_file_ids(body: ResponseCreate) -> list[str]:
    tool = body.code_interpreter()
    if tool is None or isinstance(tool.container, str):
        return []
    return list(tool.container.file_ids)


def _with_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as input_items lists them: each with an id and a type."""
    listed = []
    for item in items:
        entry = {"type": "message", **item} if "type" not in item else dict(item)
        if entry["type"] == "message" and isinstance(entry.get("content"), str):
            entry["content"] = [{"type": "input_text", "text": entry["content"]}]
        entry.setdefault("id", new_id("message"))
        listed.append(entry)
    return listed


def input_messages(items: list[dict[str, Any]], attached: dict[str, str]) -> list[dict[str, Any]]:
    """Responses input items as chat messages (files named by their path in the container)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(
                    f"Invalid value for 'role': {role!r}. Use user, assistant, system or "
                    "developer.",
                    param="input",
                )
            messages.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _text_of(item.get("content"), attached),
                }
            )
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id", "")),
                    "content": _output_text(item.get("output")),
                }
            )
        elif kind in ("function_call", "code_interpreter_call"):
            call_id = str(item.get("call_id") or item.get("id") or new_id("call"))
            name = item.get("name") if kind == "function_call" else "python"
            arguments = (
                item.get("arguments", "{}")
                if kind == "function_call"
                else _json({"code": item.get("code") or ""})
            )
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            last = messages[-1] if messages else None
            if (
                last
                and last["role"] == "assistant"
                and last.get("tool_calls")
                and not last["content"]
            ):
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            if kind == "code_interpreter_call":
                logs = [
                    o.get("logs", "") for o in item.get("outputs") or [] if o.get("type") == "logs"
                ]
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call_id,
                        "content": "\n".join(logs) or "[no output]",
                    }
                )
        elif kind in ("reasoning", "item_reference"):
            continue
        else:
            raise InvalidRequest(
                f"Input items of type {kind!r} are not supported here.", param="input"
            )
    return messages


def _text_of(content: Any, attached: dict[str, str]) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(
            "A message's content must be a string or a list of parts.", param="input"
        )
    chunks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            chunks.append(str(part.get("text", "")))
        elif kind == "input_file":
            path = attached.get(str(part.get("file_id")), "")
            chunks.append(
                f"[attached file: {path}]" if path else f"[attached file {part.get('file_id')}]"
            )
        elif kind == "input_image":
            chunks.append(f"[image {part.get('image_url') or part.get('file_id')}]")
        else:
            raise InvalidRequest(
                f"Content parts of type {kind!r} are not supported here.", param="input"
            )
    return "\n".join(chunks)


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
    return _json(output)


def _json(value: Any) -> str:
    return json.dumps(value)

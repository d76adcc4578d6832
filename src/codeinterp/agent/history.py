"""A thread as the model sees it in a run: its messages, their images, and the tool calls that
earlier runs made, with their outputs, so the model can see the code it ran before.

Earlier runs are replayed from their steps, in the order each run made them: the run's messages
(``message_creation`` steps) and its tool calls (``tool_calls`` steps) become the assistant
messages, assistant ``tool_calls`` and ``tool`` messages the model would have seen then.

Trimming rule (what keeps a long thread within a model's context):
* ``truncation_strategy`` ``last_messages: N`` keeps the thread's N most recent messages, and the
  earlier tool calls of the runs whose messages are kept;
* only the most recent ``MAX_REPLAYED_CALLS`` earlier tool calls are replayed (the older ones
  are left out whole, their runs' messages stay);
* a replayed call's code keeps ``MAX_REPLAYED_CODE`` characters and its output
  ``MAX_REPLAYED_OUTPUT``, cut in the middle with a note of how much was left out.

Images in messages go to the model as image input (``image_url`` parts): an ``image_url`` as
given, an ``image_file`` as a data URI of the file's bytes.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Iterable
from typing import Any

from codeinterp.errors import NotFound
from codeinterp.protocol.threads import Message
from codeinterp.store import Store

from . import python_tool

MAX_REPLAYED_CALLS = 20
MAX_REPLAYED_CODE = 4_000
MAX_REPLAYED_OUTPUT = 2_000
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # OpenAI's limit for an image input


async def conversation(
    store: Store,
    project: str,
    messages: list[Message],
    current_run: str,
    last_messages: int | None,
) -> list[dict[str, Any]]:
    """The chat messages for a run of the thread whose messages (oldest first) are given."""
    if last_messages is not None:
        messages = messages[-last_messages:] if last_messages > 0 else []
    steps = await _earlier_steps(store, project, messages, current_run)
    by_id = {m.id: m for m in messages}
    replayed = _calls_to_replay(steps)
    chat: list[dict[str, Any]] = []
    done_runs: set[str] = set()
    for message in messages:
        run_id = message.run_id
        if run_id and run_id in steps:
            if run_id in done_runs:
                continue
            done_runs.add(run_id)
            for step in steps[run_id]:
                chat.extend(await _step_messages(store, project, step, by_id, replayed))
        else:
            chat.append(await chat_message(store, project, message))
    return chat


async def chat_message(store: Store, project: str, message: Message) -> dict[str, Any]:
    """A stored thread message as a chat message: its text, and its images as image input."""
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.type == "text":
            parts.append({"type": "text", "text": part.text.value})
        elif part.type == "image_url":
            parts.append(_image_part(part.image_url.url, part.image_url.detail))
        else:
            url = await _data_uri(store, project, part.image_file.file_id)
            if url is None:
                parts.append({"type": "text", "text": f"[image {part.image_file.file_id}]"})
            else:
                parts.append(_image_part(url, part.image_file.detail))
    if all(p["type"] == "text" for p in parts):
        return {"role": message.role, "content": "\n".join(p["text"] for p in parts)}
    return {"role": message.role, "content": parts}


def _image_part(url: str, detail: str | None) -> dict[str, Any]:
    image: dict[str, Any] = {"url": url}
    if detail:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


async def _data_uri(store: Store, project: str, file_id: str) -> str | None:
    try:
        record = await store.get_file(project, file_id)
        if record.bytes > MAX_IMAGE_BYTES:
            return None
        data = await store.read_file(project, file_id)
    except NotFound:
        return None
    mime = mimetypes.guess_type(record.filename)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def _earlier_steps(
    store: Store, project: str, messages: list[Message], current_run: str
) -> dict[str, list[dict[str, Any]]]:
    """The completed steps of the runs that wrote the given messages, by run, in order."""
    runs = {m.run_id for m in messages if m.run_id and m.run_id != current_run}
    steps: dict[str, list[dict[str, Any]]] = {}
    for run_id in runs:
        after = None
        while True:
            page = await store.list_objects(
                "run_step", project, run_id=run_id, after=after, limit=100, order="asc"
            )
            steps.setdefault(run_id, []).extend(
                r.body for r in page.items if r.body.get("status") == "completed"
            )
            if not page.has_more or not page.items:
                break
            after = page.items[-1].id
    return steps


def _calls_to_replay(steps: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The ids of the most recent MAX_REPLAYED_CALLS earlier tool calls."""
    calls = [
        (step.get("created_at", 0), call.get("id"))
        for run_steps in steps.values()
        for step in run_steps
        if step.get("type") == "tool_calls"
        for call in step["step_details"].get("tool_calls", [])
    ]
    calls.sort(key=lambda item: item[0])
    return {call_id for _, call_id in calls[-MAX_REPLAYED_CALLS:] if isinstance(call_id, str)}


async def _step_messages(
    store: Store,
    project: str,
    step: dict[str, Any],
    messages: dict[str, Message],
    replayed: set[str],
) -> list[dict[str, Any]]:
    details = step.get("step_details") or {}
    if step.get("type") == "message_creation":
        message = messages.get(details.get("message_creation", {}).get("message_id", ""))
        return [await chat_message(store, project, message)] if message else []
    calls = [c for c in details.get("tool_calls", []) if c.get("id") in replayed]
    return _replayed_calls(calls) if calls else []


def _replayed_calls(calls: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One step's tool calls as an assistant message with tool_calls and their tool messages."""
    asked: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    for call in calls:
        if call.get("type") == "code_interpreter":
            code = python_tool.trim(call["code_interpreter"].get("input", ""), MAX_REPLAYED_CODE)
            name, arguments = python_tool.TOOL_NAME, json.dumps({"code": code})
            output = _logs_of(call["code_interpreter"].get("outputs") or [])
        else:
            function = call.get("function") or {}
            name, arguments = function.get("name", ""), function.get("arguments", "")
            output = function.get("output") or ""
        asked.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        )
        answers.append(
            {
                "role": "tool",
                "tool_call_id": call["id"],
                "content": python_tool.trim(output, MAX_REPLAYED_OUTPUT) or "[no output]",
            }
        )
    return [{"role": "assistant", "content": None, "tool_calls": asked}, *answers]


def _logs_of(outputs: list[dict[str, Any]]) -> str:
    logs = "".join(o.get("logs", "") for o in outputs if o.get("type") == "logs")
    images = sum(1 for o in outputs if o.get("type") == "image")
    if images:
        logs += f"\n[{images} image(s) were displayed to the user]"
    return logs.strip("\n")

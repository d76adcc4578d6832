"""What a failed response leaves in its stored conversation."""

from __future__ import annotations

from typing import Any

from codeinterp.agent.responder import ResponseBuilder, ResponseContext, ResponseExecutor
from codeinterp.config import Settings


async def _no_code(code: str) -> dict[str, Any]:
    raise AssertionError("no code runs here")


async def _no_file(path: str) -> str | None:
    return None


def executor(messages: list[dict[str, Any]]) -> ResponseExecutor:
    context = ResponseContext(
        project="p",
        messages=messages,
        system=None,
        container_id="cntr_x",
        function_tools=[
            {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
        ],
        include_outputs=False,
        max_tool_calls=8,
        max_tool_calls_setting="max_tool_calls",
        run_code=_no_code,
        find_file=_no_file,
    )
    builder = ResponseBuilder({"id": "resp_x", "model": "m", "output": []}, None)
    return ResponseExecutor(None, Settings(), builder, context)  # type: ignore[arg-type]


def call(call_id: str, name: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def test_unanswered_python_calls_get_an_error_result() -> None:
    """A model refuses a conversation whose tool calls have no results, so a follow-up
    (previous_response_id) of a response that failed mid-call must not inherit one; a
    client's function call stays open for the client to answer."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("c1", "python"), call("c2", "python"), call("c3", "get_weather")],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    executor(messages)._answer_unanswered_calls()
    assert [(m["role"], m.get("tool_call_id")) for m in messages[2:]] == [
        ("tool", "c1"),
        ("tool", "c2"),
    ]
    assert messages[-1]["content"].startswith("error: the response failed")


def test_a_conversation_without_open_calls_is_left_alone() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "python")]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "assistant", "content": "answer"},
    ]
    before = [dict(m) for m in messages]
    executor(messages)._answer_unanswered_calls()
    assert messages == before

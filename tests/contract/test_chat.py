"""The Chat Completions door: the code interpreter run on the server for clients that speak
only Chat Completions, and everything else relayed to the model unchanged. Also: every door's
sandbox is recorded in the same usage report."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.contract.helpers import raw_client
from tests.support.server import ServerProcess
from tests.support.upstream import (
    DEFAULT_USAGE,
    Fail,
    Request,
    ScriptedUpstream,
    Text,
    ToolCall,
    ToolCalls,
    python_call,
)

CI_TOOL = [{"type": "code_interpreter"}]


def tool_results(request: Request) -> list[str]:
    return [str(m["content"]) for m in request["messages"] if m.get("role") == "tool"]


def answer_from_sandbox(code: str) -> Any:
    """The model runs `code`, then answers with what the sandbox printed."""

    def script(request: Request) -> Text | ToolCalls:
        results = tool_results(request)
        if not results:
            return python_call(code)
        return Text(f"The result is {results[-1].strip()}.")

    return script


def test_code_interpreter_runs_on_the_server(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """The answer carries the number the sandbox computed; the model saw the python tool (not
    code_interpreter), the sandbox note, and the tool result; usage sums both turns."""
    upstream.script = answer_from_sandbox("import math\nprint(math.factorial(12))")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "12!?"}], tools=CI_TOOL
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "The result is 479001600."
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-codeinterp-container"].startswith("cntr_")
    first, second = upstream.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["python"]
    assert (
        first["messages"][0]["role"] == "system" and "/mnt/data" in first["messages"][0]["content"]
    )
    assert tool_results(second) == ["479001600"]
    assert completion.usage is not None
    prompt, completion_tokens = DEFAULT_USAGE  # each of the two turns
    assert completion.usage.prompt_tokens == 2 * prompt
    assert completion.usage.completion_tokens == 2 * completion_tokens


def test_the_container_header_continues_in_the_same_container(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """X-Codeinterp-Container names the container to use: variables persist between requests."""
    upstream.script = answer_from_sandbox("secret = 6 * 7\nprint('set')")
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "set it"}], tools=CI_TOOL
    )
    container = raw.headers["x-codeinterp-container"]
    upstream.script = answer_from_sandbox("print(secret)")
    again = client.chat.completions.with_raw_response.create(
        model="m",
        messages=[{"role": "user", "content": "read it"}],
        extra_headers={"X-Codeinterp-Container": container},
    )
    assert again.headers["x-codeinterp-container"] == container
    assert again.parse().choices[0].message.content == "The result is 42."


def test_streaming_relays_text_as_it_comes_with_usage(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.script = answer_from_sandbox("print(2 ** 20)")
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "2^20"}],
        tools=CI_TOOL,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The result is 1048576."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


def test_a_client_function_call_goes_back_to_the_client(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """The client's own function tools are the client's: the completion stops with them."""
    upstream.script = [ToolCalls([ToolCall("get_weather", '{"city": "Oslo"}', id="call_w")])]
    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
    completion = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "weather?"}], tools=[*CI_TOOL, weather]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_w",
        "get_weather",
        '{"city": "Oslo"}',
    )
    names = [t["function"]["name"] for t in upstream.last_request["tools"]]
    assert names == ["python", "get_weather"]


def test_requests_without_the_tool_are_relayed_unchanged(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """No code_interpreter: the upstream gets the body as sent and the client its answer."""
    upstream.script = [Text("plain answer")]
    completion = client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], temperature=0.25, seed=7
    )
    assert completion.choices[0].message.content == "plain answer"
    sent = upstream.last_request
    assert (sent["model"], sent["temperature"], sent["seed"]) == ("llama", 0.25, 7)
    assert "tools" not in sent

    upstream.script = [Text("streamed answer")]
    stream = client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "streamed answer"
    )


def test_upstream_errors_are_relayed_with_their_status(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.script = [Fail(400, "context length exceeded", should_retry=False)]
    with pytest.raises(openai.BadRequestError) as relayed:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert "context length exceeded" in str(relayed.value)

    upstream.script = [Fail(400, "bad tools", should_retry=False)]
    with pytest.raises(openai.APIStatusError) as looped:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], tools=CI_TOOL
        )
    assert looped.value.status_code == 502
    assert "bad tools" in str(looped.value)


def test_bad_requests_get_the_error_envelope(server: ServerProcess) -> None:
    with raw_client(server) as http:
        cases = [
            ({"messages": [{"role": "user", "content": "x"}], "tools": CI_TOOL}, 400, "model"),
            ({"model": "m", "tools": CI_TOOL}, 400, "messages"),
            (
                {
                    "model": "m",
                    "messages": [{"role": "user", "content": "x"}],
                    "tools": CI_TOOL,
                    "n": 2,
                },
                400,
                "n",
            ),
            (
                {
                    "model": "m",
                    "messages": [{"role": "user", "content": "x"}],
                    "tools": [*CI_TOOL, {"type": "web_search"}],
                },
                400,
                "tools",
            ),
            (
                {
                    "model": "m",
                    "messages": [{"role": "user", "content": "x"}],
                    "tools": [{"type": "code_interpreter", "container": "cntr_missing"}],
                },
                404,
                None,
            ),
        ]
        message = [{"role": "user", "content": "x"}]
        cases += [
            (
                {
                    "model": "m",
                    "messages": message,
                    "tools": [
                        {
                            "type": "code_interpreter",
                            "container": {"type": "auto", "memory_limit": "2g"},
                        }
                    ],
                },
                400,
                "tools",
            ),
            (
                {
                    "model": "m",
                    "messages": message,
                    "tools": [*CI_TOOL, {"type": "function", "function": {}}],
                },
                400,
                "tools",
            ),
            (
                {
                    "model": "m",
                    "messages": message,
                    "tools": [*CI_TOOL, {"type": "function", "function": {"name": "python"}}],
                },
                400,
                "tools",
            ),
        ]
        for body, status, param in cases:
            response = http.post("/chat/completions", json=body)
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["param"] == param, error
        not_json = http.post(
            "/chat/completions", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400


def test_every_door_records_its_sandbox_in_the_same_usage_report(
    server: ServerProcess, client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A container (execute), a Responses auto container, a Chat Completions container and an
    MCP session each add one session to GET /v1/organization/usage/code_interpreter_sessions."""
    since = int(time.time()) - 5

    def sessions() -> int:
        usage = client.get(
            "/organization/usage/code_interpreter_sessions",
            cast_to=object,
            options={"params": {"start_time": since, "bucket_width": "1d"}},
        )
        assert isinstance(usage, dict)
        return sum(r["num_sessions"] for b in usage["data"] for r in b["results"])

    before = sessions()
    box = client.containers.create(name="door-execute")
    client.post(f"/containers/{box.id}/execute", body={"code": "1"}, cast_to=object)

    upstream.script = answer_from_sandbox("print('responses')")
    client.responses.create(
        model="m", input="go", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]
    )
    upstream.script = answer_from_sandbox("print('chat')")
    client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "go"}], tools=CI_TOOL
    )

    async def mcp_run() -> None:
        url = server.base_url.removesuffix("/v1") + "/mcp"
        async with (
            streamable_http_client(url) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()
            await session.call_tool("run_python", {"code": "1"})

    asyncio.run(mcp_run())
    assert sessions() == before + 4


def test_a_forced_tool_choice_applies_to_the_first_turn_only(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """tool_choice code_interpreter forces the python tool on the first model turn; the next
    turn is free to answer in text (else a real model could never finish)."""
    upstream.script = answer_from_sandbox("print(7 * 6)")
    completion = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "7*6"}],
        tools=CI_TOOL,
        tool_choice={"type": "code_interpreter"},  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.content == "The result is 42."
    first, second = upstream.requests
    assert first["tool_choice"] == {"type": "function", "function": {"name": "python"}}
    assert "tool_choice" not in second


def test_a_failed_request_leaves_no_container_behind(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """The container made for a request whose model fails is deleted: nobody knows its id."""

    def chats() -> set[str]:
        return {c.id for c in client.containers.list(limit=100) if c.name == "chat"}

    before = chats()
    upstream.script = [Fail(500, "model down", should_retry=False)]
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], tools=CI_TOOL
        )
    assert chats() == before

"""The scripted upstream, checked with the official ``openai`` client (sync and async)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.support.upstream import (
    Broken,
    Delay,
    Fail,
    Request,
    ScriptedUpstream,
    ScriptExhausted,
    Text,
    ToolCall,
    ToolCalls,
    Turn,
    UpstreamScriptError,
    completion_chunks,
    python_call,
    request_problem,
    sequence,
)

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 6 * 7?"}]
PYTHON_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run Python code",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        },
    },
}


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def client(upstream: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def aclient(upstream: ScriptedUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=upstream.base_url, api_key="sk-test", max_retries=0
    ) as sdk:
        yield sdk


def raw_stream(upstream: ScriptedUpstream, body: dict[str, Any]) -> list[str]:
    """POST a streaming request and return the SSE ``data:`` payloads, as sent."""
    with (
        httpx2.Client(trust_env=False) as http,
        http.stream("POST", f"{upstream.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = [block for block in text.split("\n\n") if block]
    assert all(event.startswith("data: ") for event in events), events
    return [event.removeprefix("data: ") for event in events]


# --------------------------------------------------------------------------- non-streaming


def test_text_completion(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    upstream.script = [Text("The answer is 42.", usage=(31, 7))]
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=USER)

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert abs(completion.created - time.time()) < 60
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "The answer is 42."
    assert choice.message.tool_calls is None
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (31, 7)
    assert completion.usage.total_tokens == 38

    assert upstream.requests == [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 6 * 7?"}]}
    ]
    assert upstream.request_headers[0]["authorization"] == "Bearer sk-test"


def test_tool_calls_completion(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    upstream.script = [
        ToolCalls([ToolCall("python", '{"code": "6 * 7"}', id="call_1"), ToolCall("lookup", "{}")])
    ]
    completion = client.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[PYTHON_TOOL], tool_choice="auto"
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 2
    first, second = calls
    assert first.type == "function" and second.type == "function"
    assert (first.id, first.function.name, first.function.arguments) == (
        "call_1",
        "python",
        '{"code": "6 * 7"}',
    )
    assert second.id.startswith("call_") and second.id != "call_1"
    assert second.function.name == "lookup"
    assert upstream.last_request["tools"] == [PYTHON_TOOL]
    assert upstream.last_request["tool_choice"] == "auto"


def test_python_call_helper() -> None:
    turn = python_call("print('hi')\nx = {'a': 1}")
    assert isinstance(turn, ToolCalls)
    (call,) = turn.calls
    assert call.name == "python"
    assert json.loads(call.arguments) == {"code": "print('hi')\nx = {'a': 1}"}


# --------------------------------------------------------------------------- streaming


def test_streamed_text_wire_format(upstream: ScriptedUpstream) -> None:
    upstream.script = [Text("Hello, streaming world!", usage=(12, 6))]
    body = {
        "model": "gpt-4o-mini",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payloads = raw_stream(upstream, body)

    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert all("usage" in c for c in chunks)
    first, *middle, finish, usage = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert first["choices"][0]["finish_reason"] is None and first["usage"] is None
    assert len(middle) >= 3
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == (
        "Hello, streaming world!"
    )
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert finish["choices"][0]["delta"] == {}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 12
    assert usage["usage"]["completion_tokens"] == 6
    assert usage["usage"]["total_tokens"] == 18


def test_streamed_tool_calls_wire_format(upstream: ScriptedUpstream) -> None:
    arguments = json.dumps({"code": "import math\nprint(math.pi)"})
    upstream.script = [
        ToolCalls([ToolCall("python", arguments, id="call_a"), ToolCall("python", "{}", "call_b")])
    ]
    body = {"model": "gpt-4o", "messages": USER, "tools": [PYTHON_TOOL], "stream": True}
    payloads = raw_stream(upstream, body)

    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c for c in chunks)  # no include_usage: no usage at all
    deltas = [c["choices"][0]["delta"] for c in chunks]
    # As OpenAI does: role, null content and the first call's header in the first delta.
    assert deltas[0] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "python", "arguments": ""},
            }
        ],
    }
    fragments_a = [d["tool_calls"][0] for d in deltas[1:] if d and d["tool_calls"][0]["index"] == 0]
    assert len(fragments_a) > 3
    assert all(f.keys() == {"index", "function"} for f in fragments_a)
    assert all(f["function"].keys() == {"arguments"} for f in fragments_a)
    assert "".join(f["function"]["arguments"] for f in fragments_a) == arguments
    position_b = next(i for i, d in enumerate(deltas) if d and d["tool_calls"][0]["index"] == 1)
    assert position_b == len(fragments_a) + 1  # the second call starts after the first ends
    header_b = deltas[position_b]["tool_calls"][0]
    assert header_b == {
        "index": 1,
        "id": "call_b",
        "type": "function",
        "function": {"name": "python", "arguments": ""},
    }
    assert deltas[-1] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_with_sdk_sync(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    upstream.script = [Text("abcdefghijklmnop", usage=(3, 4))]
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    with stream:
        chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "abcdefghijklmnop"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 4
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7
    assert upstream.last_request["stream"] is True
    assert upstream.last_request["stream_options"] == {"include_usage": True}


async def test_stream_with_sdk_async_tool_calls(
    upstream: ScriptedUpstream, aclient: openai.AsyncOpenAI
) -> None:
    upstream.script = [python_call("print('x' * 3)", id="call_x")]
    stream = await aclient.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[PYTHON_TOOL], stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async with stream:
        async for chunk in stream:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += delta.id or ""
                    if delta.function is not None:
                        call["name"] += delta.function.name or ""
                        call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert calls == {
        0: {"id": "call_x", "name": "python", "arguments": json.dumps({"code": "print('x' * 3)"})}
    }


def test_stream_helper_reassembles_text_and_tool_calls(
    upstream: ScriptedUpstream, client: openai.OpenAI
) -> None:
    arguments = json.dumps({"code": "import pandas as pd\nprint(pd.__version__)"})
    upstream.script = [
        ToolCalls(
            [ToolCall("python", arguments, id="call_1"), ToolCall("python", '{"code": "1"}')],
            content="Let me compute that.",
            usage=(40, 20),
        ),
        Text("Done: ünïcødé ✓ and more text.", usage=(50, 9)),
    ]
    events: list[str] = []
    with client.chat.completions.stream(
        model="gpt-4o",
        messages=USER,
        tools=[PYTHON_TOOL],
        stream_options={"include_usage": True},
    ) as stream:
        events.extend(event.type for event in stream)
        final = stream.get_final_completion()

    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me compute that."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_1", "python", arguments),
        (message.tool_calls[1].id, "python", '{"code": "1"}'),
    ]
    assert final.usage is not None and final.usage.total_tokens == 60
    assert events.count("content.delta") >= 3
    assert events.count("content.done") == 1
    assert events.count("tool_calls.function.arguments.delta") > 3
    assert events.count("tool_calls.function.arguments.done") == 2

    with client.chat.completions.stream(model="gpt-4o", messages=USER) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Done: ünïcødé ✓ and more text."
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is None  # not asked for


async def test_async_stream_helper(upstream: ScriptedUpstream, aclient: openai.AsyncOpenAI) -> None:
    upstream.script = [python_call("a = 1"), Text("ok")]
    async with aclient.chat.completions.stream(
        model="gpt-4o", messages=USER, tools=[PYTHON_TOOL]
    ) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "python"
    assert json.loads(calls[0].function.arguments) == {"code": "a = 1"}

    async with aclient.chat.completions.stream(model="gpt-4o", messages=USER) as stream:
        texts = [event.delta async for event in stream if event.type == "content.delta"]
    assert "".join(texts) == "ok"


def test_chunking_keeps_unicode_and_empty_text() -> None:
    kwargs: dict[str, Any] = {
        "completion_id": "chatcmpl-1",
        "created": 1,
        "model": "m",
        "include_usage": False,
    }
    chunks = completion_chunks(Text("ü✓😀ab", usage=(1, 1)), chunk_size=2, **kwargs)
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert pieces == ["", "ü✓", "😀a", "b", None]
    empty = completion_chunks(Text(""), **kwargs)
    assert [c["choices"][0]["delta"] for c in empty] == [
        {"role": "assistant", "content": "", "refusal": None},
        {},
    ]


# --------------------------------------------------------------------------- scripts


def test_callable_script_sees_the_request(
    upstream: ScriptedUpstream, client: openai.OpenAI
) -> None:
    seen: list[Request] = []

    def model(request: Request) -> Turn:
        seen.append(request)
        tool_messages = [m for m in request["messages"] if m["role"] == "tool"]
        if not tool_messages:
            return python_call("print(6 * 7)")
        return Text(f"The output was {tool_messages[-1]['content'].strip()}.")

    upstream.script = model
    first = client.chat.completions.create(model="gpt-4o", messages=USER, tools=[PYTHON_TOOL])
    calls = first.choices[0].message.tool_calls
    assert calls is not None
    call = calls[0]
    assert call.type == "function"
    messages: list[ChatCompletionMessageParam] = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "python", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "42\n"},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[PYTHON_TOOL])

    assert second.choices[0].message.content == "The output was 42."
    assert [r["model"] for r in seen] == ["gpt-4o", "gpt-4o"]
    assert seen[0]["tools"] == [PYTHON_TOOL]
    assert upstream.last_tool_results() == ["42\n"]
    assert upstream.tool_results(0) == []


def test_tool_results_with_content_parts(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    upstream.script = [Text("ok")]
    client.chat.completions.create(
        model="gpt-4o",
        messages=[
            *USER,
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
        ],
    )
    assert upstream.last_tool_results() == ["two", "one"]


def test_list_script_runs_out_clearly(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    upstream.script = [Text("only one")]
    client.chat.completions.create(model="gpt-4o", messages=USER)
    with pytest.raises(openai.InternalServerError, match="ran out of turns") as raised:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert raised.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(UpstreamScriptError, match=r"it has 1 and the model was asked for turn 2"):
        upstream.check()
    assert "What is 6 * 7?" in upstream.take_errors()[0]
    upstream.check()  # taken: nothing left


def test_sequence_helper() -> None:
    script = sequence(Text("a"), lambda request: Text(request["model"]))
    request: Request = {"model": "gpt-4o", "messages": USER}
    assert script(request) == Text("a")
    assert script(request) == Text("gpt-4o")
    assert (script.consumed, script.remaining) == (2, 0)
    with pytest.raises(ScriptExhausted, match="it has 2 and the model was asked for turn 3"):
        script(request)


async def test_concurrent_requests(upstream: ScriptedUpstream, aclient: openai.AsyncOpenAI) -> None:
    def echo(request: Request) -> Turn:
        return Delay(0.2, then=Text(request["messages"][0]["content"] * 3))

    upstream.script = echo

    async def ask(word: str, stream: bool) -> str:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": word}]
        if not stream:
            reply = await aclient.chat.completions.create(model="m", messages=messages)
            return reply.choices[0].message.content or ""
        chunks = await aclient.chat.completions.create(model="m", messages=messages, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])

    started = time.monotonic()
    words = [f"w{i}-" for i in range(8)]
    answers = await asyncio.gather(*(ask(w, i % 2 == 0) for i, w in enumerate(words)))
    assert answers == [w * 3 for w in words]
    assert time.monotonic() - started < 1.5  # served side by side, not one after another
    assert len(upstream.requests) == 8


def test_exit_raises_script_errors() -> None:
    with pytest.raises(UpstreamScriptError, match="ran out of turns"):  # noqa: SIM117
        with ScriptedUpstream([]) as upstream:
            with openai.OpenAI(base_url=upstream.base_url, api_key="k", max_retries=0) as sdk:
                with pytest.raises(openai.InternalServerError):
                    sdk.chat.completions.create(model="gpt-4o", messages=USER)


def test_script_exceptions_and_bad_turns(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    def broken(request: Request) -> Turn:
        raise KeyError("no such thing")

    upstream.script = broken
    with pytest.raises(openai.InternalServerError, match="KeyError"):
        client.chat.completions.create(model="gpt-4o", messages=USER)
    upstream.script = sequence(lambda request: "not a turn")  # type: ignore[arg-type,return-value]
    with pytest.raises(openai.InternalServerError, match="not a Turn"):
        client.chat.completions.create(model="gpt-4o", messages=USER)
    upstream.script = None
    with pytest.raises(openai.InternalServerError, match="no script"):
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert len(upstream.take_errors()) == 3
    with pytest.raises(TypeError):
        ScriptedUpstream(["text instead of a turn"])  # type: ignore[list-item]


def test_reset_and_reuse(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    upstream.script = [Text("one")]
    client.chat.completions.create(model="gpt-4o", messages=USER)
    upstream.reset([Text("two"), Text("three")])
    assert upstream.requests == []
    assert client.chat.completions.create(model="m", messages=USER).choices[0].message.content == (
        "two"
    )
    upstream.script = [Text("four")]  # a new list starts from its first turn
    assert client.chat.completions.create(model="m", messages=USER).choices[0].message.content == (
        "four"
    )
    assert len(upstream.requests) == 2


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("status", "error", "type_"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_request_error"),
        (404, openai.NotFoundError, "invalid_request_error"),
        (429, openai.RateLimitError, "requests"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
def test_fail_gives_an_openai_error(
    upstream: ScriptedUpstream,
    client: openai.OpenAI,
    status: int,
    error: type[openai.APIStatusError],
    type_: str,
) -> None:
    upstream.script = [Fail(status, "scripted failure"), Fail(status, "again", code="c", param="p")]
    with pytest.raises(error) as raised:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert raised.value.status_code == status
    assert raised.value.body == {
        "message": "scripted failure",
        "type": type_,
        "param": None,
        "code": "rate_limit_exceeded" if status == 429 else None,
    }
    assert "scripted failure" in str(raised.value)
    with pytest.raises(error) as raised:  # streaming requests fail the same way
        client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    assert raised.value.code == "c" and raised.value.param == "p"


def test_fail_retries_follow_the_client(upstream: ScriptedUpstream) -> None:
    upstream.script = [
        Fail(500, "flaky"),
        Text("recovered"),
        Fail(500, "fatal", should_retry=False),
        Text("never"),
    ]
    with openai.OpenAI(base_url=upstream.base_url, api_key="k", max_retries=1) as retrying:
        first = retrying.with_options(timeout=5).chat.completions.create(
            model="gpt-4o", messages=USER
        )
        assert first.choices[0].message.content == "recovered"
        assert len(upstream.requests) == 2  # the retry consumed a turn
        with pytest.raises(openai.InternalServerError, match="fatal"):
            retrying.chat.completions.create(model="gpt-4o", messages=USER)
    assert len(upstream.requests) == 3


def test_auth_is_checked_when_asked() -> None:
    with ScriptedUpstream([Text("hi")], api_key="sk-right") as upstream:
        with (
            openai.OpenAI(base_url=upstream.base_url, api_key="sk-wrong", max_retries=0) as bad,
            pytest.raises(openai.AuthenticationError) as raised,
        ):
            bad.chat.completions.create(model="gpt-4o", messages=USER)
        assert raised.value.code == "invalid_api_key"
        with openai.OpenAI(base_url=upstream.base_url, api_key="sk-right", max_retries=0) as good:
            assert good.chat.completions.create(model="gpt-4o", messages=USER).choices


def test_broken_streams(
    upstream: ScriptedUpstream, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.script = [
        Broken(Text("this answer never ends"), after_chunks=3),
        Broken(Text("this one fails"), after_chunks=2, error="The server had an error"),
        Broken(Text("and this body is cut")),
        Broken(Text("this fails"), error="boom"),
    ]
    stream = client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):  # noqa: SIM117
        with stream:
            received.extend(c.choices[0].delta.content or "" for c in stream)
    assert "".join(received) == "this ans"  # the role chunk, then two pieces

    stream = client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    with pytest.raises(openai.APIError, match="The server had an error"), stream:
        list(stream)

    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=USER)
    with pytest.raises(openai.InternalServerError, match="boom"):
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert upstream.disconnected == []  # deliberate drops are not client hang-ups
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]  # and no noise


# --------------------------------------------------------------------------- delays, hang-ups


def test_delay_then_answer(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    upstream.script = [Delay(0.3, then=Text("late")), Delay(0.2, then=Fail(500, "late fail"))]
    started = time.monotonic()
    completion = client.chat.completions.create(model="gpt-4o", messages=USER)
    assert completion.choices[0].message.content == "late"
    assert time.monotonic() - started >= 0.3
    with pytest.raises(openai.InternalServerError, match="late fail"):
        client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    assert upstream.disconnected == []


async def test_cancelled_client_is_recorded(
    upstream: ScriptedUpstream, aclient: openai.AsyncOpenAI
) -> None:
    upstream.script = [Delay(30), Text("after")]
    task = asyncio.create_task(aclient.chat.completions.create(model="gpt-4o", messages=USER))
    requests = await upstream.wait_for_requests_async(1)
    assert requests[0]["messages"] == USER
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await upstream.wait_for_disconnect_async(0, timeout=5)
    assert upstream.disconnected == [0]
    # The server goes on answering.
    assert (await aclient.chat.completions.create(model="m", messages=USER)).choices


def test_client_timeout_is_recorded(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    upstream.script = [Delay(30, then=Text("too late"))]
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(model="gpt-4o", messages=USER)
    upstream.wait_for_disconnect(timeout=5)


async def test_hang_up_mid_stream(upstream: ScriptedUpstream, aclient: openai.AsyncOpenAI) -> None:
    upstream.chunk_delay = 0.05
    upstream.chunk_size = 1
    upstream.script = [Text("a long and slow answer " * 5)]
    stream = await aclient.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    received = 0
    async for _chunk in stream:
        received += 1
        if received == 3:
            break
    await stream.close()
    await upstream.wait_for_disconnect_async(0, timeout=5)


def test_wait_for_requests_from_another_thread(
    upstream: ScriptedUpstream, client: openai.OpenAI
) -> None:
    upstream.script = [Text("one"), Text("two")]

    def call_twice() -> None:
        time.sleep(0.1)
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o", messages=USER)

    caller = threading.Thread(target=call_twice)
    caller.start()
    assert len(upstream.wait_for_requests(2, timeout=10)) == 2
    caller.join()
    with pytest.raises(TimeoutError, match="got 2 request"):
        upstream.wait_for_requests(3, timeout=0.1)


def test_stop_is_fast_even_with_a_pending_delay() -> None:
    upstream = ScriptedUpstream([Delay(60)]).start()
    port = upstream.port
    answers: list[BaseException | int] = []

    def call() -> None:
        try:
            with httpx2.Client(trust_env=False, timeout=30) as http:
                body = {"model": "m", "messages": USER}
                answers.append(
                    http.post(f"{upstream.base_url}/chat/completions", json=body).status_code
                )
        except BaseException as exc:
            answers.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    upstream.wait_for_requests(1)
    started = time.monotonic()
    upstream.stop()
    assert time.monotonic() - started < 3
    caller.join(timeout=5)
    assert answers == [503]
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    upstream.stop()  # idempotent
    upstream.script = [Text("back")]
    with upstream, httpx2.Client(trust_env=False) as http:  # back on the same port
        assert upstream.port == port
        reply = http.post(
            f"{upstream.base_url}/chat/completions", json={"model": "m", "messages": USER}
        )
        assert reply.json()["choices"][0]["message"]["content"] == "back"


def test_two_upstreams_get_their_own_ports() -> None:
    with ScriptedUpstream([Text("a")]) as one, ScriptedUpstream([Text("b")]) as two:
        assert one.port != two.port
        assert one.base_url == f"http://127.0.0.1:{one.port}/v1"
        assert one.url == f"http://127.0.0.1:{one.port}"
        for upstream, expected in ((one, "a"), (two, "b")):
            with openai.OpenAI(base_url=upstream.base_url, api_key="k", max_retries=0) as sdk:
                reply = sdk.chat.completions.create(model="m", messages=USER)
                assert reply.choices[0].message.content == expected


# --------------------------------------------------------------------------- other endpoints


def test_models(upstream: ScriptedUpstream, client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["gpt-4o-mini", "gpt-4o"]
    assert client.models.retrieve("gpt-4o").owned_by == "scripted"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_unknown_path_is_an_openai_404(upstream: ScriptedUpstream) -> None:
    with httpx2.Client(trust_env=False) as http:
        response = http.post(f"{upstream.base_url}/embeddings", json={})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/embeddings)"
    assert upstream.requests == []


# --------------------------------------------------------------------------- validation


def test_invalid_histories_are_rejected_and_reported(
    upstream: ScriptedUpstream, client: openai.OpenAI
) -> None:
    upstream.script = [Text("never")]
    orphan: list[ChatCompletionMessageParam] = [
        *USER,
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    with pytest.raises(openai.BadRequestError, match="must be a response to a preceeding") as e:
        client.chat.completions.create(model="gpt-4o", messages=orphan)
    assert e.value.param == "messages.[1].role"
    unanswered: list[ChatCompletionMessageParam] = [
        *USER,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "user", "content": "and?"},
    ]
    with pytest.raises(openai.BadRequestError, match="did not have response messages: call_1"):
        client.chat.completions.create(model="gpt-4o", messages=unanswered)
    with pytest.raises(openai.BadRequestError, match="'stream_options' parameter is only"):
        client.chat.completions.create(
            model="gpt-4o", messages=USER, stream_options={"include_usage": True}
        )
    errors = upstream.take_errors()
    assert len(errors) == 3 and all("would be rejected by OpenAI" in e for e in errors)
    assert len(upstream.requests) == 3  # recorded all the same


def test_strict_off_lets_anything_through() -> None:
    with ScriptedUpstream([Text("fine")], strict=False) as upstream:  # noqa: SIM117
        with openai.OpenAI(base_url=upstream.base_url, api_key="k", max_retries=0) as sdk:
            orphan: list[ChatCompletionMessageParam] = [
                {"role": "tool", "tool_call_id": "x", "content": "1"}
            ]
            assert sdk.chat.completions.create(model="m", messages=orphan).choices


ASSISTANT_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": "m", "messages": USER}, None),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "s"},
                    *USER,
                    ASSISTANT_CALL,
                    {"role": "tool", "tool_call_id": "c", "content": "out"},
                    {"role": "assistant", "content": "done"},
                    {"role": "user", "content": [{"type": "text", "text": "more"}]},
                ],
                "tools": [PYTHON_TOOL],
                "tool_choice": "auto",
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            None,
        ),
        ({"messages": USER}, "you must provide a model parameter"),
        ({"model": "m"}, "Missing required parameter: 'messages'."),
        ({"model": "m", "messages": []}, "empty array"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "Invalid value: 'robot'"),
        ({"model": "m", "messages": [{"role": "user"}]}, "'messages[0].content'"),
        ({"model": "m", "messages": [{"role": "assistant", "content": None}]}, "got null"),
        ({"model": "m", "messages": [*USER, ASSISTANT_CALL]}, "did not have response messages: c"),
        (
            {
                "model": "m",
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": {}},
                            }
                        ],
                    }
                ],
            },
            "'messages[0].tool_calls[0].function.arguments': expected a string",
        ),
        ({"model": "m", "messages": USER, "tool_choice": "auto"}, "only allowed when 'tools'"),
        (
            {"model": "m", "messages": USER, "tools": [{"type": "function", "function": {}}]},
            "'tools[0].function.name'",
        ),
        (
            {
                "model": "m",
                "messages": USER,
                "tools": [{"type": "function", "function": {"name": "run code"}}],
            },
            "does not match pattern",
        ),
        (
            {"model": "m", "messages": USER, "stream": False, "stream_options": {}},
            "only allowed when 'stream' is enabled",
        ),
    ],
)
def test_request_problem(body: dict[str, Any], problem: str | None) -> None:
    found = request_problem(body)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found[0]

"""One model-and-tool loop behind every door (agent/loop.py), seen through the official `openai`
SDK: what a run, a response and a chat completion send the model, and the limits they share.

The server here allows two tool calls per loop (CODEINTERP_MAX_TOOL_CALLS_PER_RUN=2), so the
budget's error can be reached from each door with a short script.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.contract.helpers import server_env
from tests.support.server import ServerProcess
from tests.support.upstream import (
    Fail,
    Request,
    ScriptedUpstream,
    Text,
    ToolCall,
    ToolCalls,
    python_call,
)

pytestmark = pytest.mark.root

MODEL = "gpt-4o"
BUDGET = 2
BUDGET_ERROR = (
    f"the model made more than {BUDGET} tool calls; "
    "raise CODEINTERP_MAX_TOOL_CALLS_PER_RUN to allow more"
)
# A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
PNG_B64 = base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = server_env(upstream, max_tool_calls_per_run=BUDGET)
    with ServerProcess(env, data_dir=tmp_path_factory.mktemp("loop")) as process:
        yield process


def assistant(client: openai.OpenAI, **extra: Any) -> Any:
    return client.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}], **extra)


def run(client: openai.OpenAI, thread_id: str, assistant_id: str, **extra: Any) -> Any:
    return client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, **extra
    )


def texts_of(request: Request) -> list[str]:
    """Every text the model was sent in `request`, in order, whatever the message's shape."""
    out = []
    for message in request["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        for part in content if isinstance(content, list) else ():
            if part.get("type") == "text":
                out.append(part["text"])
    return out


# -- runs: what reaches the model -----------------------------------------------------------


def test_a_runs_tool_choice_and_response_format_reach_the_model(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Forcing code_interpreter forces the python tool on the first turn only; the run's
    response_format and parallel_tool_calls go with every turn."""
    upstream.script = [python_call("print(2 + 2)"), Text('{"answer": 4}')]
    helper = assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "2+2 as JSON"}])
    done = run(
        client,
        thread.id,
        helper.id,
        tool_choice={"type": "code_interpreter"},
        response_format={"type": "json_object"},
        parallel_tool_calls=False,
    )
    assert done.status == "completed", done.last_error
    first, second = upstream.requests
    assert first["tool_choice"] == {"type": "function", "function": {"name": "python"}}
    assert "tool_choice" not in second
    for request in (first, second):
        assert request["response_format"] == {"type": "json_object"}
        assert request["parallel_tool_calls"] is False


def test_truncation_strategy_keeps_the_last_messages(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.script = [Text("ok")]
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": f"message {i}"} for i in range(5)]
    )
    done = run(
        client,
        thread.id,
        assistant(client).id,
        truncation_strategy={"type": "last_messages", "last_messages": 2},
    )
    assert done.status == "completed", done.last_error
    sent = [m for m in upstream.last_request["messages"] if m["role"] != "system"]
    assert [m["content"] for m in sent] == ["message 3", "message 4"]


def test_a_later_run_sees_the_code_and_output_of_an_earlier_run(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """The tool calls of earlier runs are replayed as assistant tool_calls and tool messages,
    between the user message that asked and the answer that followed."""
    helper = assistant(client)
    upstream.script = [python_call("secret = 6 * 7\nprint(secret)"), Text("It is 42.")]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Compute it."}])
    assert run(client, thread.id, helper.id).status == "completed"
    client.beta.threads.messages.create(thread.id, role="user", content="What did you run?")
    upstream.reset([Text("secret = 6 * 7")])
    assert run(client, thread.id, helper.id).status == "completed"
    messages = [m for m in upstream.last_request["messages"] if m["role"] != "system"]
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant", "tool", "assistant", "user"], messages
    (call,) = messages[1]["tool_calls"]
    assert call["function"]["name"] == "python"
    assert json.loads(call["function"]["arguments"]) == {"code": "secret = 6 * 7\nprint(secret)"}
    assert messages[2] == {"role": "tool", "tool_call_id": call["id"], "content": "42"}
    assert messages[3]["content"] == "It is 42."


def test_an_image_attachment_reaches_the_model_as_image_input(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """An image_file part goes to the model as an image_url part with the file as a data URI;
    a model that refuses image input (400) is asked again with the image named in text."""
    image = client.files.create(file=("dot.png", io.BytesIO(PNG)), purpose="vision")
    content: Any = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_file", "image_file": {"file_id": image.id, "detail": "low"}},
    ]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": content}])
    upstream.script = [Text("A dot.")]
    assert run(client, thread.id, assistant(client).id).status == "completed"
    (user,) = [m for m in upstream.last_request["messages"] if m["role"] == "user"]
    text, picture = user["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert picture["type"] == "image_url" and picture["image_url"]["detail"] == "low"
    assert picture["image_url"]["url"] == "data:image/png;base64," + PNG_B64

    upstream.reset([Fail(400, "this model does not support image input"), Text("A dot.")])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": content}])
    assert run(client, thread.id, assistant(client).id).status == "completed"
    (user,) = [m for m in upstream.last_request["messages"] if m["role"] == "user"]
    assert [p["type"] for p in user["content"]] == ["text", "text"]
    assert "image" in user["content"][1]["text"]


def test_max_prompt_tokens_ends_a_run_incomplete(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.script = [
        ToolCalls([ToolCall("python", json.dumps({"code": "1"}))], usage=(300, 5)),
        Text("never asked"),
    ]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "go"}])
    done = run(client, thread.id, assistant(client).id, max_prompt_tokens=256)
    assert done.status == "incomplete"
    assert done.incomplete_details.reason == "max_prompt_tokens"
    assert len(upstream.requests) == 1


# -- the same limits from every door --------------------------------------------------------


def three_python_calls() -> list[Any]:
    return [python_call("1"), python_call("2"), python_call("3"), Text("unreachable")]


def test_the_same_tool_budget_error_from_all_three_doors(
    server: ServerProcess, client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Past the budget a run fails, a response fails and a chat completion is a 400, each with
    the same message naming the setting to raise."""
    upstream.script = three_python_calls()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "go"}])
    done = run(client, thread.id, assistant(client).id)
    assert done.status == "failed"
    assert (done.last_error.code, done.last_error.message) == ("server_error", BUDGET_ERROR)

    upstream.reset(three_python_calls())
    response = client.responses.create(
        model=MODEL, input="go", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]
    )
    assert response.status == "failed"
    assert response.error is not None
    assert (response.error.code, response.error.message) == ("server_error", BUDGET_ERROR)

    upstream.reset(three_python_calls())
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "go"}],
            tools=[{"type": "code_interpreter"}],  # type: ignore[list-item]
        )
    error = raised.value.body
    assert isinstance(error, dict)
    assert (error["message"], error["code"]) == (BUDGET_ERROR, "loop_limit_exceeded")


def test_an_unknown_tool_is_an_error_the_model_reads_at_every_door(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A call of a tool nobody offered is answered with an error the model can correct, and
    the loop goes on: in a chat completion as in a run."""
    unknown = ToolCalls([ToolCall("browse", "{}")])
    upstream.script = [unknown, Text("Sorry, no browser.")]
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "look it up"}],
        tools=[{"type": "code_interpreter"}],  # type: ignore[list-item]
    )
    assert completion.choices[0].message.content == "Sorry, no browser."
    assert upstream.last_tool_results() == ["error: there is no tool named 'browse'"]

    upstream.reset([unknown, Text("Sorry, no browser.")])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "look it up"}])
    assert run(client, thread.id, assistant(client).id).status == "completed"
    assert upstream.last_tool_results() == ["error: there is no tool named 'browse'"]


def test_auto_container_is_reused_from_a_conversation_sent_back_as_input(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A client that sends the conversation back (instead of previous_response_id), as the
    OpenAI Agents SDK does, continues in the container its earlier code_interpreter_call used."""
    tools: Any = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    upstream.script = [python_call("x = 41"), Text("set")]
    first = client.responses.create(model=MODEL, input="set x", tools=tools)
    assert first.status == "completed", first.error
    history: list[Any] = [{"role": "user", "content": "set x"}]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"role": "user", "content": "add one"})
    upstream.reset([python_call("print(x + 1)"), Text("42")])
    second = client.responses.create(model=MODEL, input=history, tools=tools)
    assert second.status == "completed", second.error
    assert upstream.last_tool_results()[-1].strip() == "42"
    calls = [item for item in second.output if item.type == "code_interpreter_call"]
    assert calls[0].container_id == first.output[0].container_id  # type: ignore[union-attr]


def test_a_responses_text_format_reaches_the_model_as_response_format(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Structured output on the Responses door (what the Agents SDK sends for an output_type):
    text.format json_schema goes to the model as Chat Completions' response_format, and the
    response echoes it."""
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    text_format: Any = {"type": "json_schema", "name": "Answer", "schema": schema, "strict": True}
    upstream.script = [Text('{"answer": 4}')]
    response = client.responses.create(model=MODEL, input="2+2", text={"format": text_format})
    assert response.status == "completed", response.error
    assert upstream.last_request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": schema, "strict": True},
    }
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="2+2", text={"format": {"type": "json_schema"}})

"""The Responses API end to end through the official ``openai`` SDK: the code_interpreter tool in
auto and explicit containers, its output items, includes, citations and stream events, the
conversation carried by ``previous_response_id``, function tools, failures, the stored response
and its input items, bad requests, and the container sessions a response counts in the usage
report.

The reference is /work/shared/reference/openai-api.md §4 (requests, output items, streaming and
the Containers API). The model is the scripted upstream; every number the model "quotes" is
read from the tool message it was sent, so it comes from the sandbox.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import openai
import pytest

from tests.contract.helpers import assert_envelope, assert_sdk_error, raw_client
from tests.support.server import ServerProcess
from tests.support.upstream import (
    Broken,
    Fail,
    Request,
    ScriptedUpstream,
    Text,
    ToolCall,
    ToolCalls,
    python_call,
)

MODEL = "gpt-4.1-test"
OUTPUTS = "code_interpreter_call.outputs"
AUTO = {"type": "code_interpreter", "container": {"type": "auto"}}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MISSING_FILE = "file-" + "0" * 24
MISSING_CONTAINER = "cntr_" + "0" * 24
MISSING_RESPONSE = "resp_" + "0" * 24

CSV = "city,temp\nOslo,4.5\nLima,19.0\nCairo,27.5\nPerth,22.0\n"
CSV_MEAN = "18.25"  # (4.5 + 19 + 27.5 + 22) / 4

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def tool_messages(request: Request) -> list[str]:
    """The tool messages of the current turn: those after the last user message (earlier ones
    belong to previous responses of the conversation)."""
    messages = request["messages"]
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    since = users[-1] if users else 0
    return [str(m["content"]) for m in messages[since:] if m.get("role") == "tool"]


def quote_tool_result(code: str, template: str) -> Any:
    """A script: call python with ``code``, then answer ``template`` filled with the first line
    of the last tool message the model received (what the code printed first)."""

    def script(request: Request) -> Text | ToolCalls:
        results = tool_messages(request)
        if not results:
            return python_call(code)
        return Text(template.format(results[-1].splitlines()[0]))

    return script


def items_of(response: Any, kind: str) -> list[Any]:
    return [item for item in response.output if item.type == kind]


def sessions_since(client: openai.OpenAI, since: int) -> int:
    usage = client.get(
        "/organization/usage/code_interpreter_sessions",
        cast_to=object,
        options={"params": {"start_time": since}},
    )
    assert isinstance(usage, dict) and usage["object"] == "page", usage
    return sum(r["num_sessions"] for b in usage["data"] for r in b["results"])


def container_count(client: openai.OpenAI) -> int:
    return len(list(client.containers.list(limit=100)))


def as_dict(value: Any) -> Any:
    """A model of the SDK's as a dict (the SDK leaves some nested values as plain dicts)."""
    return value if isinstance(value, dict) else value.model_dump()


def dump_output(response: Any) -> list[dict[str, Any]]:
    """The output items as plain JSON, without the SDK's client-side `parsed` fields."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "parsed"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [strip(item.model_dump(mode="json")) for item in response.output]


# --------------------------------------------------------------------------- non-streaming


def test_csv_statistic_in_an_auto_container(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """An uploaded CSV given as an auto container's file_ids is at /mnt/data/<name>; the mean the
    sandbox prints reaches the model and its answer; the response has a code_interpreter_call
    then a message, outputs only with the include, the model's usage summed, the model echoed,
    and the container has the asked memory limit."""
    upload = client.files.create(file=("temps.csv", CSV.encode()), purpose="user_data")
    code = "import pandas as pd\ndf = pd.read_csv('/mnt/data/temps.csv')\nprint(df['temp'].mean())"

    def script(request: Request) -> Text | ToolCalls:
        results = tool_messages(request)
        if not results:
            return ToolCalls(python_call(code).calls, usage=(11, 3))
        return Text(f"The mean temperature is {results[-1].strip()} C.", usage=(17, 4))

    upstream.script = script
    tool = {
        "type": "code_interpreter",
        "container": {"type": "auto", "file_ids": [upload.id], "memory_limit": "4g"},
    }
    response = client.responses.create(
        model=MODEL, input="What is the mean temperature in the CSV?", tools=[tool]
    )

    assert response.status == "completed", response.error
    assert response.error is None
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.model == MODEL
    assert [item.type for item in response.output] == ["code_interpreter_call", "message"]
    call, message = response.output
    assert call.type == "code_interpreter_call" and message.type == "message"
    assert call.id.startswith("ci_")
    assert call.code == code
    assert call.status == "completed"
    assert call.container_id.startswith("cntr_")
    assert call.outputs is None  # no include
    assert message.id.startswith("msg_")
    assert (message.role, message.status) == ("assistant", "completed")
    (part,) = message.content
    assert part.type == "output_text"
    assert part.text == f"The mean temperature is {CSV_MEAN} C."
    assert part.annotations == []
    assert response.output_text == f"The mean temperature is {CSV_MEAN} C."
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (28, 7)
    assert response.usage.total_tokens == 35

    assert len(upstream.requests) == 2
    assert upstream.requests[0]["model"] == MODEL
    assert [t["function"]["name"] for t in upstream.requests[0]["tools"]] == ["python"]
    assert upstream.tool_results(1) == [CSV_MEAN]

    container = client.containers.retrieve(call.container_id)
    assert container.memory_limit == "4g"
    paths = {f.path: f.source for f in client.containers.files.list(call.container_id)}
    assert paths == {"/mnt/data/temps.csv": "user"}

    upstream.reset(script)
    included = client.responses.create(
        model=MODEL,
        input="What is the mean temperature in the CSV?",
        tools=[tool],
        include=[OUTPUTS],
    )
    assert included.status == "completed", included.error
    (call,) = items_of(included, "code_interpreter_call")
    assert call.outputs is not None
    assert [o.model_dump() for o in call.outputs] == [{"type": "logs", "logs": f"{CSV_MEAN}\n"}]
    assert included.output_text == f"The mean temperature is {CSV_MEAN} C."


CHART_CODE = (
    "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9, 16], marker='o')\nplt.title('squares')"
)
CHART_TEXT = "Here is the chart of the squares."


def _chart(client: openai.OpenAI, upstream: ScriptedUpstream, code: str) -> tuple[Any, Any, str]:
    """A response that draws one chart: (its call, its message, the chart's container file id,
    from the message's citation)."""
    upstream.script = [python_call(code), Text(CHART_TEXT)]
    response = client.responses.create(
        model=MODEL, input="Plot it.", tools=[AUTO], include=[OUTPUTS]
    )
    assert response.status == "completed", response.error
    (call,) = items_of(response, "code_interpreter_call")
    (message,) = items_of(response, "message")
    assert call.outputs is not None
    images = [o for o in call.outputs if o.type == "image"]
    assert len(images) == 1, call.outputs
    assert images[0].url.startswith("data:image/png;base64,"), images[0].url[:80]
    (citation,) = [a for a in message.content[0].annotations if a.type == "container_file_citation"]
    assert citation.container_id == call.container_id
    return call, message, citation.file_id


def test_chart_is_an_image_output_and_a_container_file(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A matplotlib chart becomes an image output whose URL is the PNG as a data URI (as
    api.openai.com sends it: clients decode it), and a container file made by the assistant
    with the same bytes, cited on the next message."""
    call, message, file_id = _chart(client, upstream, CHART_CODE)
    container_id = call.container_id
    (image,) = [o for o in call.outputs if o.type == "image"]
    png = base64.b64decode(image.url.removeprefix("data:image/png;base64,"), validate=True)
    assert png.startswith(PNG_MAGIC)
    assert message.content[0].text == CHART_TEXT

    content = client.containers.files.content.retrieve(file_id, container_id=container_id)
    assert content.read() == png

    listed = {f.id: f for f in client.containers.files.list(container_id)}
    assert file_id in listed
    assert listed[file_id].source == "assistant"
    assert listed[file_id].path.endswith(".png")
    assert listed[file_id].bytes == len(png)


def test_failing_code_is_a_completed_call_with_its_traceback(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Code that raises is still a completed code_interpreter_call; its traceback is in the logs
    output and in the tool message the model reads."""
    upstream.script = [python_call("values = [1, 2]\nprint(valeus)"), Text("I made a typo.")]
    response = client.responses.create(
        model=MODEL, input="Print the values.", tools=[AUTO], include=[OUTPUTS]
    )
    assert response.status == "completed", response.error
    (call,) = items_of(response, "code_interpreter_call")
    assert call.status == "completed"
    assert call.outputs is not None
    (logs,) = [o.logs for o in call.outputs if o.type == "logs"]
    assert "NameError" in logs and "valeus" in logs
    (result,) = upstream.tool_results(1)
    assert "NameError" in result and "valeus" in result
    assert response.output_text == "I made a typo."


# A noise image: its PNG is over a megabyte, so the server is still saving it when the cell's
# file snapshot is taken; the citation must not depend on that race.
BIG_CHART_CODE = (
    "import matplotlib.pyplot as plt, numpy as np\n"
    "plt.figure(figsize=(8, 8))\n"
    "plt.imshow(np.random.default_rng(0).random((600, 600)))"
)


def test_chart_is_cited_on_the_message(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    """The message after a chart carries a container_file_citation for the chart's file (at
    0, 0: the text does not link it), as in the reference's example (§4.2)."""
    call, message, file_id = _chart(client, upstream, BIG_CHART_CODE)
    (part,) = message.content
    assert part.text == CHART_TEXT
    citations = [(a.type, a.container_id, a.file_id) for a in part.annotations]
    assert citations == [("container_file_citation", call.container_id, file_id)]
    (annotation,) = part.annotations
    assert annotation.filename.endswith(".png")
    assert (annotation.start_index, annotation.end_index) == (0, 0)


def test_sandbox_link_is_cited_at_its_span(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A file the model links as sandbox:/mnt/data/x.csv gets a container_file_citation over
    exactly that link, and downloads with the bytes the code wrote."""
    text = "Done. Download it here: [x.csv](sandbox:/mnt/data/x.csv)."
    upstream.script = [
        python_call("with open('/mnt/data/x.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')"),
        Text(text),
    ]
    response = client.responses.create(model=MODEL, input="Write x.csv.", tools=[AUTO])

    assert response.status == "completed", response.error
    (call,) = items_of(response, "code_interpreter_call")
    (message,) = items_of(response, "message")
    (part,) = message.content
    assert part.text == text
    (annotation,) = part.annotations
    assert annotation.type == "container_file_citation"
    assert annotation.container_id == call.container_id
    assert annotation.filename == "x.csv"
    assert text[annotation.start_index : annotation.end_index] == "sandbox:/mnt/data/x.csv"
    content = client.containers.files.content.retrieve(
        annotation.file_id, container_id=call.container_id
    )
    assert content.read() == b"a,b\n1,2\n"
    file = client.containers.files.retrieve(annotation.file_id, container_id=call.container_id)
    assert (file.path, file.source) == ("/mnt/data/x.csv", "assistant")


# --------------------------------------------------------------------------- streaming

STREAM_CODE = (
    "import time\n"
    "time.sleep(0.7)  # longer than the server's SSE heartbeat (0.3 s in conftest)\n"
    "total = sum(range(10))\n"
    "print(total)\n"
    "with open('/mnt/data/sum.txt', 'w') as f:\n"
    "    f.write(str(total))"
)
STREAM_TEMPLATE = "The total is {}; see [sum.txt](sandbox:/mnt/data/sum.txt)."
STREAM_TEXT = STREAM_TEMPLATE.format(45)
EXPECTED_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.code_interpreter_call.in_progress",
    "response.code_interpreter_call_code.delta",
    "response.code_interpreter_call_code.done",
    "response.code_interpreter_call.interpreting",
    "response.code_interpreter_call.completed",
    "response.output_item.done",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.output_text.annotation.added",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def _collapse(names: list[str]) -> list[str]:
    """Event names with each run of repeated delta events folded into one."""
    out: list[str] = []
    for name in names:
        if not (out and name == out[-1] and name.endswith(".delta")):
            out.append(name)
    return out


def _check_stream(events: list[Any]) -> None:
    """What every code interpreter stream must satisfy (reference §4.3)."""
    names = [e.type for e in events]
    assert _collapse(names) == EXPECTED_ORDER, names
    assert names.count("response.code_interpreter_call_code.delta") > 1  # streamed in pieces
    assert names.count("response.output_text.delta") > 1
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(events))), numbers

    response_id = events[0].response.id
    lifecycle = [e for e in events if e.type in ("response.created", "response.in_progress")]
    assert all(e.response.id == response_id for e in [*lifecycle, events[-1]])
    assert events[0].response.status == "in_progress"

    added = {e.item.id: e for e in events if e.type == "response.output_item.added"}
    done = {e.item.id: e for e in events if e.type == "response.output_item.done"}
    assert len(added) == 2 and added.keys() == done.keys()
    for item_id, event in added.items():
        assert done[item_id].item.type == event.item.type
        assert done[item_id].output_index == event.output_index
    assert sorted(e.output_index for e in added.values()) == [0, 1]

    call_added = events[2].item
    assert call_added.type == "code_interpreter_call"
    assert (call_added.status, call_added.code, call_added.outputs) == ("in_progress", "", None)
    code_deltas = [e for e in events if e.type == "response.code_interpreter_call_code.delta"]
    assert "".join(e.delta for e in code_deltas) == STREAM_CODE
    assert all(e.item_id == call_added.id for e in code_deltas)
    (code_done,) = [e for e in events if e.type == "response.code_interpreter_call_code.done"]
    assert code_done.code == STREAM_CODE
    call_done = done[call_added.id].item
    assert (call_done.status, call_done.code) == ("completed", STREAM_CODE)
    assert [o.model_dump() for o in call_done.outputs or []] == [{"type": "logs", "logs": "45\n"}]

    text_deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(e.delta for e in text_deltas) == STREAM_TEXT
    (text_done,) = [e for e in events if e.type == "response.output_text.done"]
    assert text_done.text == STREAM_TEXT
    (annotation_added,) = [e for e in events if e.type == "response.output_text.annotation.added"]
    message_done = next(e.item for e in done.values() if e.item.type == "message")
    annotation = message_done.content[0].annotations[0]
    assert as_dict(annotation_added.annotation) == annotation.model_dump()
    assert STREAM_TEXT[annotation.start_index : annotation.end_index] == (
        "sandbox:/mnt/data/sum.txt"
    )

    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == STREAM_TEXT
    assert completed.usage is not None and completed.usage.total_tokens > 0


def test_stream_helper_follows_the_reference_event_order(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """`responses.stream(...)` yields the §4.3 events in order with consecutive sequence
    numbers; the code deltas add up to the code, every added item is done, and the final
    response equals the stored one."""
    upstream.script = quote_tool_result(STREAM_CODE, STREAM_TEMPLATE)
    with client.responses.stream(
        model=MODEL, input="Sum 0..9 and save it.", tools=[AUTO], include=[OUTPUTS]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()

    _check_stream(events)
    assert final.status == "completed"
    assert final.output_text == STREAM_TEXT
    stored = client.responses.retrieve(final.id)
    assert stored.status == "completed"
    assert stored.output_text == final.output_text
    assert dump_output(stored) == dump_output(final)
    assert stored.usage == final.usage


def test_create_with_stream_true_yields_the_raw_events(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """`responses.create(stream=True)` yields the same events (the keep-alive comments sent while
    the code sleeps are not events), ending with response.completed whose response is the stored
    one."""
    upstream.script = quote_tool_result(STREAM_CODE, STREAM_TEMPLATE)
    stream = client.responses.create(
        model=MODEL,
        input="Sum 0..9 and save it.",
        tools=[AUTO],
        include=[OUTPUTS],
        stream=True,
    )
    with stream:
        events = list(stream)

    _check_stream(events)
    completed = events[-1].response
    stored = client.responses.retrieve(completed.id)
    assert dump_output(stored) == dump_output(completed)
    assert upstream.tool_results(1)[0].startswith("45\n")


# --------------------------------------------------------------------------- conversation


def test_previous_response_continues_the_conversation_and_its_container(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A response with previous_response_id runs in the previous response's auto container, so
    its variables persist, and the model is sent the earlier messages and tool calls."""
    upstream.script = [python_call("x = 41"), Text("x is set.")]
    first = client.responses.create(model=MODEL, input="Set x to 41.", tools=[AUTO])
    assert first.status == "completed", first.error
    (first_call,) = items_of(first, "code_interpreter_call")

    upstream.script = quote_tool_result("print(x + 1)", "x + 1 is {}.")
    second = client.responses.create(
        model=MODEL, input="Print x + 1.", tools=[AUTO], previous_response_id=first.id
    )
    assert second.status == "completed", second.error
    assert second.previous_response_id == first.id
    (second_call,) = items_of(second, "code_interpreter_call")
    assert second_call.container_id == first_call.container_id
    assert second.output_text == "x + 1 is 42."

    assert len(upstream.requests) == 4
    assert upstream.tool_results(3)[-1] == "42"
    messages = [m for m in upstream.requests[2]["messages"] if m["role"] != "system"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[0]["content"] == "Set x to 41."
    (earlier_call,) = messages[1]["tool_calls"]
    assert earlier_call["function"]["name"] == "python"
    assert json.loads(earlier_call["function"]["arguments"]) == {"code": "x = 41"}
    assert messages[2]["tool_call_id"] == earlier_call["id"]
    assert messages[3]["content"] == "x is set."
    assert messages[4]["content"] == "Print x + 1."


def test_reused_auto_container_gets_the_new_file_ids(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Continuing in the previous response's auto container, the new request's file_ids are
    copied into it too (the model must be able to read what the client attached)."""
    upstream.script = [python_call("kept = 'yes'"), Text("ok")]
    first = client.responses.create(model=MODEL, input="Remember this.", tools=[AUTO])
    assert first.status == "completed", first.error
    upload = client.files.create(file=("late.txt", b"attached later\n"), purpose="user_data")
    upstream.script = quote_tool_result(
        "print(kept, open('/mnt/data/late.txt').read().strip())", "{}"
    )
    second = client.responses.create(
        model=MODEL,
        input="Read late.txt.",
        previous_response_id=first.id,
        tools=[
            {"type": "code_interpreter", "container": {"type": "auto", "file_ids": [upload.id]}}
        ],
    )
    assert second.status == "completed", second.error
    (first_call,) = items_of(first, "code_interpreter_call")
    (second_call,) = items_of(second, "code_interpreter_call")
    assert second_call.container_id == first_call.container_id
    assert upstream.last_tool_results()[-1] == "yes attached later"


def test_explicit_container_is_used_with_its_files(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A container made with containers.create and given by id runs the code: the code sees a
    file uploaded to it, and the call names that container."""
    container = client.containers.create(name="responses-explicit")
    try:
        client.containers.files.create(
            container.id, file=("notes.txt", b"hello from the container\n")
        )
        upstream.script = quote_tool_result(
            "print(open('/mnt/data/notes.txt').read().strip().upper())", "It says: {}"
        )
        before = container_count(client)
        response = client.responses.create(
            model=MODEL,
            input="Read notes.txt aloud.",
            tools=[{"type": "code_interpreter", "container": container.id}],
        )
        assert response.status == "completed", response.error
        (call,) = items_of(response, "code_interpreter_call")
        assert call.container_id == container.id
        assert upstream.tool_results(1) == ["HELLO FROM THE CONTAINER"]
        assert response.output_text == "It says: HELLO FROM THE CONTAINER"
        assert container_count(client) == before  # no auto container was made
    finally:
        client.containers.delete(container.id)


def test_input_file_is_copied_into_the_container(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """An input_file part of a user message is copied into the container at
    /mnt/data/<filename>, where the code reads it."""
    upload = client.files.create(file=("temps.csv", CSV.encode()), purpose="user_data")
    upstream.script = quote_tool_result(
        "import pandas as pd\nprint(pd.read_csv('/mnt/data/temps.csv')['temp'].max())",
        "The warmest is {} C.",
    )
    response = client.responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Which city is warmest?"},
                    {"type": "input_file", "file_id": upload.id},
                ],
            }
        ],
        tools=[AUTO],
    )
    assert response.status == "completed", response.error
    assert response.output_text == "The warmest is 27.5 C."
    (call,) = items_of(response, "code_interpreter_call")
    paths = [f.path for f in client.containers.files.list(call.container_id)]
    assert paths == ["/mnt/data/temps.csv"]


def test_function_call_ends_the_response_and_its_output_continues_it(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A call to a client function ends the response with a function_call item and no message;
    the function_call_output sent with previous_response_id reaches the model, whose answer
    completes the next response."""

    def script(request: Request) -> Text | ToolCalls:
        results = tool_messages(request)
        if not results:
            return ToolCalls([ToolCall("get_weather", '{"city": "Oslo"}', id="call_weather1")])
        return Text(f"The weather in Oslo: {results[-1]}")

    upstream.script = script
    first = client.responses.create(model=MODEL, input="Weather in Oslo?", tools=[WEATHER_TOOL])
    assert first.status == "completed", first.error
    assert [item.type for item in first.output] == ["function_call"]
    (call,) = first.output
    assert call.type == "function_call"
    assert call.id is not None and call.id.startswith("fc_")
    assert (call.call_id, call.name, call.status) == ("call_weather1", "get_weather", "completed")
    assert json.loads(call.arguments) == {"city": "Oslo"}
    assert first.output_text == ""
    (sent_tool,) = upstream.requests[0]["tools"]
    assert sent_tool["function"]["name"] == "get_weather"
    assert sent_tool["function"]["parameters"] == WEATHER_TOOL["parameters"]

    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
        tools=[WEATHER_TOOL],
    )
    assert second.status == "completed", second.error
    assert [item.type for item in second.output] == ["message"]
    assert second.output_text == "The weather in Oslo: sunny, 21 C"
    messages = upstream.requests[1]["messages"]
    (assistant,) = [m for m in messages if m["role"] == "assistant"]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_weather1"]
    (tool,) = [m for m in messages if m["role"] == "tool"]
    assert (tool["tool_call_id"], tool["content"]) == ("call_weather1", "sunny, 21 C")

    # An output for a call the previous response never made is refused before the model sees
    # the conversation (it would refuse it whole).
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model=MODEL,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": "call_nobody", "output": "?"}],
            tools=[WEATHER_TOOL],
        )
    assert refused.value.param == "input"
    assert "call_nobody" in refused.value.message
    assert len(upstream.requests) == 2


def test_required_tool_choice_forces_only_the_first_model_turn(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """tool_choice="required" makes the model call a tool; once the tool's result is back, the
    model is free to answer (the reference's §4.1 example gets a final message this way)."""
    upstream.script = quote_tool_result("print(6 * 7)", "It is {}.")
    response = client.responses.create(
        model=MODEL, input="6 times 7?", tools=[AUTO], tool_choice="required"
    )
    assert response.status == "completed", response.error
    assert response.output_text == "It is 42."
    assert response.tool_choice == "required"
    first, second = upstream.requests
    assert first["tool_choice"] == "required"
    assert second.get("tool_choice", "auto") == "auto"


# --------------------------------------------------------------------------- failures


def test_upstream_failure_fails_the_response(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """An upstream error fails the response: status failed, error with a code and the
    upstream's message, no output; the stored response says the same."""
    upstream.script = [Fail(500, "the model is overloaded", should_retry=False)]
    response = client.responses.create(model=MODEL, input="Hi", tools=[AUTO])
    assert response.status == "failed"
    assert response.error is not None
    assert "the model is overloaded" in response.error.message
    assert isinstance(response.error.code, str) and response.error.code
    assert response.output == []
    stored = client.responses.retrieve(response.id)
    assert stored.status == "failed"
    assert stored.error is not None and stored.error.message == response.error.message


def test_upstream_failure_ends_the_stream_with_response_failed(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Streaming, an upstream error ends the stream with response.failed carrying the error."""
    upstream.script = [Fail(400, "context length exceeded", should_retry=False)]
    with client.responses.create(model=MODEL, input="Hi", tools=[AUTO], stream=True) as stream:
        events = list(stream)
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    failed = events[-1].response
    assert failed.status == "failed"
    assert failed.error is not None and "context length exceeded" in failed.error.message


def test_failure_mid_message_leaves_no_item_in_progress(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """An upstream that breaks off mid-answer fails the response; the finished tool call stays
    completed and the cut-off message is no longer in progress (OpenAI's word is incomplete)."""
    upstream.script = [
        python_call("print(1)"),
        Broken(Text("A long answer that breaks off here"), after_chunks=4, error="stream cut"),
    ]
    response = client.responses.create(model=MODEL, input="Hi", tools=[AUTO])
    assert response.status == "failed"
    assert response.error is not None and "stream cut" in response.error.message
    assert [item.type for item in response.output] == ["code_interpreter_call", "message"]
    stored = client.responses.retrieve(response.id)
    assert [item.status for item in stored.output] == ["completed", "incomplete"]


# --------------------------------------------------------------------------- stored responses


def test_retrieve_delete_and_input_items(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    """A stored response can be retrieved, its input items listed (newest first by default,
    each with an id), and deleted, after which all three are 404s."""
    upstream.script = [Text("Hi there.")]
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Say hi."}]},
        ],
    )
    assert response.status == "completed", response.error
    assert response.output_text == "Hi there."
    messages = upstream.requests[0]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("system", "Be brief."),
        ("user", "Say hi."),
    ]

    stored = client.responses.retrieve(response.id)
    assert (stored.id, stored.status, stored.model) == (response.id, "completed", MODEL)
    assert dump_output(stored) == dump_output(response)

    items = client.responses.input_items.list(response.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user"), ("message", "developer")]
    ids = [i.id for i in items.data]
    assert len(set(ids)) == 2 and all(ids)
    assert [[c.text for c in i.content] for i in items.data] == [["Say hi."], ["Be brief."]]
    assert items.has_more is False
    ascending = client.responses.input_items.list(response.id, order="asc")
    assert [i.id for i in ascending.data] == ids[::-1]
    first_page = client.responses.input_items.list(response.id, limit=1)
    assert [i.id for i in first_page.data] == ids[:1] and first_page.has_more is True
    rest = client.responses.input_items.list(response.id, limit=1, after=ids[0])
    assert [i.id for i in rest.data] == ids[1:]

    deleted = client.responses.with_raw_response.delete(response.id)
    assert deleted.status_code == 200
    for call in (
        lambda: client.responses.retrieve(response.id),
        lambda: client.responses.input_items.list(response.id),
        lambda: client.responses.delete(response.id),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert_sdk_error(caught.value, 404)


def test_unstored_response_cannot_be_retrieved_or_continued(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A response made with store=false is answered in full but kept nowhere: retrieving it or
    continuing from it is a 404."""
    upstream.script = [Text("Not kept.")]
    response = client.responses.create(model=MODEL, input="Hi", store=False)
    assert (response.status, response.store, response.output_text) == (
        "completed",
        False,
        "Not kept.",
    )
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(response.id)
    assert_sdk_error(caught.value, 404)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=MODEL, input="Again", previous_response_id=response.id)
    assert_sdk_error(caught.value, 404)
    assert len(upstream.requests) == 1


# --------------------------------------------------------------------------- bad requests


def test_bad_requests_get_the_error_envelope(
    server: ServerProcess, client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Each malformed or impossible request is refused with OpenAI's error envelope, a 400 or
    (for an id that does not exist) a 404, before the model is asked anything."""
    upstream.script = []
    with raw_client(server) as http:
        missing_model = http.post("/responses", json={"input": "hi"})
        assert_envelope(missing_model, 400, param="model")
        missing_input = http.post("/responses", json={"model": MODEL})
        assert_envelope(missing_input, 400, param="input")

    cases: list[tuple[int, dict[str, Any]]] = [
        (400, {"input": "hi", "tools": [{"type": "web_search"}]}),
        (400, {"input": "hi", "tools": [{"type": "code_interpreter"}]}),
        (400, {"input": "hi", "tools": [{"type": "function", "name": "python"}]}),
        (
            404,
            {
                "input": "hi",
                "tools": [{"type": "code_interpreter", "container": MISSING_CONTAINER}],
            },
        ),
        (404, {"input": "hi", "previous_response_id": MISSING_RESPONSE}),
        (400, {"input": "hi", "background": True}),
        (
            404,
            {
                "input": "hi",
                "tools": [
                    {
                        "type": "code_interpreter",
                        "container": {"type": "auto", "file_ids": [MISSING_FILE]},
                    }
                ],
            },
        ),
        (
            404,
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "Read this."},
                            {"type": "input_file", "file_id": MISSING_FILE},
                        ],
                    }
                ],
                "tools": [AUTO],
            },
        ),
    ]
    for status, body in cases:
        with pytest.raises(openai.APIStatusError) as caught:
            client.responses.create(model=MODEL, **body)
        error = assert_sdk_error(caught.value, status)
        if status == 404:  # the message names what is missing
            assert "0" * 24 in error["message"], error
    assert upstream.requests == []


def test_refused_request_leaves_no_container_behind(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A request refused for a missing input_file makes no container (and counts no session)."""
    upstream.script = []
    since = int(time.time()) - 1
    containers_before = container_count(client)
    sessions_before = sessions_since(client, since)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model=MODEL,
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_file", "file_id": MISSING_FILE}],
                }
            ],
            tools=[AUTO],
        )
    assert container_count(client) == containers_before
    assert sessions_since(client, since) == sessions_before


# --------------------------------------------------------------------------- usage


def test_sessions_are_counted_per_container_not_per_response(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """An auto container is one session in the usage report however many responses continue
    in it; a response that starts afresh makes a new container and session."""
    since = int(time.time()) - 1
    before = sessions_since(client, since)

    upstream.script = [python_call("y = 1"), Text("ok")]
    first = client.responses.create(model=MODEL, input="Set y.", tools=[AUTO])
    assert first.status == "completed", first.error
    assert sessions_since(client, since) == before + 1

    upstream.script = [python_call("print(y)"), Text("1")]
    second = client.responses.create(
        model=MODEL, input="Print y.", tools=[AUTO], previous_response_id=first.id
    )
    assert second.status == "completed", second.error
    assert upstream.last_tool_results()[-1] == "1"
    assert (
        items_of(second, "code_interpreter_call")[0].container_id
        == items_of(first, "code_interpreter_call")[0].container_id
    )
    assert sessions_since(client, since) == before + 1

    upstream.script = [python_call("print('fresh')"), Text("fresh")]
    third = client.responses.create(model=MODEL, input="Start over.", tools=[AUTO])
    assert third.status == "completed", third.error
    assert (
        items_of(third, "code_interpreter_call")[0].container_id
        != items_of(first, "code_interpreter_call")[0].container_id
    )
    assert sessions_since(client, since) == before + 2

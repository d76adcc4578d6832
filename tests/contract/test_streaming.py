"""Streamed runs through the official SDKs: event order, delta accumulation, failures, latency.

The reference is /work/shared/reference/openai-api.md §3: the SDK rebuilds steps and messages
from `*.created` plus deltas (§3.4), and a Code Interpreter run follows the order of §3.5.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta import AssistantStreamEvent
from openai.types.beta.threads import ImageFile, Message, Text, TextDelta
from openai.types.beta.threads.runs import ToolCall, ToolCallDelta
from typing_extensions import override

from tests.support.server import ServerProcess
from tests.support.upstream import Fail, Request, ScriptedUpstream, ToolCalls, python_call
from tests.support.upstream import Text as Say

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Quotes, a backslash escape, a tab and non-ASCII text: their JSON escapes get cut in half by
# the upstream's 4-character argument chunks, and the relayed input must still be exact.
CHART_CODE = r"""import matplotlib.pyplot as plt
values = [3, 1, 4, 1, 5, 9, 2, 6]
print("sum\tof \"digits\":", sum(values))
plt.plot(values, marker="o")
plt.title("Digits of pi - café")
"""
PRINTED = 'sum\tof "digits": 31\n'
ANSWER = (
    "The first eight digits of pi add up to 31; the chart above plots each of them in order, "
    "so you can see the spike at the nine."
)


def _assistant(client: openai.OpenAI) -> str:
    assistant = client.beta.assistants.create(
        name="Streamer",
        instructions="Use Python when it helps.",
        model="gpt-4o",
        tools=[{"type": "code_interpreter"}],
    )
    return assistant.id


def _thread(client: openai.OpenAI, question: str = "Sum the digits of pi and plot them.") -> str:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": question}])
    return thread.id


def _collapse(names: list[str]) -> list[str]:
    """Event names with each run of repeated delta events folded into one."""
    out: list[str] = []
    for name in names:
        if not (out and name == out[-1] and name.endswith(".delta")):
            out.append(name)
    return out


class Recorder(AssistantEventHandler):
    """Keeps what each callback of the stream helper saw."""

    def __init__(self) -> None:
        super().__init__()
        self.text_deltas: list[str] = []
        self.tool_calls_created: list[ToolCall] = []
        self.input_chunks: list[str] = []
        self.log_chunks: list[str] = []
        self.image_outputs: list[str] = []
        self.tool_calls_done: list[ToolCall] = []
        self.messages_done: list[Message] = []
        self.image_files_done: list[ImageFile] = []
        self.ends = 0

    @override
    def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
        if delta.value:
            self.text_deltas.append(delta.value)

    @override
    def on_tool_call_created(self, tool_call: ToolCall) -> None:
        self.tool_calls_created.append(tool_call)

    @override
    def on_tool_call_delta(self, delta: ToolCallDelta, snapshot: ToolCall) -> None:
        if delta.type != "code_interpreter" or delta.code_interpreter is None:
            return
        if delta.code_interpreter.input:
            self.input_chunks.append(delta.code_interpreter.input)
        for output in delta.code_interpreter.outputs or []:
            if output.type == "logs" and output.logs:
                self.log_chunks.append(output.logs)
            elif output.type == "image" and output.image and output.image.file_id:
                self.image_outputs.append(output.image.file_id)

    @override
    def on_tool_call_done(self, tool_call: ToolCall) -> None:
        self.tool_calls_done.append(tool_call)

    @override
    def on_message_done(self, message: Message) -> None:
        self.messages_done.append(message)

    @override
    def on_image_file_done(self, image_file: ImageFile) -> None:
        self.image_files_done.append(image_file)

    @override
    def on_end(self) -> None:
        self.ends += 1


def test_stream_helper_rebuilds_code_text_and_image(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """`runs.stream` with an event handler sees the code, logs, chart and text arrive in pieces
    that add up to the final step, message and run."""
    upstream.script = [python_call(CHART_CODE), Say(ANSWER)]
    assistant_id = _assistant(client)
    thread_id = _thread(client)
    handler = Recorder()

    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=handler
    ) as stream:
        run = stream.get_final_run()
        steps = stream.get_final_run_steps()
        messages = stream.get_final_messages()

    assert run.status == "completed", run.last_error
    assert handler.ends == 1

    # The text came in several pieces that add up to the final message.
    assert len(handler.text_deltas) >= 5, handler.text_deltas
    assert "".join(handler.text_deltas) == ANSWER
    assert len(handler.messages_done) == 1
    done: Any = handler.messages_done[0]
    assert done.status == "completed" and done.role == "assistant"
    assert [c.type for c in done.content] == ["image_file", "text"]
    assert done.content[1].text.value == ANSWER

    # One code interpreter call, its input streamed in chunks that rebuild the code exactly.
    assert [c.type for c in handler.tool_calls_created] == ["code_interpreter"]
    assert handler.tool_calls_created[0].id
    assert len(handler.input_chunks) > 1, handler.input_chunks
    assert "".join(handler.input_chunks) == CHART_CODE
    final_call: Any = handler.tool_calls_done[-1]
    assert final_call.type == "code_interpreter"
    assert final_call.id == handler.tool_calls_created[0].id
    assert final_call.code_interpreter.input == CHART_CODE
    assert PRINTED in "".join(handler.log_chunks)

    # The chart is an image output, a real PNG, and the message's image part.
    assert len(handler.image_outputs) == 1, handler.image_outputs
    image_id = handler.image_outputs[0]
    assert client.files.content(image_id).read()[:8] == PNG_MAGIC
    assert [f.file_id for f in handler.image_files_done] == [image_id]
    assert done.content[0].image_file.file_id == image_id

    # The step snapshots the SDK built from created + deltas hold everything.
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    tool_step: Any = steps[0]
    message_step: Any = steps[1]
    assert tool_step.step_details.type == "tool_calls"
    (call,) = tool_step.step_details.tool_calls
    assert call.type == "code_interpreter"
    assert call.id == final_call.id
    assert call.code_interpreter.input == CHART_CODE
    logs = [o.logs for o in call.code_interpreter.outputs if o.type == "logs"]
    images = [o.image.file_id for o in call.code_interpreter.outputs if o.type == "image"]
    assert len(logs) == 1 and PRINTED in logs[0]
    assert images == [image_id]
    assert message_step.step_details.type == "message_creation"
    assert message_step.step_details.message_creation.message_id == done.id

    # The messages helper has the assistant message with the image and the text.
    assert [m.id for m in messages] == [done.id]
    message: Any = messages[0]
    assert message.role == "assistant" and message.run_id == run.id
    assert message.content[0].type == "image_file"
    assert message.content[0].image_file.file_id == image_id
    assert message.content[1].type == "text" and message.content[1].text.value == ANSWER

    # What the server stored agrees with what it streamed.
    stored = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread_id, order="asc")
    assert [(s.type, s.status) for s in stored.data] == [
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]
    stored_call: Any = stored.data[0].step_details.tool_calls[0]
    assert stored_call.code_interpreter.input == CHART_CODE
    assert [o.type for o in stored_call.code_interpreter.outputs] == ["logs", "image"]


EMOJI_CODE = 'print("party \U0001f389 time")\n'


def test_streamed_input_keeps_characters_outside_the_bmp(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Code with an emoji (a JSON surrogate pair in the arguments) is rebuilt exactly by the SDK."""
    upstream.script = [python_call(EMOJI_CODE), Say("Printed it.")]
    assistant_id = _assistant(client)
    thread_id = _thread(client, "Print a party emoji.")
    handler = Recorder()

    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=handler
    ) as stream:
        run = stream.get_final_run()
        steps = stream.get_final_run_steps()

    assert run.status == "completed", run.last_error
    assert "party \U0001f389 time\n" in "".join(handler.log_chunks)  # the sandbox ran it right
    for chunk in handler.input_chunks:  # every relayed piece is well-formed Unicode
        chunk.encode("utf-8")
    details: Any = steps[0].step_details
    (call,) = details.tool_calls
    assert call.code_interpreter.input == EMOJI_CODE


EXPECTED_ORDER = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.run.step.delta",
    "thread.run.step.completed",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
    "thread.message.delta",
    "thread.message.completed",
    "thread.run.step.completed",
    "thread.run.completed",
]


def test_raw_stream_follows_the_reference_event_order(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """`runs.create(stream=True)` yields a code interpreter run's events in the §3.5 order, each
    delta after its object's `created`, and ends with a completed run carrying usage."""
    upstream.script = [
        ToolCalls(python_call(CHART_CODE).calls, usage=(100, 20)),
        Say(ANSWER, usage=(150, 30)),
    ]
    assistant_id = _assistant(client)
    thread_id = _thread(client)

    events: list[AssistantStreamEvent] = []
    with client.beta.threads.runs.create(
        thread_id=thread_id, assistant_id=assistant_id, stream=True
    ) as stream:
        for event in stream:  # the SDK stops at [DONE]; a hang here is a failure (timeout)
            events.append(event)

    names = [e.event for e in events]
    assert _collapse(names) == EXPECTED_ORDER, names
    assert names.count("thread.run.step.delta") > 3  # header, input chunks, outputs
    assert names.count("thread.message.delta") > 3

    created_steps: dict[str, str] = {}
    created_messages: set[str] = set()
    run_id = events[0].data.id
    for event in events:
        data: Any = event.data
        if event.event.startswith("thread.run.step.") and event.event != "thread.run.step.delta":
            assert data.run_id == run_id
        if event.event == "thread.run.step.created":
            created_steps[data.id] = data.type
        elif event.event == "thread.run.step.delta":
            assert data.id in created_steps, f"a delta for step {data.id} before its created"
        elif event.event == "thread.message.created":
            assert data.status == "in_progress" and data.content == []
            assert data.role == "assistant" and data.run_id == run_id
            created_messages.add(data.id)
        elif event.event == "thread.message.delta":
            assert data.id in created_messages, f"a delta for message {data.id} before created"
    assert list(created_steps.values()) == ["tool_calls", "message_creation"]

    first: Any = events[0].data
    assert first.status == "queued" and first.thread_id == thread_id
    tool_step: Any = events[3].data
    assert tool_step.step_details.tool_calls == []
    header: Any = events[5].data.delta.step_details.tool_calls[0]
    assert header.index == 0 and header.type == "code_interpreter" and header.id
    assert header.code_interpreter.input == "" and header.code_interpreter.outputs == []
    message_step: Any = next(
        e.data
        for e in events
        if e.event == "thread.run.step.created" and e.data.type != "tool_calls"
    )
    (message_id,) = created_messages
    assert message_step.step_details.message_creation.message_id == message_id

    completed: Any = events[-1].data
    assert completed.id == run_id and completed.status == "completed"
    assert completed.completed_at is not None
    assert completed.usage is not None
    assert completed.usage.total_tokens > 0
    assert (completed.usage.prompt_tokens, completed.usage.completion_tokens) == (250, 50)
    assert completed.usage.total_tokens == 300


def test_raw_sse_framing_ends_with_done(
    server: ServerProcess, client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """On the wire a streamed run is `event:`/`data:` frames of bare JSON ending in `[DONE]`."""
    upstream.script = [Say("Short and sweet.")]
    assistant_id = _assistant(client)
    thread_id = _thread(client, "Say something short.")

    request = urllib.request.Request(
        f"{server.base_url}/threads/{thread_id}/runs",
        data=json.dumps({"assistant_id": assistant_id, "stream": True}).encode(),
        headers={
            "Authorization": "Bearer local",
            "OpenAI-Beta": "assistants=v2",
            "Content-Type": "application/json",
            "Accept": "application/json",  # as the SDK sends it: SSE is chosen from the body
        },
        method="POST",
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for 127.0.0.1
    with direct.open(request, timeout=60) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = response.read().decode()
    frames = [f for f in text.split("\n\n") if f and not f.startswith(":")]
    assert frames[-1] == "event: done\ndata: [DONE]", frames[-3:]
    for frame in frames[:-1]:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: thread.")
        payload = json.loads(data_line.removeprefix("data: "))
        assert "object" in payload and "data" not in payload  # the bare object, no wrapper
    assert frames[-2].startswith("event: thread.run.completed\n")


def test_create_and_run_stream_starts_with_thread_created(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """`threads.create_and_run(stream=True)` opens with `thread.created` for the new thread."""
    upstream.script = [Say("Hello from a brand new thread.")]
    assistant_id = _assistant(client)

    with client.beta.threads.create_and_run(
        assistant_id=assistant_id,
        thread={"messages": [{"role": "user", "content": "Greet me."}]},
        stream=True,
    ) as stream:
        events = list(stream)

    names = [e.event for e in events]
    assert names[0] == "thread.created", names
    thread: Any = events[0].data
    assert thread.object == "thread" and thread.id.startswith("thread_")
    assert names[1] == "thread.run.created", names
    run: Any = events[1].data
    assert run.thread_id == thread.id
    assert names[-1] == "thread.run.completed", names
    assert client.beta.threads.retrieve(thread.id).id == thread.id
    assert any(
        m.get("role") == "user" and "Greet me." in json.dumps(m)
        for m in upstream.requests[0]["messages"]
    )


def test_upstream_failure_ends_stream_with_run_failed(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """An upstream 500 ends the stream with `thread.run.failed` naming it, and the run stays
    failed."""
    upstream.script = [Fail(500, "boom", should_retry=False)]
    assistant_id = _assistant(client)
    thread_id = _thread(client)

    with client.beta.threads.runs.create(
        thread_id=thread_id, assistant_id=assistant_id, stream=True
    ) as stream:
        events = list(stream)

    names = [e.event for e in events]
    assert names == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.failed",
    ], names
    failed: Any = events[-1].data
    assert failed.status == "failed" and failed.failed_at is not None
    assert failed.last_error is not None
    assert failed.last_error.code == "server_error"
    assert "boom" in failed.last_error.message and "500" in failed.last_error.message
    assert len(upstream.requests) == 1  # x-should-retry: false, so no retries

    retrieved = client.beta.threads.runs.retrieve(run_id=failed.id, thread_id=thread_id)
    assert retrieved.status == "failed"
    assert retrieved.last_error is not None
    assert retrieved.last_error.message == failed.last_error.message


@pytest.fixture
def slow_upstream(upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    """The module's upstream pausing 50 ms between streamed chunks, for one test."""
    before = upstream.chunk_delay
    upstream.chunk_delay = 0.05
    try:
        yield upstream
    finally:
        upstream.chunk_delay = before


def test_text_is_relayed_as_it_arrives(
    client: openai.OpenAI, slow_upstream: ScriptedUpstream
) -> None:
    """With a slow upstream the first text delta reaches the client long before the run ends."""
    slow_upstream.script = [Say(ANSWER)]  # ~32 text chunks at 50 ms: about 1.7 s in all
    assistant_id = _assistant(client)
    thread_id = _thread(client, "Tell me slowly.")

    stamps: list[tuple[float, str]] = []
    start = time.monotonic()
    with client.beta.threads.runs.create(
        thread_id=thread_id, assistant_id=assistant_id, stream=True
    ) as stream:
        for event in stream:
            stamps.append((time.monotonic() - start, event.event))

    deltas = [t for t, name in stamps if name == "thread.message.delta"]
    (completed,) = [t for t, name in stamps if name == "thread.run.completed"]
    assert len(deltas) > 10
    # ~30 chunks of 50 ms each were still to come when the first text reached the client.
    assert completed - deltas[0] >= 1.0, stamps
    # ...and the deltas kept flowing: a good share of them came in the first half.
    assert sum(t < completed / 2 for t in deltas) >= 5, stamps


# --------------------------------------------------------------------------- TypeScript

TS_DIR = Path(__file__).parent / "ts"
SALES = "month,revenue\n2026-01,1000\n2026-02,1100\n2026-03,1320\n2026-04,1188\n"
TS_CODE = """
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('/mnt/data/sales.csv')
growth = df['revenue'].pct_change().dropna() * 100
print(f"mean growth: {growth.mean():.4f}")
plt.plot(df['month'], df['revenue'].pct_change() * 100, marker='o')
"""


def _npm_install() -> None:
    """Install the pinned `openai` package into ts/node_modules once (a no-op when present)."""
    wanted = json.loads((TS_DIR / "package.json").read_text())["dependencies"]["openai"]
    installed = TS_DIR / "node_modules" / "openai" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == wanted:
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed; the TypeScript snippet needs it")
    command = "ci" if (TS_DIR / "package-lock.json").exists() else "install"
    result = subprocess.run(
        [npm, command, "--no-audit", "--no-fund"],
        cwd=TS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"npm {command} failed:\n{result.stdout}\n{result.stderr}"


def test_typescript_snippet(
    server: ServerProcess, client: openai.OpenAI, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """The README snippet written with the `openai` npm package runs against the server."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the TypeScript snippet needs Node.js")
    _npm_install()

    def analyst(request: Request) -> Say | ToolCalls:
        tools = [m for m in request["messages"] if m.get("role") == "tool"]
        if not tools:
            return python_call(TS_CODE)
        found = re.search(r"mean growth: (-?\d+\.\d+)", tools[-1]["content"])
        return Say(f"Average growth: {found.group(1) if found else 'unknown'}%")

    upstream.script = analyst
    sales = tmp_path / "sales.csv"
    sales.write_text(SALES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="local")
    result = subprocess.run(
        [node, "snippet.mjs", str(sales)],
        cwd=TS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{result.stderr}\n--- server log ---\n{server.logs()[-3000:]}"
    summary = json.loads(result.stdout)

    assert summary["sdk_version"].split(".")[0] in ("4", "5")
    assert summary["run"]["status"] == "completed", summary["run"]
    assert summary["run"]["total_tokens"] > 0
    assert summary["file"]["filename"] == "sales.csv"
    assert summary["file"]["bytes"] == len(SALES)
    assert summary["file"]["purpose"] == "assistants"
    assert summary["roles"] == ["assistant", "user"]  # newest first
    assert summary["texts"] == ["Average growth: 6.6667%"]
    assert len(summary["images"]) == 1
    image = summary["images"][0]
    assert image["png"] is True and image["size"] > 1000
    assert client.files.content(image["file_id"]).read()[:8] == PNG_MAGIC
    assert "/mnt/data/sales.csv" in upstream.requests[0]["messages"][0]["content"]

"""Traces (telemetry/tracing.py) as exact span trees: the server runs in this process, on the
tests' event loop, so the OpenTelemetry SDK's in-memory exporter sees every span it makes; the
client is the official `openai` SDK over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from codeinterp.api.app import create_app
from codeinterp.config import Settings
from codeinterp.telemetry import tracing
from tests.support.upstream import ScriptedUpstream, Text, python_call

pytestmark = pytest.mark.root

MODEL = "gpt-4o"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once: OpenTelemetry allows one) and its exporter."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as scripted:
        yield scripted


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The server, in this process; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(create_app(settings), lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        await task
        sock.close()


def settings_for(upstream: ScriptedUpstream, data_dir: Path, **extra: Any) -> Settings:
    return Settings(
        data_dir=str(data_dir),
        upstream_base_url=upstream.base_url,
        upstream_api_key="sk-upstream-test",
        pool_size=1,
        poll_after_ms=20,
        **extra,
    )


@pytest.fixture(scope="module")
async def base_url(
    upstream: ScriptedUpstream,
    spans: InMemorySpanExporter,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    async with serving(settings_for(upstream, tmp_path_factory.mktemp("traced"))) as url:
        yield url


@pytest.fixture
async def client(
    base_url: str, upstream: ScriptedUpstream, spans: InMemorySpanExporter
) -> AsyncIterator[Any]:
    upstream.reset()
    spans.clear()
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


def named(spans: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name.startswith(prefix)]


def children(spans: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    parent_id = parent.context.span_id
    return sorted(
        (s for s in spans.get_finished_spans() if s.parent and s.parent.span_id == parent_id),
        key=lambda s: s.start_time or 0,
    )


async def test_a_run_that_fails_then_fixes_its_code_is_one_trace(
    client: Any, upstream: ScriptedUpstream, spans: InMemorySpanExporter
) -> None:
    """invoke_agent over three model turns and two executions: the first with its code and
    NameError, the second with the fixed output; tokens, cost and ids on the spans."""
    upstream.script = [
        python_call("values = [3, 4]\nprint(sum(valeus))", id="call_bad"),
        python_call("print(sum(values))", id="call_good"),
        Text("The sum is 7."),
    ]
    assistant = await client.beta.assistants.create(
        model=MODEL, tools=[{"type": "code_interpreter"}]
    )
    thread = await client.beta.threads.create(
        messages=[{"role": "user", "content": "Sum 3 and 4."}]
    )
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "completed", run.last_error

    (root,) = named(spans, "invoke_agent")
    attributes = dict(root.attributes or {})
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["codeinterp.run.id"] == run.id
    assert attributes["gen_ai.agent.id"] == assistant.id
    assert attributes["gen_ai.conversation.id"] == thread.id
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["codeinterp.prompt"] == "Sum 3 and 4."
    assert attributes["gen_ai.usage.input_tokens"] == run.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == run.usage.completion_tokens

    kids = children(spans, root)
    assert [s.name for s in kids] == [
        f"chat {MODEL}",
        "execute_tool python",
        f"chat {MODEL}",
        "execute_tool python",
        f"chat {MODEL}",
    ]
    assert all(s.context.trace_id == root.context.trace_id for s in kids)
    failed, fixed = (dict(s.attributes or {}) for s in kids if s.name.startswith("execute_tool"))
    assert failed["gen_ai.tool.call.id"] == "call_bad"
    assert failed["gen_ai.tool.call.arguments"] == "values = [3, 4]\nprint(sum(valeus))"
    assert failed["codeinterp.execution.status"] == "error"
    assert failed["codeinterp.execution.error.name"] == "NameError"
    assert "valeus" in failed["codeinterp.execution.error.value"]
    assert failed["error.type"] == "NameError"
    assert fixed["gen_ai.tool.call.id"] == "call_good"
    assert fixed["codeinterp.execution.status"] == "ok"
    assert fixed["codeinterp.execution.stdout"] == "7\n"
    assert fixed["codeinterp.execution.count"] == 2
    assert fixed["codeinterp.session.cost_usd"] == pytest.approx(0.03)
    assert fixed["codeinterp.session.id"].startswith("sess")
    assert fixed["codeinterp.session.memory_peak_bytes"] > 0
    last_turn = dict(kids[-1].attributes or {})
    assert last_turn["codeinterp.output.text"] == "The sum is 7."
    assert last_turn["gen_ai.response.finish_reasons"] == ("stop",)


async def test_a_response_and_a_chat_completion_are_traces_too(
    client: Any, upstream: ScriptedUpstream, spans: InMemorySpanExporter
) -> None:
    upstream.script = [python_call("print(6 * 7)"), Text("42")]
    response = await client.responses.create(
        model=MODEL,
        input="6*7?",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    )
    assert response.status == "completed", response.error
    upstream.reset([python_call("print(2 ** 10)"), Text("1024")])
    await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "2**10?"}],
        tools=[{"type": "code_interpreter"}],
    )
    roots = named(spans, "invoke_agent")
    doors = {dict(r.attributes or {})["codeinterp.door"]: r for r in roots}
    assert set(doors) == {"responses", "chat_completions"}
    assert dict(doors["responses"].attributes or {})["codeinterp.response.id"] == response.id
    for root in roots:
        kinds = [s.name.split(" ")[0] for s in children(spans, root)]
        assert kinds == ["chat", "execute_tool", "chat"]


async def test_a_container_execute_is_its_own_trace_inside_the_callers(
    client: Any, spans: InMemorySpanExporter
) -> None:
    """The execute door's execution is an execute_tool span; with a W3C traceparent it is a
    child of the caller's span, in the caller's trace."""
    box = await client.containers.create(name="traced")
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await client.post(
        f"/containers/{box.id}/execute",
        cast_to=object,
        body={"code": "print('hi')"},
        options={"headers": {"traceparent": f"00-{trace_id}-{parent_id}-01"}},
    )
    (execution,) = named(spans, "execute_tool")
    assert format(execution.context.trace_id, "032x") == trace_id
    assert execution.parent is not None and format(execution.parent.span_id, "016x") == parent_id
    attributes = dict(execution.attributes or {})
    assert attributes["codeinterp.container.id"] == box.id
    assert attributes["codeinterp.execution.stdout"] == "hi\n"


async def test_content_capture_can_be_turned_off(
    upstream: ScriptedUpstream, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """With trace_content off, spans keep statuses, sizes and ids but no code, output or
    prompt."""
    settings = settings_for(upstream, tmp_path, trace_content=False)
    try:
        async with serving(settings) as url:
            spans.clear()
            async with openai.AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0) as sdk:
                box = await sdk.containers.create(name="private")
                await sdk.post(
                    f"/containers/{box.id}/execute",
                    cast_to=object,
                    body={"code": "print('secret')"},
                )
    finally:
        tracing.content.capture = True  # the module's other server captures
    (execution,) = named(spans, "execute_tool")
    attributes = dict(execution.attributes or {})
    assert attributes["codeinterp.execution.status"] == "ok"
    assert "gen_ai.tool.call.arguments" not in attributes
    assert "codeinterp.execution.stdout" not in attributes
    assert not any("secret" in str(v) for v in attributes.values())

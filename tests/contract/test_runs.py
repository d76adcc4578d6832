"""Runs through the openai SDK: the python tool's results, errors, files, cancel, function tools,
sessions per thread and their usage records."""

from __future__ import annotations

import json
import re
import statistics
import time
from typing import Any

import openai

from tests.support.upstream import (
    Request,
    ScriptedUpstream,
    Text,
    ToolCall,
    ToolCalls,
    python_call,
)

NUMBERS = [2.5, 4.0, 4.0, 4.5, 5.0, 5.0, 7.0, 9.25]


def tool_messages(request: Request) -> list[str]:
    return [str(m["content"]) for m in request["messages"] if m.get("role") == "tool"]


def make_assistant(client: openai.OpenAI, **extra: Any) -> Any:
    return client.beta.assistants.create(
        model="gpt-4o", tools=[{"type": "code_interpreter"}], **extra
    )


def run_in_new_thread(client: openai.OpenAI, content: str, assistant_id: str) -> tuple[Any, Any]:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": content}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id)
    return thread, run


def assistant_texts(client: openai.OpenAI, thread_id: str) -> list[str]:
    texts = []
    for message in client.beta.threads.messages.list(thread_id=thread_id, order="asc"):
        if message.role == "assistant":
            texts.extend(c.text.value for c in message.content if c.type == "text")
    return texts


def test_standard_deviation_comes_from_the_sandbox(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """The model's answer carries the standard deviation the sandbox printed."""

    def script(request: Request) -> Text | ToolCalls:
        results = tool_messages(request)
        if not results:
            return python_call(f"import statistics\nprint(statistics.stdev({NUMBERS}))")
        return Text(f"The standard deviation is {results[-1].strip()}.")

    upstream.script = script
    assistant = make_assistant(client)
    thread, run = run_in_new_thread(client, f"Standard deviation of {NUMBERS}?", assistant.id)
    assert run.status == "completed", run.last_error
    assert assistant_texts(client, thread.id) == [
        f"The standard deviation is {statistics.stdev(NUMBERS)}."
    ]


def test_failing_code_goes_back_to_the_model_which_fixes_it(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A traceback is returned to the model; its corrected code runs in the same session."""
    upstream.script = [
        python_call("values = [1, 2, 3]\ntotal = sum(values) / len(valeus)"),
        python_call("total = sum(values) / len(values)\nprint(total)"),
        Text("The mean is 2.0."),
    ]
    assistant = make_assistant(client)
    thread, run = run_in_new_thread(client, "Mean of 1, 2, 3?", assistant.id)
    assert run.status == "completed", run.last_error
    first_result = upstream.tool_results(1)[0]
    assert "NameError" in first_result and "valeus" in first_result
    assert upstream.tool_results(2)[-1].strip() == "2.0"
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc")
    tool_steps = [s for s in steps if s.type == "tool_calls"]
    assert len(tool_steps) == 2
    failed_call = tool_steps[0].step_details.tool_calls[0]
    assert failed_call.type == "code_interpreter"
    assert "len(valeus)" in failed_call.code_interpreter.input
    assert "NameError" in failed_call.code_interpreter.outputs[0].logs
    fixed_call = tool_steps[1].step_details.tool_calls[0]
    assert fixed_call.code_interpreter.outputs[0].logs == "2.0\n"


def test_cited_sandbox_file_becomes_a_file_path_annotation(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A file the model links as sandbox:/mnt/data/NAME is a new File with the sandbox's bytes,
    annotated at the exact position of the link."""
    upstream.script = [
        python_call("open('/mnt/data/report.csv', 'w').write('a,b\\n1,2\\n')"),
        Text("Here it is: [report](sandbox:/mnt/data/report.csv)."),
    ]
    assistant = make_assistant(client)
    thread, run = run_in_new_thread(client, "Make a CSV.", assistant.id)
    assert run.status == "completed", run.last_error
    (message,) = [
        m for m in client.beta.threads.messages.list(thread_id=thread.id) if m.role == "assistant"
    ]
    (text,) = [c.text for c in message.content if c.type == "text"]
    (annotation,) = text.annotations
    assert annotation.type == "file_path"
    assert annotation.text == "sandbox:/mnt/data/report.csv"
    assert text.value[annotation.start_index : annotation.end_index] == annotation.text
    file = client.files.retrieve(annotation.file_path.file_id)
    assert (file.purpose, file.filename, file.bytes) == ("assistants_output", "report.csv", 8)
    assert client.files.content(file.id).read() == b"a,b\n1,2\n"


def test_cancel_stops_running_code_and_the_session_survives(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Cancelling a run while its code sleeps ends it as cancelled within seconds; the thread's
    session keeps its state for the next run."""
    upstream.script = [
        python_call("kept = 'still here'"),
        python_call("import time\ntime.sleep(60)"),
    ]
    assistant = make_assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Wait a minute."}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    upstream.wait_for_requests(2)
    time.sleep(0.5)  # the second call is now sleeping in the sandbox
    started = time.monotonic()
    cancelling = client.beta.threads.runs.cancel(run_id=run.id, thread_id=thread.id)
    assert cancelling.status in ("cancelling", "cancelled")
    final = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=50)
    assert final.status == "cancelled"
    assert final.cancelled_at is not None
    assert time.monotonic() - started < 5
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc")
    assert [s.status for s in steps][-1] == "cancelled"

    upstream.script = [python_call("print(kept)"), Text("ok")]
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Still there?")
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert again.status == "completed", again.last_error
    assert upstream.last_tool_results() == ["still here"]


def test_sessions_are_reused_per_thread_and_separate_across_threads(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Two runs in one thread share variables; another thread cannot see them; each thread is
    one session in the usage report."""
    since = int(time.time()) - 1

    def sessions_so_far() -> int:
        usage = client.get(
            "/organization/usage/code_interpreter_sessions",
            cast_to=object,
            options={"params": {"start_time": since, "bucket_width": "1d"}},
        )
        assert isinstance(usage, dict) and usage["object"] == "page"
        return sum(r["num_sessions"] for b in usage["data"] for r in b["results"])

    before = sessions_so_far()
    assistant = make_assistant(client)
    upstream.script = [python_call("secret = 41"), Text("set")]
    thread_a, run = run_in_new_thread(client, "Set it.", assistant.id)
    assert run.status == "completed"
    upstream.script = [python_call("print(secret + 1)"), Text("read")]
    client.beta.threads.messages.create(thread_id=thread_a.id, role="user", content="Read it.")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_a.id, assistant_id=assistant.id)
    assert run.status == "completed"
    assert upstream.last_tool_results()[-1] == "42"  # after the first run's, replayed

    upstream.script = [python_call("print(secret)"), Text("no")]
    _, run = run_in_new_thread(client, "Read it elsewhere.", assistant.id)
    assert run.status == "completed"
    assert "NameError" in upstream.last_tool_results()[0]

    assert sessions_so_far() == before + 2


def test_function_tools_go_through_requires_action(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A call to the assistant's own function stops the run in requires_action; the submitted
    output reaches the model and the run completes."""

    def script(request: Request) -> Text | ToolCalls:
        results = tool_messages(request)
        if not results:
            return ToolCalls([ToolCall("get_weather", json.dumps({"city": "Oslo"}))])
        return Text(f"The weather: {results[-1]}")

    upstream.script = script
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"
    assert run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Oslo"},
    )
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "sunny, 21 C"}],
    )
    assert run.status == "completed", run.last_error
    assert assistant_texts(client, thread.id) == ["The weather: sunny, 21 C"]


def test_upstream_failure_fails_the_run_with_last_error(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """An upstream that answers 400 fails the run, and last_error says why."""
    from tests.support.upstream import Fail

    upstream.script = [Fail(400, "context length exceeded", should_retry=False)]
    assistant = make_assistant(client)
    _, run = run_in_new_thread(client, "Hi", assistant.id)
    assert run.status == "failed"
    assert run.last_error is not None
    assert "context length exceeded" in run.last_error.message
    assert run.failed_at is not None


def test_model_map_is_not_needed_for_plain_names(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Without a model map the client's model name goes upstream unchanged."""
    upstream.script = [Text("hi")]
    assistant = client.beta.assistants.create(model="llama-3.1-8b-instruct")
    _, run = run_in_new_thread(client, "Hi", assistant.id)
    assert run.status == "completed"
    assert upstream.last_request["model"] == "llama-3.1-8b-instruct"
    assert re.fullmatch(r"run_[0-9a-f]{24}", run.id)
    assert run.expires_at is None  # terminal runs no longer expire
    assert run.created_at <= run.started_at <= run.completed_at  # type: ignore[operator]


POLL_HELPER = {"X-Stainless-Poll-Helper": "true"}


def test_the_sdk_poll_helper_gets_the_run_when_it_settles(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A retrieve marked as the SDK's poll helper is held until the run completes (a long
    poll); a plain retrieve answers at once with the run still in flight."""
    from tests.support.upstream import Delay

    upstream.script = [Delay(0.6, then=Text("slow answer"))]
    assistant = make_assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    started = time.monotonic()
    plain = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert plain.status in ("queued", "in_progress")
    assert time.monotonic() - started < 0.4

    held = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id, extra_headers=POLL_HELPER)
    assert held.status == "completed"
    assert held.completed_at is not None
    assert assistant_texts(client, thread.id) == ["slow answer"]


def test_a_held_poll_answers_within_its_bound(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """The hold is bounded (CODEINTERP_POLL_HOLD_MS, 1 s by default): a run that takes longer
    is answered in flight, with the poll-after hint, and polled again."""
    from tests.support.upstream import Delay

    upstream.script = [Delay(10, then=Text("too slow"))]
    assistant = make_assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    try:
        started = time.monotonic()
        response = client.beta.threads.runs.with_raw_response.retrieve(
            run.id, thread_id=thread.id, extra_headers=POLL_HELPER
        )
        waited = time.monotonic() - started
        assert response.parse().status == "in_progress"
        assert 0.9 <= waited < 3.0
        assert int(response.headers["openai-poll-after-ms"]) > 0
    finally:
        cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
        assert cancelled.status in ("cancelling", "cancelled")
        final = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
        assert final.status == "cancelled"

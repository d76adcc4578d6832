"""The trace store's span processor (telemetry/recorder.py) on a real SDK tracer provider: which
spans it keeps, how it groups them under their root, late spans, its bound, and the summary the
store lists (services/traces.py)."""

from __future__ import annotations

import asyncio

from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from codeinterp.services.traces import summarize
from codeinterp.telemetry import tracing
from codeinterp.telemetry.recorder import TraceRecorder

OURS = {"codeinterp.project": "proj_a"}


def tracer_with(recorder: TraceRecorder) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    return provider.get_tracer("test")


def test_a_root_of_ours_is_handed_over_whole_when_it_ends() -> None:
    recorder = TraceRecorder()
    tracer = tracer_with(recorder)
    with tracer.start_as_current_span("invoke_agent codeinterp", attributes=OURS):
        with tracer.start_as_current_span("chat m"):
            pass
        assert recorder.take().traces == []  # not before its root ends
        with (
            tracer.start_as_current_span("execute_tool python"),
            tracer.start_as_current_span("inner"),
        ):
            pass
    (group,) = recorder.take().traces
    assert [s["name"] for s in group] == [
        "invoke_agent codeinterp", "chat m", "inner", "execute_tool python",
    ]  # fmt: skip
    root = group[0]
    assert root["parent_span_id"] is None and root["attributes"] == OURS
    assert {s["trace_id"] for s in group} == {root["trace_id"]}
    assert recorder.take().traces == []  # handed over once


def test_spans_not_ours_are_not_kept_but_ours_under_them_are() -> None:
    recorder = TraceRecorder()
    tracer = tracer_with(recorder)
    with tracer.start_as_current_span("GET /health"):
        pass
    with (
        tracer.start_as_current_span("POST /v1/threads/runs"),  # an HTTP server's span
        tracer.start_as_current_span("invoke_agent codeinterp", attributes=OURS),
        tracer.start_as_current_span("chat m"),
    ):
        pass
    (group,) = recorder.take().traces
    assert [s["name"] for s in group] == ["invoke_agent codeinterp", "chat m"]
    assert group[0]["parent_span_id"] is not None  # kept under the caller's span, as it was


def test_a_callers_traceparent_starts_a_trace_of_ours() -> None:
    recorder = TraceRecorder()
    tracer = tracer_with(recorder)
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        with tracer.start_as_current_span("execute_tool python", attributes=OURS):
            pass
    finally:
        context.detach(token)
    (group,) = recorder.take().traces
    assert group[0]["trace_id"] == format(0xABC, "032x")
    assert group[0]["parent_span_id"] == format(0xDEF, "016x")


def test_a_span_that_ends_after_its_root_comes_out_late() -> None:
    recorder = TraceRecorder()
    tracer = tracer_with(recorder)
    root = tracer.start_span("invoke_agent codeinterp", attributes=OURS)
    child = tracer.start_span("execute_tool python", context=trace.set_span_in_context(root))
    root.end()
    child.end()
    taken = recorder.take()
    assert [[s["name"] for s in g] for g in taken.traces] == [["invoke_agent codeinterp"]]
    root_id = format(root.get_span_context().span_id, "016x")
    assert [s["name"] for s in taken.late[root_id]] == ["execute_tool python"]


def test_roots_that_never_end_do_not_grow_it_without_bound() -> None:
    recorder = TraceRecorder(max_open_spans=100)
    tracer = tracer_with(recorder)
    for _ in range(1000):
        tracer.start_span("leaked", attributes=OURS)  # never ended
    assert len(recorder._root_of) <= 100


def test_the_ended_children_of_a_root_that_never_ends_count_too() -> None:
    recorder = TraceRecorder(max_open_spans=100)
    tracer = tracer_with(recorder)
    for _ in range(20):
        root = tracer.start_span("leaked", attributes=OURS)  # never ended
        for _ in range(50):
            tracer.start_span("child", context=trace.set_span_in_context(root)).end()
    held = len(recorder._root_of) + sum(len(g) for g in recorder._open.values())
    assert 0 < held <= 100


def test_a_closed_recorder_keeps_nothing() -> None:
    recorder = TraceRecorder()
    tracer = tracer_with(recorder)
    recorder.shutdown()
    with tracer.start_as_current_span("invoke_agent codeinterp", attributes=OURS):
        pass
    assert recorder.take().traces == []
    assert recorder._root_of == {} and recorder._open == {}  # nothing held either


def test_the_summary_of_a_run() -> None:
    recorder = TraceRecorder()
    tracer = tracer_with(recorder)
    run = {
        **OURS,
        "codeinterp.door": "assistants",
        "codeinterp.run.id": "run_1",
        "gen_ai.agent.id": "asst_1",
        "gen_ai.conversation.id": "thread_1",
        "gen_ai.request.model": "m",
    }
    with tracer.start_as_current_span("invoke_agent codeinterp", attributes=run) as root:
        with tracer.start_as_current_span("execute_tool python") as failed:
            failed.set_attribute("codeinterp.session.cost_usd", 0.03)
            failed.set_status(trace.Status(trace.StatusCode.ERROR, "NameError"))
        root.set_attributes({"gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3})
    (group,) = recorder.take().traces
    summary = summarize(group)
    assert summary is not None
    assert (summary.kind, summary.item_id, summary.thread_id, summary.assistant_id) == (
        "run", "run_1", "thread_1", "asst_1",
    )  # fmt: skip
    assert (summary.status, summary.error_count, summary.cost_usd) == ("ok", 1, 0.03)
    assert (summary.input_tokens, summary.output_tokens, summary.model) == (12, 3, "m")
    assert summary.project == "proj_a" and summary.id == group[0]["span_id"]


def test_the_summary_of_a_container_execute() -> None:
    recorder = TraceRecorder()
    tracer = tracer_with(recorder)
    attributes = {**OURS, "codeinterp.container.id": "cntr_1", "error.type": "timeout"}
    with tracer.start_as_current_span("execute_tool python", attributes=attributes) as span:
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    summary = summarize(recorder.take().traces[0])
    assert summary is not None
    assert (summary.kind, summary.item_id, summary.container_id) == ("execute", "cntr_1", "cntr_1")
    assert (summary.status, summary.error_type, summary.input_tokens) == ("error", "timeout", None)


def test_a_child_that_starts_after_its_root_ended_is_still_its_roots() -> None:
    """An execution's span is made a loop turn after it ends (tracing.LeafSpan), when a run's
    root may have ended already."""
    recorder = TraceRecorder()
    tracer = tracer_with(recorder)
    root = tracer.start_span("invoke_agent codeinterp", attributes=OURS)
    parent = trace.set_span_in_context(root)
    root.end()
    late = tracer.start_span("execute_tool python", context=parent, attributes=OURS)
    late.end()
    taken = recorder.take()
    assert [[s["name"] for s in g] for g in taken.traces] == [["invoke_agent codeinterp"]]
    root_id = format(root.get_span_context().span_id, "016x")
    assert [s["name"] for s in taken.late[root_id]] == ["execute_tool python"]


async def test_a_leaf_span_is_recorded_a_loop_turn_after_it_ends() -> None:
    recorder = TraceRecorder()
    leaf = tracing.LeafSpan(
        "execute_tool python", {**OURS, "gen_ai.tool.name": "python"}, tracer_with(recorder)
    )
    leaf.add(lambda: {"codeinterp.execution.stdout": "hi\n", "codeinterp.execution.stderr": ""})
    leaf.fail("NameError", "name 'x' is not defined")
    leaf.end()
    assert recorder.take().traces == []  # not yet: the caller's answer goes first
    await asyncio.sleep(0)
    (group,) = recorder.take().traces
    (span,) = group
    assert span["attributes"]["codeinterp.execution.stdout"] == "hi\n"
    assert "codeinterp.execution.stderr" not in span["attributes"]  # empty: left out
    assert span["attributes"]["error.type"] == "NameError" and span["status"] == "error"
    assert span["end_ns"] >= span["start_ns"] > 0

"""One execution in a managed session, the same for every door: the session is marked busy while
the code runs (so the idle reaper leaves it alone) and touched when it ends, images the code
displays are decoded once and handed to the caller's `save_image`, and the events come out in one
shape: ``(name, data)`` with name ``stdout``, ``stderr``, ``result``, ``error`` or ``end``.

What an image becomes is the door's business (a container file, or a Files API file for an
Assistants run): `save_image(name_hint, data)` stores it and returns ``{"file_id", "path"}`` or
None, and the `result` event then carries those two fields.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from codeinterp.egress import Lease
from codeinterp.sandbox import End, Error, Execution, FileChange, Result, Stderr, Stdout
from codeinterp.telemetry import logs, metrics, tracing

from .manager import ManagedSession

# Files and images an execution's span names, at most (the rest are counted): a program can
# write a thousand files with long names, and the span is kept for days.
SPAN_FILES = 100
IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif"}

# (event name, payload): stdout, stderr, result, error, end
ExecutionEvent = tuple[str, dict[str, Any]]
SaveImage = Callable[[str, bytes], Awaitable[dict[str, str] | None]]
# The `end` event's `files`: the code's own changes, as the door reports them.
ReportChanges = Callable[[list[FileChange]], list[dict[str, Any]]]


def image_of(result: Result) -> tuple[str, bytes] | None:
    """The image a rich result shows, as (file extension, bytes); None if it shows none."""
    for mime, extension in IMAGE_TYPES.items():
        value = result.data.get(mime)
        if isinstance(value, str):
            try:
                return extension, base64.b64decode(value, validate=True)
            except ValueError:
                return None
    return None


async def execute(
    managed: ManagedSession,
    code: str,
    timeout: float | None,
    save_image: SaveImage,
    report_changes: ReportChanges | None = None,
    *,
    call_id: str | None = None,
    stdin: str | None = None,
) -> AsyncGenerator[ExecutionEvent, None]:
    """Run `code` in the session; yield its events as they happen. Leaving the iteration early
    (a client that went away) interrupts the code. The execution is an `execute_tool` span
    (`call_id`: the model's tool call, if a model asked for it). `stdin`: the code's standard
    input."""
    managed.busy += 1
    managed.changed()  # what the code does is saved with the session (persistence.py)
    execution = Execution()
    results: list[dict[str, Any]] = []
    span = tracing.LeafSpan("execute_tool python", _span_start(managed, code, call_id))
    try:
        async for event in managed.session.execute(code, timeout, stdin=stdin):
            execution.add(event)
            if isinstance(event, Stdout):
                yield "stdout", {"text": event.text}
            elif isinstance(event, Stderr):
                yield "stderr", {"text": event.text}
            elif isinstance(event, Result):
                result = event.to_dict()
                image = image_of(event)
                saved = await save_image(*image) if image is not None else None
                if saved is not None:
                    result.update(saved)
                results.append(result)
                yield "result", result
            elif isinstance(event, Error):
                yield "error", event.to_dict()
            elif isinstance(event, End):
                body = _end_body(execution, results, event, report_changes)
                await _add_network_attempts(managed, body)
                _span_end(span, managed, execution, body)
                _count(managed, execution)
                yield "end", body
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit | asyncio.CancelledError):  # stopped, not failed
            span.fail(type(exc).__name__, str(exc))
        raise
    finally:
        managed.busy -= 1
        managed.touch()
        span.end()


def _count(managed: ManagedSession, execution: Execution) -> None:
    """The execution in /metrics and in the log (its span is `_span_end`)."""
    metrics.EXECUTIONS.labels(execution.status).inc()
    metrics.EXECUTION_SECONDS.observe(execution.duration_ms / 1000)
    logs.event(
        logs.executions,
        "execution",
        status=execution.status,
        duration_ms=round(execution.duration_ms, 1),
        execution_count=execution.execution_count,
        error=execution.error.name if execution.error else None,
        session_id=managed.id,
        **{f"{managed.owner_kind}_id": managed.owner_id},
    )


def _span_start(managed: ManagedSession, code: str, call_id: str | None) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "python",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.call.arguments": tracing.content.clip(code),
        "gen_ai.conversation.id": managed.owner_id,
        "codeinterp.project": managed.project,
        "codeinterp.session.id": managed.id,
        f"codeinterp.{managed.owner_kind}.id": managed.owner_id,
        "codeinterp.session.cost_usd": managed.cost_usd,
    }


def _span_end(
    span: tracing.LeafSpan, managed: ManagedSession, execution: Execution, body: dict[str, Any]
) -> None:
    """What the span holds of the finished execution. Only the memory peak is read now (the
    session may be gone later); the rest is put together when the span is recorded."""
    if not span.recording:
        return
    group = managed.session.cgroup
    peak = group.peak_memory() if group else None
    files, results = list(body["files"]), list(body["results"])
    network = list(body.get("network", ()))
    error = execution.error

    def attributes() -> dict[str, Any]:
        clip = tracing.content.clip
        images = [r for r in results if r.get("file_id")]
        return {
            "codeinterp.execution.status": execution.status,
            "codeinterp.execution.count": execution.execution_count,
            "codeinterp.execution.duration_ms": round(execution.duration_ms, 3),
            "codeinterp.execution.stdout": clip(execution.stdout),
            "codeinterp.execution.stderr": clip(execution.stderr),
            "codeinterp.execution.error.name": tracing.short(error.name, tracing.MAX_NAME_CHARS)
            if error
            else None,
            "codeinterp.execution.error.value": clip(error.value) if error else None,
            "codeinterp.execution.error.traceback": clip(error.traceback) if error else None,
            "codeinterp.execution.files": _json_or_none(
                [
                    {k: f.get(k) for k in ("path", "change", "size", "id") if k in f}
                    for f in files[:SPAN_FILES]
                ]
            ),
            "codeinterp.execution.files_omitted": max(0, len(files) - SPAN_FILES) or None,
            "codeinterp.execution.result": clip(_result_text(results)),
            "codeinterp.execution.images": len(images),
            "codeinterp.execution.image_files": _json_or_none(
                [{"file_id": r["file_id"], "path": r.get("path")} for r in images[:SPAN_FILES]]
            ),
            "codeinterp.session.memory_peak_bytes": peak,
            "codeinterp.execution.network": _json_or_none(network[:SPAN_FILES]),
            "codeinterp.execution.network_omitted": max(0, len(network) - SPAN_FILES)
            + body.get("network_omitted", 0)
            or None,
        }

    span.add(attributes)
    if execution.status != "ok":
        span.fail(error.name if error else execution.status, execution.message)


async def _add_network_attempts(managed: ManagedSession, body: dict[str, Any]) -> None:
    """A session with a network policy: what its code tried to reach (allowed or refused), as
    the egress proxy saw it, in `network` (`network_omitted`: attempts past the lease's cap)."""
    lease = managed.session.network
    if isinstance(lease, Lease):
        attempts, omitted = await lease.attempts()
        body["network"] = attempts
        if omitted:
            body["network_omitted"] = omitted


def _json_or_none(items: list[dict[str, Any]]) -> str | None:
    return tracing.as_json(items) if items else None


def _result_text(results: list[dict[str, Any]]) -> str:
    """What the results show as text (a last expression's value, a table's plain form)."""
    shown = [r["data"]["text/plain"] for r in results if "text/plain" in r.get("data", {})]
    return "\n".join(str(text) for text in shown)


def _end_body(
    execution: Execution,
    results: list[dict[str, Any]],
    end: End,
    report_changes: ReportChanges | None,
) -> dict[str, Any]:
    body = execution.to_dict()
    body["results"] = results
    # The images saved for the results are named there; `files` is what the code itself changed
    # (whether a saved image shows up in the sandbox's own account depends on timing, so it never
    # does).
    image_paths = {r["path"] for r in results if "path" in r}
    changes = [c for c in end.files if c.path not in image_paths]
    body["files"] = report_changes(changes) if report_changes else [c.to_dict() for c in changes]
    return body


async def run(
    managed: ManagedSession,
    code: str,
    timeout: float | None,
    save_image: SaveImage,
    report_changes: ReportChanges | None = None,
    *,
    call_id: str | None = None,
    stdin: str | None = None,
) -> dict[str, Any]:
    """`execute` gathered: the `end` event's body."""
    # Run the events to their natural end (just after `end`): the session's lock and `busy` are
    # released now, and leaving early would interrupt the session for nothing. aclosing still
    # covers a failure part way.
    result: dict[str, Any] | None = None
    events = execute(
        managed, code, timeout, save_image, report_changes, call_id=call_id, stdin=stdin
    )
    async with contextlib.aclosing(events):
        async for name, data in events:
            if name == "end":
                result = data
    if result is None:
        raise AssertionError("an execution always ends with an `end` event")
    return result

"""One execution in a managed session, the same for every door: the session is marked busy while
the code runs (so the idle reaper leaves it alone) and touched when it ends, images the code
displays are decoded once and handed to the caller's `save_image`, and the events come out in one
shape: ``(name, data)`` with name ``stdout``, ``stderr``, ``result``, ``error`` or ``end``.

What an image becomes is the door's business (a container file, or a Files API file for an
Assistants run): `save_image(name_hint, data)` stores it and returns ``{"file_id", "path"}`` or
None, and the `result` event then carries those two fields.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from codeinterp.sandbox import End, Error, Execution, FileChange, Result, Stderr, Stdout

from .manager import ManagedSession

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
) -> AsyncGenerator[ExecutionEvent, None]:
    """Run `code` in the session; yield its events as they happen. Leaving the iteration early
    (a client that went away) interrupts the code."""
    managed.busy += 1
    execution = Execution()
    results: list[dict[str, Any]] = []
    try:
        async for event in managed.session.execute(code, timeout):
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
                yield "end", _end_body(execution, results, event, report_changes)
    finally:
        managed.busy -= 1
        managed.touch()


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
) -> dict[str, Any]:
    """`execute` gathered: the `end` event's body."""
    # Run the events to their natural end (just after `end`): the session's lock and `busy` are
    # released now, and leaving early would interrupt the session for nothing. aclosing still
    # covers a failure part way.
    result: dict[str, Any] | None = None
    events = execute(managed, code, timeout, save_image, report_changes)
    async with contextlib.aclosing(events):
        async for name, data in events:
            if name == "end":
                result = data
    if result is None:
        raise AssertionError("an execution always ends with an `end` event")
    return result

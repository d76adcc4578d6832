"""One-shot tasks: code (plus files and standard input) run in a fresh session of its own, which
is closed as soon as the result is in. The door for evaluation and RL pipelines, where every
snippet is untrusted and must not see another's files, variables or processes.

    async with await Sandbox.start() as sandbox:
        async for index, result in sandbox.map(["1+1", "print(2)"], concurrency=4):
            print(index, result.status)  # or the exception of a task that could not run

A task's session is an ordinary session (same jail, same limits), taken from the warm pool when
the task uses the sandbox's default policy. Results come back as tasks finish, not in order.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from codeinterp.errors import InvalidRequest, NotFound, QuotaExceeded

from .preload import PRELOAD
from .session import Session
from .workspace import clean_relative_path

T = TypeVar("T")
R = TypeVar("R")
OutputMatch = Literal["exact", "lines"]
MAX_STDIN_BYTES = 8 * 1024 * 1024  # a request frame to the kernel holds code and stdin together
DEFAULT_MAX_RETURNED_BYTES = 16 * 1024 * 1024  # files returned with one result, all together


@dataclass(frozen=True)
class Task:
    """What one task runs, and what it gives back besides the execution."""

    code: str
    files: Mapping[str, bytes] = field(default_factory=dict)  # written into /mnt/data first
    stdin: str | None = None  # the code's standard input (default: end of file at once)
    timeout: float | None = 60.0
    expected_output: str | None = None  # compared with stdout: `TaskResult.passed`
    output_match: OutputMatch = "lines"
    return_files: bool = False  # the bytes of the files the code created or changed

    def check(self) -> None:
        """InvalidRequest if the task cannot run as given (before any session is made)."""
        if self.stdin is not None and len(self.stdin.encode()) > MAX_STDIN_BYTES:
            raise InvalidRequest(f"stdin is over {MAX_STDIN_BYTES} bytes")
        if self.output_match not in ("exact", "lines"):
            raise InvalidRequest("output_match must be 'exact' or 'lines'")
        for name in self.files:
            clean_relative_path(name)


@dataclass
class TaskResult:
    """A finished task: its execution object (status, stdout, stderr, results, error, files, ...
    as `Execution.to_dict()` gives it), whether its output passed, and the files it asked for."""

    execution: dict[str, Any]
    passed: bool | None = None  # stdout matched expected_output (None: nothing was expected)
    # name under /mnt/data -> bytes, for return_files; None where the budget left a file out
    files: dict[str, bytes | None] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.execution["status"])

    @property
    def stdout(self) -> str:
        return str(self.execution["stdout"])

    def to_dict(self) -> dict[str, Any]:
        """The execution object, plus `passed`, and each changed file's `content` (base64) when
        the task asked for the files."""
        body = dict(self.execution)
        body["passed"] = self.passed
        if self.files:
            body["files"] = [dict(entry) for entry in body["files"]]
            for entry in body["files"]:
                if entry["name"] in self.files:
                    content = self.files[entry["name"]]
                    entry["content"] = (
                        None if content is None else base64.b64encode(content).decode()
                    )
        return body


# `import numpy as np`, `from pandas import X`, `import os, scipy.stats`: any statement that names
# a top-level package of the zygote's library set.
_PRELOADED_IMPORT = re.compile(
    r"\b(?:import|from)\s+(?:[\w.]+\s*(?:as\s+\w+\s*)?,\s*)*("
    + "|".join(sorted({re.escape(name.split(".")[0]) for name in PRELOAD}))
    + r")\b"
)


def uses_preloaded_libraries(code: str) -> bool:
    """Whether `code` looks like it imports the library set the full zygote preloads: such a
    task forks from that zygote (importing pandas afresh takes ~0.5 s), any other from the
    light one (its fork costs a fraction). Only a choice of the faster start: a wrong guess
    gives the same result, later."""
    return _PRELOADED_IMPORT.search(code) is not None


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def output_matches(actual: str, expected: str, how: OutputMatch = "lines") -> bool:
    """Whether a program printed what was expected. "exact": byte for byte. "lines": as judges
    of programming exercises compare, line by line with trailing spaces ignored, and with no
    regard for blank lines at the end or Windows line endings."""
    if how == "exact":
        return actual == expected

    def lines(text: str) -> list[str]:
        found = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while found and not found[-1]:
            found.pop()
        return found

    return lines(actual) == lines(expected)


async def run_in(
    session: Session,
    task: Task,
    execute: Callable[[Session, Task], Awaitable[dict[str, Any]]] | None = None,
    max_returned_bytes: int = DEFAULT_MAX_RETURNED_BYTES,
) -> TaskResult:
    """Run `task` in a fresh `session` (which the caller closes). `execute` runs the code and
    returns the execution object (default: `session.run(...).to_dict()`); a server passes its
    own, which adds its spans and metrics."""
    for name, data in task.files.items():
        await session.upload(name, data)
    if execute is None:
        body = (await session.run(task.code, task.timeout, stdin=task.stdin)).to_dict()
    else:
        body = await execute(session, task)
    result = TaskResult(body)
    if task.expected_output is not None:
        result.passed = body["status"] == "ok" and output_matches(
            body["stdout"], task.expected_output, task.output_match
        )
    if task.return_files:
        changed = [f["name"] for f in body["files"] if f["change"] != "deleted"]
        result.files = await _read_files(session, changed, max_returned_bytes)
    return result


async def _read_files(session: Session, names: list[str], budget: int) -> dict[str, bytes | None]:
    """The named files of /mnt/data, in order, while they fit in `budget` bytes together; one
    that does not fit (or vanished meanwhile) maps to None."""
    files: dict[str, bytes | None] = {}
    for name in names:
        files[name] = None
        try:
            data = await session.download(name, max_bytes=budget)
        except (QuotaExceeded, NotFound, InvalidRequest):  # too big, gone, not a regular file
            continue
        files[name] = data
        budget -= len(data)
    return files


async def as_completed(
    items: Iterable[T], concurrency: int, work: Callable[[T], Awaitable[R]]
) -> AsyncIterator[tuple[int, R | Exception]]:
    """`work(item)` for every item, at most `concurrency` at once; yields (index, result) as
    each finishes, or (index, exception) for one that failed (the others go on). Items are
    taken from `items` only as workers free up. Leaving the iteration early cancels the work
    still running."""
    if concurrency < 1:
        raise InvalidRequest("concurrency must be at least 1")
    pending = iter(enumerate(items))
    done: asyncio.Queue[tuple[int, R | Exception] | None] = asyncio.Queue()

    async def worker() -> None:
        try:
            for index, item in pending:  # one shared iterator: each item is taken once
                try:
                    outcome: R | Exception = await work(item)
                except Exception as exc:
                    outcome = exc
                await done.put((index, outcome))
        finally:
            done.put_nowait(None)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        running = len(workers)
        while running:
            finished = await done.get()
            if finished is None:
                running -= 1
            else:
                yield finished
    finally:
        for worker_task in workers:
            worker_task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

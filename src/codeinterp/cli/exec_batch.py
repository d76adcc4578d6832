"""`codeinterp exec --batch FILE`: many one-shot tasks, each in a fresh session of its own.

FILE (or `-` for standard input) holds one task per line, as JSON in the form of the
`POST /v1/executions` body: {"code", "files"?: {name: base64}, "stdin"?, "timeout"?,
"expected_output"?, "output_match"?, "return_files"?, "memory_limit"?}. Every line is checked
before anything runs; a bad one stops the command with its line number (exit 2). Results are
printed as JSON lines as tasks finish, each with its `index`, or
`{"index", "error"}` for a task that could not run (`index`: its place among the file's
tasks, from 0). A summary goes to standard error. Exit
status: 0 when every task ended `ok` and none failed its expected output, 1 otherwise.

Locally the tasks run in this machine's sandbox; with --server, in one streamed batch on that
server (`file_ids` work there only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

import httpx2
from pydantic import ValidationError

from codeinterp.client import APIError, Client
from codeinterp.config import Settings
from codeinterp.errors import InvalidRequest
from codeinterp.protocol.executions import TaskRequest
from codeinterp.sandbox import Sandbox, SandboxConfig
from codeinterp.sandbox.oneshot import as_completed
from codeinterp.services.executions import task_of


def default_concurrency() -> int:
    return 2 * (os.cpu_count() or 1)


def read_tasks(path: str) -> list[TaskRequest]:
    """Every task of the file, checked; InvalidRequest naming the first bad line."""
    try:
        source: IO[str] = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from None
    tasks: list[TaskRequest] = []
    with source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                tasks.append(TaskRequest.model_validate_json(line))
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(p) for p in problem.get("loc", ())) or "the line"
                raise InvalidRequest(
                    f"{path}:{number}: {where}: {problem.get('msg', 'invalid')}"
                ) from None
    if not tasks:
        raise InvalidRequest(f"{path} holds no tasks")
    return tasks


class Tally:
    """Prints each result as a JSON line and counts the outcomes for the summary."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.tasks = 0

    def emit(self, result: dict[str, Any]) -> None:
        self.tasks += 1
        if "status" not in result:
            self.counts["could not run"] += 1
        else:
            self.counts[result["status"]] += 1
            if result.get("passed") is False:
                self.counts["failed the expected output"] += 1
        print(json.dumps(result, separators=(",", ":")), flush=True)

    @property
    def all_good(self) -> bool:
        return self.counts["ok"] == self.tasks and not self.counts["failed the expected output"]

    def summary(self) -> str:
        return f"{self.tasks} tasks: " + ", ".join(f"{n} {what}" for what, n in self.counts.items())


def run_batch(args: argparse.Namespace) -> int:
    if args.concurrency is not None and args.concurrency < 1:
        raise InvalidRequest("--concurrency must be at least 1")
    requests = read_tasks(args.batch)
    if args.env is not None:  # the default of the lines that name no environment
        requests = [r if r.environment else r.model_copy(update={"environment": args.env})
                    for r in requests]  # fmt: skip
    tally = Tally()
    if args.server:
        for result in _remote(args, requests):
            tally.emit(result)
    else:
        if any(r.file_ids for r in requests):
            raise InvalidRequest("file_ids name files on a server: use --server, or inline files")
        asyncio.run(_local(args, requests, tally))
    print(tally.summary(), file=sys.stderr)
    return 0 if tally.all_good else 1


async def _local(args: argparse.Namespace, requests: list[TaskRequest], tally: Tally) -> None:
    data_dir = Settings().data_dir  # where environments are
    # bad files or environments: refused before any run
    prepared = [task_of(r, args.timeout, data_dir=data_dir) for r in requests]
    concurrency = args.concurrency or default_concurrency()
    config = SandboxConfig(pool_size=min(concurrency, 16), unsafe_no_sandbox=args.unsafe_no_sandbox)
    async with await Sandbox.start(config) as sandbox:
        work = as_completed(prepared, concurrency, lambda tp: sandbox.run_task(*tp))
        async for index, outcome in work:
            if isinstance(outcome, Exception):
                tally.emit({"index": index, "error": _error(outcome)})
            else:
                tally.emit({"index": index, **outcome.to_dict()})


def _error(exc: Exception) -> dict[str, Any]:
    return {"message": str(exc) or type(exc).__name__, "type": type(exc).__name__}


def _remote(args: argparse.Namespace, requests: list[TaskRequest]) -> Iterator[dict[str, Any]]:
    tasks = [r.model_dump(exclude_unset=True) for r in requests]
    try:
        with Client(args.server, api_key=args.api_key) as client:
            yield from client.map(tasks, args.concurrency)
    except APIError as exc:
        raise InvalidRequest(f"the server refused: {exc.message}") from None
    except httpx2.TransportError as exc:
        raise InvalidRequest(f"cannot reach {args.server}: {exc}") from None

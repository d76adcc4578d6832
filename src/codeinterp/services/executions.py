"""The throughput door: one-shot tasks, each run in a fresh session of its own that is closed as
soon as its result is in (evaluation and RL pipelines, untrusted snippets by the thousand).

Every task takes one of the server's task slots (`task_concurrency`) from the moment its session
is asked for until that session is closed; a caller waits for a slot in arrival order for at
most `queue_wait_seconds`, then gets a 503 with Retry-After. The result is answered before the
session is torn down (the slot is held until it is). Executions go through the same
`sessions.execution` as every other door: the same span (the trace viewer lists them), metrics
and log line. Images stay inline in the results (there is no container to keep them in).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from codeinterp.background import BackgroundTasks
from codeinterp.config import Settings
from codeinterp.errors import InvalidRequest
from codeinterp.ids import new_id
from codeinterp.protocol.executions import TaskBatchRequest, TaskRequest
from codeinterp.sandbox import Sandbox, SandboxPolicy, Session, Task, environments
from codeinterp.sandbox.oneshot import TaskResult, as_completed, run_in
from codeinterp.sandbox.workspace import clean_relative_path
from codeinterp.sessions import ManagedSession, execution
from codeinterp.sessions.admission import Admission
from codeinterp.store import Store

CLOSE_WAIT_SECONDS = 10.0  # at shutdown, for the sessions still being torn down


async def _keep_inline(extension: str, data: bytes) -> None:
    """Images stay in the result's MIME bundle: a one-shot task has nowhere to keep files."""
    return None


class ExecutionsService:
    def __init__(self, sandbox: Sandbox, store: Store, settings: Settings) -> None:
        self.sandbox = sandbox
        self.store = store
        self.settings = settings
        self.admission = Admission(
            settings.task_concurrency, settings.queue_wait_seconds, "one-shot executions"
        )
        self._closing = BackgroundTasks()

    async def run(self, project: str, request: TaskRequest) -> dict[str, Any]:
        """One task, start to finish: the execution object."""
        task, policy = await self._prepare(project, request)
        return await self._run(project, task, policy, wait=None)

    async def batch(
        self, project: str, body: TaskBatchRequest
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every task of the batch, at most `concurrency` at once (and never more than the
        server's slots); yields each result as it finishes, with its `index` in the batch, or
        `{"index", "error"}` for a task that could not run. Tasks of a batch wait for slots as
        long as it takes: the stream itself says the batch is alive."""
        concurrency = min(body.concurrency or self.admission.limit, self.admission.limit)

        async def one(request: TaskRequest) -> dict[str, Any]:
            task, policy = await self._prepare(project, request)
            return await self._run(project, task, policy, wait=math.inf)

        async for index, outcome in as_completed(body.tasks, concurrency, one):
            if isinstance(outcome, Exception):
                yield {"index": index, "error": outcome}
            else:
                yield {"index": index, **outcome}

    def drain(self, reason: str) -> None:
        """The server is stopping: tasks waiting for a slot, and later ones, get `reason`."""
        self.admission.close(reason)

    async def stop(self) -> None:
        """Wait (bounded) for the sessions still being torn down."""
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=CLOSE_WAIT_SECONDS)

    # -- internals ------------------------------------------------------------------------------

    async def _prepare(self, project: str, request: TaskRequest) -> tuple[Task, SandboxPolicy]:
        """The engine's task from the wire form, with the uploaded files it names."""
        uploaded = [
            ((await self.store.get_file(project, file_id)).filename,
             await self.store.read_file(project, file_id))
            for file_id in dict.fromkeys(request.file_ids)
        ]  # fmt: skip
        return task_of(request, self.settings.execution_timeout, uploaded, self.settings.data_dir)

    async def _run(
        self, project: str, task: Task, policy: SandboxPolicy, wait: float | None
    ) -> dict[str, Any]:
        execution_id = new_id("execution")
        created_at = int(time.time())
        await self.admission.acquire(wait)
        handed_off = False
        try:
            session = await self.sandbox.create_task_session(task.code, policy)
            try:
                result = await run_in(
                    session,
                    task,
                    self._executor(project, execution_id),
                    self.settings.max_output_bytes,
                )
            except BaseException:
                await session.close()
                raise
            self._close_later(session)
            handed_off = True
        finally:
            if not handed_off:
                self.admission.release()
        return _execution_object(execution_id, created_at, result)

    def _executor(
        self, project: str, execution_id: str
    ) -> Callable[[Session, Task], Awaitable[dict[str, Any]]]:
        async def execute(session: Session, task: Task) -> dict[str, Any]:
            managed = ManagedSession(new_id("session"), project, "execution", execution_id, session)
            return await execution.run(
                managed, task.code, task.timeout, _keep_inline, stdin=task.stdin
            )

        return execute

    def _close_later(self, session: Session) -> None:
        """Tear the session down after the answer; its slot is free once it is gone."""

        async def close() -> None:
            try:
                with contextlib.suppress(Exception):
                    await session.close()
            finally:
                self.admission.release()

        self._closing.start(close())


def task_of(
    request: TaskRequest,
    default_timeout: float,
    uploaded: list[tuple[str, bytes]] | None = None,
    data_dir: str | None = None,
) -> tuple[Task, SandboxPolicy]:
    """The engine's task and policy from a task's wire form (an HTTP body, a line of a batch
    file): its base64 files decoded and checked, plus the `uploaded` (name, bytes) files; two
    files of one name are refused. An environment it names is looked up in `data_dir`."""
    files: dict[str, bytes] = {}
    for name, content in request.files.items():
        clean_relative_path(name)
        try:
            files[name] = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                f"files[{name!r}] is not valid base64", param=f"files.{name}"
            ) from None
    for name, data in uploaded or ():
        if name in files:
            raise InvalidRequest(
                f"two files would be /mnt/data/{name}: rename one", param="file_ids"
            )
        files[name] = data
    task = Task(
        code=request.code,
        files=files,
        stdin=request.stdin,
        timeout=request.timeout or default_timeout,
        expected_output=request.expected_output,
        output_match=request.output_match,
        return_files=request.return_files,
    )
    task.check()
    policy = SandboxPolicy.for_memory_tier(request.memory_limit or "1g")
    if request.environment is not None:
        if data_dir is None:
            raise InvalidRequest("environments are not available here", param="environment")
        environment = environments.for_session(data_dir, request.environment)
        policy = policy.with_packages(environment.site_packages)
    return task, policy


def _execution_object(execution_id: str, created_at: int, result: TaskResult) -> dict[str, Any]:
    return {"id": execution_id, "object": "execution", "created_at": created_at, **result.to_dict()}

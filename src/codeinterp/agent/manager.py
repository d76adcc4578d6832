"""Runs in flight: one task each, with cancel and submit_tool_outputs reaching into them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from codeinterp.errors import InvalidRequest
from codeinterp.protocol.assistants import Assistant
from codeinterp.protocol.runs import Run, ToolOutput
from codeinterp.protocol.threads import Thread

from .bus import END, Event
from .runner import AgentDeps, RunExecutor

# Statuses a run leaves on its own; every other status is news to a poller.
PASSING_STATUSES = frozenset({"created", "queued", "in_progress"})


def _settles(event: Event) -> bool:
    """Whether a run event ends a poller's wait: the stream's end, or a new run status."""
    name = event[0]
    if event == END:
        return True
    status = name.removeprefix("thread.run.")
    return name.startswith("thread.run.") and "." not in status and status not in PASSING_STATUSES


class RunManager:
    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps
        self._active: dict[str, tuple[asyncio.Task[None], RunExecutor]] = {}

    def start(
        self,
        project: str,
        run: Run,
        assistant: Assistant | None = None,
        thread: Thread | None = None,
    ) -> None:
        executor = RunExecutor(self.deps, project, run, assistant, thread)
        task = asyncio.create_task(executor.execute(), name=f"run {run.id}")
        self._active[run.id] = (task, executor)
        task.add_done_callback(lambda _: self._active.pop(run.id, None))

    def executor(self, run_id: str) -> RunExecutor | None:
        entry = self._active.get(run_id)
        return entry[1] if entry else None

    async def wait_until_settled(self, run_id: str, timeout: float) -> None:
        """Return once the run leaves queued/in_progress, or after `timeout` seconds."""
        executor = self.executor(run_id)
        if executor is None or executor.run.status not in PASSING_STATUSES:
            return
        queue = self.deps.bus.subscribe(run_id)
        try:
            async with asyncio.timeout(timeout):
                while not _settles(await queue.get()):
                    pass
        except TimeoutError:
            return
        finally:
            self.deps.bus.unsubscribe(run_id, queue)

    async def cancel(self, run_id: str) -> Run | None:
        """Ask a live run to stop; None if the run is not in flight here."""
        entry = self._active.get(run_id)
        if entry is None:
            return None
        task, executor = entry
        if executor.run.status not in ("cancelling",):
            executor.run.status = "cancelling"
            await executor.save_run("thread.run.cancelling", persist=False)
        snapshot = executor.run.model_copy(deep=True)
        task.cancel()
        return snapshot

    def prepare_tool_outputs(self, run_id: str, outputs: list[ToolOutput]) -> Callable[[], None]:
        """Check the outputs against the run's required action; returns the delivery."""
        executor = self.executor(run_id)
        future = executor.tool_outputs if executor else None
        if executor is None or future is None or future.done():
            raise InvalidRequest(f"Run {run_id} is not waiting for tool outputs.")
        required = executor.run.required_action
        expected = {c.id for c in required.submit_tool_outputs.tool_calls} if required else set()
        given = [o.tool_call_id for o in outputs]
        if set(given) != expected or len(given) != len(expected):
            raise InvalidRequest(
                "Expected tool outputs for call_ids "
                + ", ".join(sorted(expected))
                + f", got {', '.join(given) or 'none'}.",
                param="tool_outputs",
            )

        def deliver() -> None:
            if not future.done():
                future.set_result(outputs)

        return deliver

    async def shutdown(self) -> None:
        tasks = []
        for task, executor in self._active.values():
            executor.shutting_down = True
            task.cancel()
            tasks.append(task)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

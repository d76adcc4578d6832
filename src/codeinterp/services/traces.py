"""The trace store's writer and reader: finished traces go from the recorder (telemetry) to the
database every `FLUSH_SECONDS`, in one transaction, summarized for the trace viewer's list; traces
older than the retention are deleted. Reads are scoped to the caller's project."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from codeinterp.store import Store, TraceFilter, TraceRecord
from codeinterp.telemetry.recorder import TraceRecorder, duration_ms

log = logging.getLogger("codeinterp.traces")

FLUSH_SECONDS = 0.5
RETENTION_SWEEP_SECONDS = 3600.0
# What a root span traced, by the door that made it (codeinterp.door); an execute has none.
KINDS = {"assistants": "run", "responses": "response", "chat_completions": "chat"}
# How each kind is named to people (the trace viewer)
KIND_NAMES = {
    "run": "Assistants run", "response": "Response", "chat": "Chat completion",
    "execute": "Execution",
}  # fmt: skip
# A trace's status: "error" (it failed), "cancelled" (stopped: a cancelled run, a client that
# went away) or "ok".
STATUSES = ("ok", "error", "cancelled")
ITEM_ATTRIBUTE = {
    "run": "codeinterp.run.id",
    "response": "codeinterp.response.id",
    "chat": "codeinterp.chat.id",
}


def summarize(spans: list[dict[str, Any]]) -> TraceRecord | None:
    """The list entry of a finished trace (root first); None for a trace of no project of ours."""
    root = spans[0]
    attributes = root["attributes"]
    project = attributes.get("codeinterp.project")
    if not isinstance(project, str):
        return None
    kind = KINDS.get(str(attributes.get("codeinterp.door")), "execute")
    container_id = attributes.get("codeinterp.container.id")
    thread_id = attributes.get("codeinterp.thread.id") or (
        attributes.get("gen_ai.conversation.id") if kind == "run" else None
    )
    item_id = attributes.get(ITEM_ATTRIBUTE[kind]) if kind in ITEM_ATTRIBUTE else None
    costs = [s["attributes"].get("codeinterp.session.cost_usd") for s in spans]
    known_costs = [c for c in costs if isinstance(c, int | float)]
    return TraceRecord(
        id=root["span_id"],
        project=project,
        created_at=root["start_ns"] // 1_000_000_000,
        trace_id=root["trace_id"],
        kind=kind,
        item_id=item_id or container_id or thread_id,
        thread_id=thread_id,
        assistant_id=attributes.get("gen_ai.agent.id"),
        container_id=container_id,
        status=_status(root),
        model=attributes.get("gen_ai.request.model"),
        duration_ms=duration_ms(root),
        input_tokens=attributes.get("gen_ai.usage.input_tokens"),
        output_tokens=attributes.get("gen_ai.usage.output_tokens"),
        cost_usd=max(known_costs) if known_costs else None,
        error_type=attributes.get("error.type"),
        error_count=sum(1 for s in spans if s["status"] == "error"),
        spans=spans,
    )


def _status(root: dict[str, Any]) -> str:
    if root["status"] == "error":
        return "error"
    return "cancelled" if root["attributes"].get("codeinterp.outcome") == "cancelled" else "ok"


class TracesService:
    def __init__(self, store: Store, recorder: TraceRecorder, retention_hours: float) -> None:
        self._store = store
        self._recorder = recorder
        self._retention_seconds = retention_hours * 3600
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name="trace store")

    async def stop(self) -> None:
        """Stop writing, after one last flush of what has finished. The writer is not
        cancelled: a write under way finishes (a cancelled one would lose what it took)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
        self._recorder.shutdown()

    async def flush(self) -> None:
        """Store what the recorder has finished since the last flush."""
        taken = self._recorder.take()
        records = [r for r in map(summarize, taken.traces) if r is not None]
        if records or taken.late:
            await self._store.add_traces(records, taken.late, summarize)

    async def sweep(self) -> int:
        """Delete the traces past the retention; return how many."""
        return await self._store.delete_traces_before(int(time.time() - self._retention_seconds))

    async def list(
        self, project: str, where: TraceFilter, *, limit: int, offset: int, errors_first: bool
    ) -> tuple[list[TraceRecord], bool]:
        return await self._store.list_traces(
            project, where, limit=limit, offset=offset, errors_first=errors_first
        )

    async def get(self, project: str, trace_id: str) -> TraceRecord:
        return await self._store.get_trace(project, trace_id)

    async def _keep(self) -> None:
        swept: float | None = None  # at start, then every RETENTION_SWEEP_SECONDS
        while True:
            try:
                if swept is None or time.monotonic() - swept > RETENTION_SWEEP_SECONDS:
                    swept = time.monotonic()
                    removed = await self.sweep()
                    if removed:
                        log.info("deleted %d trace(s) past the retention", removed)
                await self.flush()
            except Exception:  # a database hiccup must not end the writer
                log.exception("could not store traces")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLUSH_SECONDS)
            if self._stopping.is_set():
                return

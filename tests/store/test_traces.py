"""Stored traces: project scoping, filters and order, late spans that change a trace's summary,
retention in batches."""

from __future__ import annotations

import time
from typing import Any

import pytest

from codeinterp.errors import NotFound
from codeinterp.services.traces import summarize
from codeinterp.store import Store, TraceFilter


def span(
    span_id: str, parent: str | None, status: str = "unset", **attributes: Any
) -> dict[str, Any]:
    start = time.time_ns()
    return {
        "trace_id": "ab" * 16, "span_id": span_id, "parent_span_id": parent,
        "name": "execute_tool python" if parent else "invoke_agent codeinterp",
        "kind": "internal", "start_ns": start, "end_ns": start + 1_000_000,
        "status": status, "status_message": None, "attributes": attributes, "events": [],
    }  # fmt: skip


def run_trace(root_id: str, project: str = "proj_a", **extra: Any) -> list[dict[str, Any]]:
    root = span(
        root_id, None, **{"codeinterp.project": project, "codeinterp.door": "assistants",
                          "codeinterp.run.id": f"run_{root_id}", **extra},
    )  # fmt: skip
    return [root, span(root_id[:-1] + "f", root_id)]


def record(spans: list[dict[str, Any]]) -> Any:
    made = summarize(spans)
    assert made is not None
    return made


async def test_a_trace_is_seen_by_its_project_only(store: Store) -> None:
    await store.add_traces([record(run_trace("000000000000000a"))], {}, summarize)
    assert (await store.get_trace("proj_a", "000000000000000a")).spans is not None
    with pytest.raises(NotFound):
        await store.get_trace("proj_b", "000000000000000a")
    listed, more = await store.list_traces("proj_b", TraceFilter())
    assert listed == [] and not more


async def test_filters_and_failures_first(store: Store) -> None:
    traces = [
        record(run_trace("000000000000001a")),
        record(run_trace("000000000000002a", **{"error.type": "X"})),
        record(run_trace("000000000000003a")),
    ]
    failed_root = traces[1].spans[0]
    failed_root["status"] = "error"
    traces[1] = record(traces[1].spans)
    await store.add_traces(traces, {}, summarize)
    newest, _ = await store.list_traces("proj_a", TraceFilter())
    assert [t.id for t in newest] == ["000000000000003a", "000000000000002a", "000000000000001a"]
    errors_first, _ = await store.list_traces("proj_a", TraceFilter(), errors_first=True)
    assert errors_first[0].id == "000000000000002a"
    only, more = await store.list_traces("proj_a", TraceFilter(status="ok"), limit=1)
    assert [t.id for t in only] == ["000000000000003a"] and more
    by_item, _ = await store.list_traces("proj_a", TraceFilter(item_id="run_000000000000001a"))
    assert [t.id for t in by_item] == ["000000000000001a"]


async def test_late_spans_change_the_summary(store: Store) -> None:
    """A failed execution recorded after its run's root ended still counts as a failure."""
    await store.add_traces([record(run_trace("000000000000004a"))], {}, summarize)
    late = span(
        "0000000000000040", "000000000000004a", "error", **{"codeinterp.session.cost_usd": 0.03}
    )
    await store.add_traces([], {"000000000000004a": [late]}, summarize)
    (stored,), _ = await store.list_traces("proj_a", TraceFilter())
    assert (stored.error_count, stored.cost_usd, stored.project) == (1, 0.03, "proj_a")
    assert len((await store.get_trace("proj_a", stored.id)).spans or []) == 3
    await store.add_traces([], {"ffffffffffffffff": [late]}, summarize)  # no such trace: dropped


async def test_retention_deletes_old_traces_in_batches(store: Store) -> None:
    await store.add_traces([record(run_trace(f"{i:015x}a")) for i in range(7)], {}, summarize)
    assert await store.delete_traces_before(int(time.time()) - 60, batch=3) == 0
    assert await store.delete_traces_before(int(time.time()) + 60, batch=3) == 7
    assert (await store.list_traces("proj_a", TraceFilter()))[0] == []

"""Stored traces (the trace viewer's): each operation a synchronous function run in one
transaction. A trace's spans live in its row's body, so a trace page is one read; the list reads
only the key columns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from sqlalchemy import Connection, case, delete, select, update

from codeinterp.errors import NotFound

from . import statements
from .records import TraceFilter, TraceRecord
from .tables import TraceRow, table_of

TRACES = table_of(TraceRow)
# A finished trace's list entry from its spans (root first); None if it is not a trace of ours.
Summarize = Callable[[list[dict[str, Any]]], TraceRecord | None]
_SUMMARY = [f.name for f in fields(TraceRecord) if f.name != "spans"]
_SUMMARY_COLUMNS = [TRACES.c[name] for name in _SUMMARY]
_FILTERED = ("kind", "item_id", "thread_id", "assistant_id", "container_id", "status")


def insert_traces(connection: Connection, records: list[TraceRecord]) -> None:
    """Insert finished traces; a root span id already stored is skipped (kept as it was)."""
    ids = [r.id for r in records]
    known = set(connection.scalars(select(TRACES.c.id).where(TRACES.c.id.in_(ids))))
    rows = [_row(r) for r in records if r.id not in known]
    if rows:
        connection.execute(statements.insert_row(TRACES), rows)


def add_late_spans(
    connection: Connection, root_id: str, spans: list[dict[str, Any]], summarize: Summarize
) -> None:
    """Spans that ended after their trace's root: added to its stored trace, if there is one,
    and its summary made again from all of its spans (`summarize`: the root's first)."""
    body = connection.scalar(select(TRACES.c.body).where(TRACES.c.id == root_id))
    if body is None:
        return
    record = summarize([*body.get("spans", ()), *spans])
    if record is not None and record.id == root_id:
        values = _row(record)
        del values["id"], values["project"]  # a trace stays its project's
        connection.execute(update(TRACES).where(TRACES.c.id == root_id).values(**values))


def list_traces(
    connection: Connection,
    project: str,
    where: TraceFilter,
    *,
    limit: int,
    offset: int = 0,
    errors_first: bool = False,
) -> tuple[list[TraceRecord], bool]:
    """A page of the project's traces, newest first (failed ones first, if asked); whether more
    exist beyond it."""
    query = select(*_SUMMARY_COLUMNS).where(TRACES.c.project == project)
    for name in _FILTERED:
        value = getattr(where, name)
        if value is not None:
            query = query.where(TRACES.c[name] == value)
    if where.since is not None:
        query = query.where(TRACES.c.created_at >= where.since)
    if where.until is not None:
        query = query.where(TRACES.c.created_at < where.until)
    order: list[Any] = [TRACES.c.seq.desc()]
    if errors_first:  # a failed item, then one whose code failed along the way, then the rest
        failed = case((TRACES.c.status == "error", 0), (TRACES.c.error_count > 0, 1), else_=2)
        order.insert(0, failed)
    rows = connection.execute(query.order_by(*order).limit(limit + 1).offset(offset)).all()
    return [TraceRecord(*row) for row in rows[:limit]], len(rows) > limit


def get_trace(connection: Connection, project: str, root_id: str) -> TraceRecord:
    """One trace with its spans; NotFound if the project has none of that id."""
    row = connection.execute(
        select(*_SUMMARY_COLUMNS, TRACES.c.body).where(
            TRACES.c.id == root_id, TRACES.c.project == project
        )
    ).first()
    if row is None:
        raise NotFound(f"No trace found with id '{root_id}'.")
    values = dict(zip(_SUMMARY, row, strict=False))
    return TraceRecord(**values, spans=list(row[-1].get("spans", ())))


def delete_traces_before(connection: Connection, cutoff: int, limit: int) -> int:
    """Delete up to `limit` traces (of any project) that began before `cutoff`, oldest first;
    return how many."""
    oldest = select(TRACES.c.seq).where(TRACES.c.created_at < cutoff).order_by(TRACES.c.seq)
    doomed = oldest.limit(limit).scalar_subquery()
    return connection.execute(delete(TRACES).where(TRACES.c.seq.in_(doomed))).rowcount


def _row(record: TraceRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _SUMMARY}
    row["body"] = {"spans": record.spans or []}
    return row

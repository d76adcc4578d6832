"""The object operations of the store, each a synchronous function run in one transaction.

Each takes the transaction's `Connection` first (backends.py runs it, inline on SQLite or through
run_sync elsewhere) and does as few round trips as its semantics allow: a write is one statement
when nothing needs reading first, with a follow-up read only on the paths that need one (to tell
NotFound from a refused update, say).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.exc import IntegrityError

from codeinterp.errors import Conflict, InvalidRequest, NotFound

from . import statements
from .kinds import KEYS, Kind, key_columns, named_keys
from .paging import page
from .records import ObjectRecord, Page
from .tables import MessageRow, RunRow, RunStepRow, ThreadRow, table_of


def not_found(noun: str, obj_id: str) -> NotFound:
    return NotFound(f"No {noun} found with id '{obj_id}'.")


def insert_object(
    connection: Connection,
    kind: Kind,
    project: str,
    obj_id: str,
    created_at: int,
    body: dict[str, Any],
    keys: dict[str, str | None],
) -> ObjectRecord:
    """Insert a new object whose key columns are `keys`. Conflict if `obj_id` is taken."""
    values = {"id": obj_id, "project": project, "created_at": created_at, "body": body, **keys}
    try:
        result = connection.execute(statements.insert_row(kind.table), values)
    except IntegrityError as exc:
        raise Conflict(f"A {kind.noun} with id '{obj_id}' already exists.") from exc
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row has one
    return _record(project, obj_id, body, (key[0], created_at, *(keys.get(n) for n in KEYS)))


def get_object(connection: Connection, kind: Kind, project: str, obj_id: str) -> ObjectRecord:
    found = connection.execute(
        statements.find_object(kind.table), {"project": project, "id": obj_id}
    ).first()
    if found is None:
        raise not_found(kind.noun, obj_id)
    return statements.object_record(found)


def update_object(
    connection: Connection,
    kind: Kind,
    project: str,
    obj_id: str,
    body: dict[str, Any],
    given: dict[str, str | None],
) -> ObjectRecord:
    """Replace the object's body and set its key columns as `key_columns` decides.

    Usually one UPDATE, with no read first: it sets the body and the status (if the keyword or
    the body names one), and its WHERE also matches the fixed columns (thread_id, run_id) that
    the body names, so that an update that would change them matches nothing. When it matches
    nothing, or the values are refused before the row is known, `_update_after_reading` reads the
    row and decides as the plain read-check-write would: NotFound for a missing object first,
    then key_columns' errors in their order (tests/store/test_updates.py checks the two agree).
    """
    try:
        named = {k: v for k, v in named_keys(kind, body, given).items() if v is not None}
    except InvalidRequest:
        return _update_after_reading(connection, kind, project, obj_id, body, given)
    # Only the status may change; thread_id and run_id, when named, must match the row's.
    setting = tuple(name for name in named if name == "status")
    matching = tuple(name for name in named if name != "status")
    returning = connection.dialect.update_returning
    statement = statements.update_object(kind.table, setting, matching, returning)
    values = {"match_project": project, "match_id": obj_id, "body": body}
    values.update((name, named[name]) for name in setting)
    values.update((f"match_{name}", named[name]) for name in matching)
    result = connection.execute(statement, values)
    kept: Sequence[Any] | None = None
    if returning:
        kept = result.first()
    elif result.rowcount == 1:
        kept = _kept_columns(connection, kind.table, project, obj_id)
    if kept is None:
        return _update_after_reading(connection, kind, project, obj_id, body, given)
    return _record(project, obj_id, body, kept)


def _update_after_reading(
    connection: Connection,
    kind: Kind,
    project: str,
    obj_id: str,
    body: dict[str, Any],
    given: dict[str, str | None],
) -> ObjectRecord:
    """update_object the plain way: read the row's key columns, check, then update."""
    kept = _kept_columns(connection, kind.table, project, obj_id)
    if kept is None:
        raise not_found(kind.noun, obj_id)
    seq, created_at, *current = kept
    keys = key_columns(kind, body, given, current=dict(zip(KEYS, current, strict=True)))
    statement = statements.update_object(kind.table, tuple(keys), (), False)
    connection.execute(
        statement, {"match_project": project, "match_id": obj_id, "body": body, **keys}
    )
    return _record(project, obj_id, body, (seq, created_at, *(keys.get(n) for n in KEYS)))


def _kept_columns(
    connection: Connection, table: Table, project: str, obj_id: str
) -> Sequence[Any] | None:
    """seq, created_at, thread_id, run_id and status of an object (None if it is missing)."""
    return connection.execute(
        statements.object_keys(table), {"project": project, "id": obj_id}
    ).first()


def _record(project: str, obj_id: str, body: dict[str, Any], kept: Sequence[Any]) -> ObjectRecord:
    """The record of a written object from its seq, created_at and key columns (`kept`)."""
    seq, created_at, *keys = kept
    return statements.object_record((seq, obj_id, project, created_at, body, *keys))


def list_objects(
    connection: Connection,
    kind: Kind,
    project: str,
    filters: dict[str, str],
    *,
    after: str | None,
    before: str | None,
    limit: int,
    order: str,
) -> Page[ObjectRecord]:
    table = kind.table
    rows, has_more = page(
        connection, table, statements.object_columns(table), project, filters,
        after=after, before=before, limit=limit, order=order,
    )  # fmt: skip
    return Page([statements.object_record(row) for row in rows], has_more)


def delete_object(connection: Connection, kind: Kind, project: str, obj_id: str) -> None:
    result = connection.execute(
        statements.delete_row(kind.table), {"project": project, "id": obj_id}
    )
    if result.rowcount == 0:
        raise not_found(kind.noun, obj_id)


def delete_thread_cascade(connection: Connection, project: str, thread_id: str) -> None:
    """Delete a thread and its messages, runs and run steps.

    NotFound, and nothing deleted, if the project has no such thread.
    """
    threads = table_of(ThreadRow)
    found = connection.execute(
        statements.delete_row(threads), {"project": project, "id": thread_id}
    )
    if found.rowcount == 0:
        raise not_found("thread", thread_id)
    for model in (RunStepRow, RunRow, MessageRow):
        table = table_of(model)
        connection.execute(
            table.delete().where(table.c.project == project, table.c.thread_id == thread_id)
        )

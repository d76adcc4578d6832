"""The SQL the store runs, built once per table and shape, and the records made from its rows.

Why built once: SQLAlchemy caches the compiled SQL of a statement, but to find it there it must
compute the statement's cache key, and building a statement plus its key takes longer (tens of
microseconds) than SQLite takes to run a small query. So each statement here is built on first use
(functools.cache) with bindparam() placeholders and then executed with a dict of values, which
goes straight to the compiled form. A statement whose shape varies (which key columns an update
sets, which filters and cursors a list has) is cached per shape; there are few shapes of each.

Parameter names: `project` and `id` select an object; an UPDATE's SET values are named after
their columns and its WHERE values `match_<column>` (SQLAlchemy reserves column names for SET).

SELECTs name their columns in a fixed order, so rows become records by position: an object row is
seq, id, project, created_at, body, then the key columns (NULL where the kind has none; see
object_columns), a file row is the FileRecord fields, then the blob name.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Integer,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    insert,
    null,
    select,
    update,
)

from .kinds import KEYS
from .records import FileRecord, ObjectRecord

Columns = tuple[ColumnElement[Any], ...]


def by_id(table: Table) -> ColumnElement[bool]:
    """WHERE project = :project AND id = :id (every object lookup filters on its project)."""
    return and_(table.c.project == bindparam("project"), table.c.id == bindparam("id"))


@cache
def insert_row(table: Table) -> Insert:
    """INSERT of the columns named by the parameters' keys."""
    return insert(table)


@cache
def delete_row(table: Table) -> Delete:
    return delete(table).where(by_id(table))


# Objects


def _key_columns(table: Table) -> Columns:
    return tuple(table.c[name] if name in table.c else null().label(name) for name in KEYS)


@cache
def object_columns(table: Table) -> Columns:
    """seq, id, project, created_at, body, then the KEYS columns (see object_record)."""
    c = table.c
    return (c.seq, c.id, c.project, c.created_at, c.body, *_key_columns(table))


def object_record(row: Sequence[Any]) -> ObjectRecord:
    """The record of a row in object_columns' order (seq, id, project, created_at, body, keys).

    A key the kind has no column for is the body's field of that name, if that is a string.
    """
    seq, obj_id, project, created_at, body, thread_id, run_id, status, name = row
    return ObjectRecord(
        id=obj_id,
        project=project,
        created_at=created_at,
        body=body,
        seq=seq,
        thread_id=thread_id if thread_id is not None else _body_key(body, "thread_id"),
        run_id=run_id if run_id is not None else _body_key(body, "run_id"),
        status=status if status is not None else _body_key(body, "status"),
        name=name if name is not None else _body_key(body, "name"),
    )


def _body_key(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


@cache
def find_object(table: Table) -> Select[Any]:
    return select(*object_columns(table)).where(by_id(table))


@cache
def object_keys(table: Table) -> Select[Any]:
    """seq, created_at and the key columns of one object: what an update does not rewrite."""
    return select(table.c.seq, table.c.created_at, *_key_columns(table)).where(by_id(table))


@cache
def update_object(
    table: Table, setting: tuple[str, ...], matching: tuple[str, ...], returning: bool
) -> Update:
    """SET body and the `setting` key columns of the object whose `matching` columns agree.

    Returns, if `returning`, what object_keys selects.
    """
    statement = (
        update(table)
        .where(
            table.c.project == bindparam("match_project"),
            table.c.id == bindparam("match_id"),
            *(table.c[name] == bindparam(f"match_{name}") for name in matching),
        )
        .values({name: bindparam(name) for name in ("body", *setting)})
    )
    if returning:
        return statement.returning(table.c.seq, table.c.created_at, *_key_columns(table))
    return statement


# Files


@cache
def file_columns(table: Table) -> Columns:
    """The FileRecord fields in order, then the blob name."""
    c = table.c
    return (
        c.id, c.project, c.created_at, c.filename, c.purpose, c.bytes, c.expires_at, c.body, c.blob,
    )  # fmt: skip


def file_record(row: Any) -> FileRecord:
    """The record of a row selected with file_columns."""
    return FileRecord(*row[:8])


@cache
def find_file(table: Table) -> Select[Any]:
    return select(*file_columns(table)).where(by_id(table))


# Lists


@cache
def cursor_seq(table: Table) -> Select[Any]:
    """The seq of the object a list cursor names."""
    return select(table.c.seq).where(by_id(table))


@cache
def page_query(
    table: Table,
    columns: Columns,
    filters: tuple[str, ...],
    after: bool,
    before: bool,
    ascending: bool,
) -> Select[Any]:
    """A page of `columns` of rows of :project with the `filters` columns equal to their values.

    :after and :before are the seqs of the cursors given; at most :limit rows are returned. `after`
    takes the rows that follow it in the list's order (`ascending` by seq or not); `before` alone
    walks away from its cursor, so the rows come in reverse order (paging.py flips them back).
    """
    seq = table.c.seq
    conditions = [table.c.project == bindparam("project")]
    conditions += [table.c[name] == bindparam(name) for name in filters]
    if after:
        cursor = bindparam("after", type_=Integer)
        conditions.append(seq > cursor if ascending else seq < cursor)
    if before:
        cursor = bindparam("before", type_=Integer)
        conditions.append(seq < cursor if ascending else seq > cursor)
    backwards = before and not after
    return (
        select(*columns)
        .where(*conditions)
        .order_by(seq.asc() if ascending != backwards else seq.desc())
        .limit(bindparam("limit", type_=Integer))
    )

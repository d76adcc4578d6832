"""Cursor pagination over `seq`, the order in which objects were stored.

A list is ordered by seq, ascending or descending. The cursors `after` and `before` are object
ids; they stand for that object's seq, so a page never shifts when objects are added or deleted
elsewhere. `after` returns the objects that follow the cursor in the list's order; `before` alone
returns the page just before the cursor (the objects nearest to it), still in the list's order.
`has_more` says whether more objects lie beyond the page in the direction of travel. One more row
than asked for is fetched to know it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, Table

from codeinterp.errors import InvalidRequest

from . import statements
from .statements import Columns

ORDERS = ("asc", "desc")


def page(
    connection: Connection,
    table: Table,
    columns: Columns,
    project: str,
    filters: Mapping[str, str],
    *,
    after: str | None,
    before: str | None,
    limit: int,
    order: str,
) -> tuple[list[Row[Any]], bool]:
    """One page of `table`'s rows in `project`, and whether more exist.

    Only rows whose `filters` columns equal the values given are listed. The rows have `columns`,
    one of the tuples statements.py caches (object_columns, file_columns).
    """
    if order not in ORDERS:
        raise InvalidRequest(f"order must be 'asc' or 'desc', not {order!r}", param="order")
    if limit < 1:
        raise InvalidRequest(f"limit must be at least 1, not {limit}", param="limit")
    values: dict[str, Any] = {"project": project, **filters, "limit": limit + 1}
    if after is not None:
        values["after"] = _cursor(connection, table, project, after, "after")
    if before is not None:
        values["before"] = _cursor(connection, table, project, before, "before")
    query = statements.page_query(
        table, columns, tuple(filters), after is not None, before is not None, order == "asc"
    )
    rows = list(connection.execute(query, values).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if before is not None and after is None:  # fetched walking away from the cursor
        rows.reverse()
    return rows, has_more


def _cursor(connection: Connection, table: Table, project: str, object_id: str, param: str) -> int:
    seq = connection.execute(
        statements.cursor_seq(table), {"project": project, "id": object_id}
    ).scalar()
    if seq is None:
        raise InvalidRequest(
            f"{param}={object_id!r} is not an object of this list; "
            f"pass the id of an object from an earlier page",
            param=param,
        )
    return int(seq)

"""Cursor pagination over `seq`, the order in which objects were stored.

A list is ordered by seq, ascending or descending. The cursors `after` and `before` are object
ids; they stand for that object's seq, so a page never shifts when objects are added or deleted
elsewhere. `after` returns the objects that follow the cursor in the list's order; `before` alone
returns the page just before the cursor (the objects nearest to it), still in the list's order.
`has_more` says whether more objects lie beyond the page in the direction of travel. One more row
than asked for is fetched to know it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from codeinterp.errors import InvalidRequest

from .tables import Row

T = TypeVar("T", bound=Row)

ORDERS = ("asc", "desc")


async def page(
    session: AsyncSession,
    model: type[T],
    project: str,
    filters: Sequence[ColumnElement[bool]],
    *,
    after: str | None,
    before: str | None,
    limit: int,
    order: str,
) -> tuple[list[T], bool]:
    """One page of `model`'s rows in `project` matching `filters`, and whether more exist."""
    if order not in ORDERS:
        raise InvalidRequest(f"order must be 'asc' or 'desc', not {order!r}", param="order")
    if limit < 1:
        raise InvalidRequest(f"limit must be at least 1, not {limit}", param="limit")
    ascending = order == "asc"
    conditions = [model.project == project, *filters]
    if after is not None:
        seq = await _cursor(session, model, project, after, "after")
        conditions.append(model.seq > seq if ascending else model.seq < seq)
    if before is not None:
        seq = await _cursor(session, model, project, before, "before")
        conditions.append(model.seq < seq if ascending else model.seq > seq)
    backwards = before is not None and after is None  # walk away from the cursor, then flip
    query = (
        select(model)
        .where(*conditions)
        .order_by(model.seq.asc() if ascending != backwards else model.seq.desc())
        .limit(limit + 1)
    )
    rows = list((await session.scalars(query)).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return rows, has_more


async def _cursor(
    session: AsyncSession, model: type[Row], project: str, object_id: str, param: str
) -> int:
    seq = await session.scalar(
        select(model.seq).where(model.project == project, model.id == object_id)
    )
    if seq is None:
        raise InvalidRequest(
            f"{param}={object_id!r} is not an object of this list; "
            f"pass the id of an object from an earlier page",
            param=param,
        )
    return seq

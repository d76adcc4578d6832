"""The kinds of Assistants-API object the store keeps, and the key columns of each.

A key column repeats a body field of the same name (`thread_id`, `run_id`, `status`, `name`) so that
queries can filter on it. `key_columns` decides their values when an object is written, so that a
column never disagrees with its body; a kind without the column reports the body's field instead
(a message's or a run step's status; see statements.object_record).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table

from codeinterp.errors import InvalidRequest

from .tables import (
    AssistantRow,
    ContainerRow,
    MessageRow,
    ResponseRow,
    Row,
    RunRow,
    RunStepRow,
    ThreadRow,
    table_of,
)

KEYS = ("thread_id", "run_id", "status", "name")


@dataclass(frozen=True)
class Kind:
    name: str
    model: type[Row]
    required: tuple[str, ...] = ()  # key columns that must have a value
    optional: tuple[str, ...] = ()  # key columns that may be NULL

    @property
    def noun(self) -> str:
        return self.name.replace("_", " ")

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional

    @property
    def table(self) -> Table:
        return table_of(self.model)


KINDS = {
    kind.name: kind
    for kind in (
        Kind("assistant", AssistantRow),
        Kind("thread", ThreadRow),
        Kind("message", MessageRow, required=("thread_id",), optional=("run_id",)),
        Kind("run", RunRow, required=("thread_id", "status")),
        Kind("run_step", RunStepRow, required=("run_id", "thread_id")),
        Kind("container", ContainerRow, required=("status", "name")),
        Kind("response", ResponseRow, required=("status",)),
    )
}


def kind_of(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        known = ", ".join(KINDS)
        raise InvalidRequest(f"unknown object kind {name!r}; the store keeps: {known}") from None


def key_columns(
    kind: Kind,
    body: dict[str, Any],
    given: dict[str, str | None],
    current: dict[str, str | None] | None = None,
) -> dict[str, str | None]:
    """The key column values for writing `body`: a keyword's value, else the body's field.

    A keyword that disagrees with the body's field is an error, and so is a keyword the object
    cannot keep (the kind has no such column and the body no such field). When updating
    (`current` given), a missing value keeps the current one, and thread_id and run_id, fixed at
    creation, may not change.
    """
    values: dict[str, str | None] = {}
    for name, value in _named(kind, body, given):
        if current is not None:
            if value is None:
                value = current[name]
            elif name != "status" and value != current[name]:
                raise InvalidRequest(f"a {kind.noun}'s {name} cannot change")
        if value is None and name in kind.required:
            raise InvalidRequest(f"a {kind.noun} needs a {name} (as a keyword or in the body)")
        values[name] = value
    return values


def named_keys(
    kind: Kind, body: dict[str, Any], given: dict[str, str | None]
) -> dict[str, str | None]:
    """The kind's key columns as the keywords or the body name them (None: not named).

    Raises the errors of `key_columns` that need no current row. An update whose values pass
    here and match the row's fixed columns passes `key_columns` with the same result, missing
    values keeping the current ones; so the store can update without reading the row first.
    """
    return dict(_named(kind, body, given))


def _named(
    kind: Kind, body: dict[str, Any], given: dict[str, str | None]
) -> Iterator[tuple[str, str | None]]:
    """(column, value named for it) for each of the kind's key columns, checking keywords.

    A generator, so that `key_columns` checks one key column entirely before the next, as the
    order of its errors depends on.
    """
    for name in KEYS:
        keyword = given.get(name)
        if keyword is None and name not in kind.columns:
            continue  # nothing to keep: the body's field, if any, is just data
        field = _field(body, name)
        if keyword is not None and field is not None and keyword != field:
            raise InvalidRequest(f"{name}={keyword!r} disagrees with the body's {name} {field!r}")
        if name not in kind.columns:
            if field is None:
                raise InvalidRequest(f"a {kind.noun} has no {name}; put it in the body instead")
            continue
        yield name, keyword if keyword is not None else field


def _field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidRequest(f"the body's {name} must be a string, not {type(value).__name__}")

"""update_object without a read first decides exactly as reading the row, checking, then writing.

The store updates an object with one UPDATE whenever it can (objects.update_object). The reference
here is the plain algorithm the store used before: read the row (NotFound if missing), decide the
key columns from the body, the status keyword and the row's current columns (the rules of
kinds.key_columns, copied here as they were), then write. For any kind, row and update, both must
give the same record or the same error, and a refused update must leave the row as it was.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeinterp.errors import InvalidRequest, NotFound
from codeinterp.store import ObjectRecord, Store
from codeinterp.store.kinds import KEYS, KINDS, Kind

# Key values drawn from a small set so that they often agree, sometimes not; 7 is not a string.
VALUES = st.sampled_from([None, "a", "b", 7])
KEYWORDS = st.sampled_from([None, "a", "b"])


def reference_key_columns(
    kind: Kind, body: dict[str, Any], status: str | None, current: dict[str, str | None]
) -> dict[str, str | None]:
    """kinds.key_columns as it was when the store read the row before every update."""
    given = {"status": status}
    values: dict[str, str | None] = {}
    for name in KEYS:
        keyword = given.get(name)
        if keyword is None and name not in kind.columns:
            continue
        field = body.get(name)
        if field is not None and not isinstance(field, str):
            raise InvalidRequest(f"the body's {name} must be a string, not {type(field).__name__}")
        if keyword is not None and field is not None and keyword != field:
            raise InvalidRequest(f"{name}={keyword!r} disagrees with the body's {name} {field!r}")
        value = keyword if keyword is not None else field
        if name not in kind.columns:
            if field is None:
                raise InvalidRequest(f"a {kind.noun} has no {name}; put it in the body instead")
            continue
        if value is None:
            value = current[name]
        elif name != "status" and value != current[name]:
            raise InvalidRequest(f"a {kind.noun}'s {name} cannot change")
        if value is None and name in kind.required:
            raise InvalidRequest(f"a {kind.noun} needs a {name} (as a keyword or in the body)")
        values[name] = value
    return values


def reference_update(
    kind: Kind, before: ObjectRecord | None, obj_id: str, body: dict[str, Any], status: str | None
) -> ObjectRecord | Exception:
    """The record the plain algorithm returns, or the error it raises."""
    if before is None:
        return NotFound(f"No {kind.noun} found with id '{obj_id}'.")
    current = {name: getattr(before, name) if name in kind.columns else None for name in KEYS}
    try:
        keys = reference_key_columns(kind, body, status, current)
    except InvalidRequest as exc:
        return exc
    record_keys = {}
    for name in KEYS:
        value = keys.get(name)
        if value is None and isinstance(body.get(name), str):
            value = body[name]
        record_keys[name] = value
    return ObjectRecord(
        id=before.id,
        project=before.project,
        created_at=before.created_at,
        body=body,
        seq=before.seq,
        **record_keys,
    )


async def check_update(
    store: Store,
    kind: Kind,
    obj_id: str,
    stored: dict[str, str | None] | None,
    body: dict[str, Any],
    status: str | None,
) -> None:
    """Create the object with key columns `stored` (None: no object), update, compare."""
    before = None
    if stored is not None:
        keys = {name: stored[name] for name in kind.columns}
        before = await store.create_object(kind.name, "p1", obj_id, {"n": 0}, **keys)
    expected = reference_update(kind, before, obj_id, body, status)
    try:
        outcome: ObjectRecord | Exception = await store.update_object(
            kind.name, "p1", obj_id, body, status=status
        )
    except (InvalidRequest, NotFound) as exc:
        outcome = exc
    if isinstance(expected, Exception):
        assert (type(outcome), str(outcome)) == (type(expected), str(expected))
        if before is not None:
            assert await store.get_object(kind.name, "p1", obj_id) == before
    else:
        assert outcome == expected
        assert await store.get_object(kind.name, "p1", obj_id) == expected


@pytest.mark.parametrize("path", ["inline", "inline-no-returning", "async"])
def test_update_decides_like_read_check_write(tmp_path: Path, path: str) -> None:
    """Random rows and updates of every kind: same record or same error as the reference.

    `inline-no-returning` runs the path of a database without UPDATE ... RETURNING; `async` the
    path of databases other than SQLite (test_async_path.py).
    """
    ids = itertools.count()
    with asyncio.Runner() as runner:
        data_dir = str(tmp_path / "data")
        store = runner.run(Store._open(data_dir, None, sqlite_inline=path != "async"))
        try:
            if path == "inline-no-returning":
                store._db._connection.dialect.update_returning = False  # type: ignore[attr-defined]

            @settings(
                max_examples=300,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(
                kind=st.sampled_from(sorted(KINDS)),
                exists=st.booleans(),
                stored=st.fixed_dictionaries({n: st.sampled_from(["a", "b"]) for n in KEYS}),
                no_run=st.booleans(),
                fields=st.fixed_dictionaries({n: VALUES for n in KEYS}),
                status=KEYWORDS,
            )
            def check(
                kind: str,
                exists: bool,
                stored: dict[str, str | None],
                no_run: bool,
                fields: dict[str, Any],
                status: str | None,
            ) -> None:
                if no_run:
                    stored = {**stored, "run_id": None}  # a message outside any run
                if kind != "message" and stored["run_id"] is None:
                    stored = {**stored, "run_id": "a"}
                body = {"id": "x", **{n: v for n, v in fields.items() if v is not None}}
                obj_id = f"obj{next(ids)}"
                runner.run(
                    check_update(
                        store, KINDS[kind], obj_id, stored if exists else None, body, status
                    )
                )

            check()
        finally:
            runner.run(store.close())


async def test_missing_object_is_not_found_before_invalid(store: Store) -> None:
    """An update of a missing object is NotFound, even when its values would be refused."""
    with pytest.raises(NotFound):
        await store.update_object("run", "p1", "run_1", {"status": 7})
    with pytest.raises(NotFound):
        await store.update_object("thread", "p1", "thread_1", {}, status="done")


async def test_message_outside_a_run_cannot_join_one(store: Store) -> None:
    """A message created without a run cannot be given one by an update (NULL is a value too)."""
    await store.create_object("message", "p1", "m1", {"thread_id": "t1", "status": "done"})
    with pytest.raises(InvalidRequest, match="run_id cannot change"):
        await store.update_object("message", "p1", "m1", {"thread_id": "t1", "run_id": "r1"})
    record = await store.update_object("message", "p1", "m1", {"thread_id": "t1", "x": 1})
    assert (record.thread_id, record.run_id, record.body) == (
        "t1",
        None,
        {"thread_id": "t1", "x": 1},
    )

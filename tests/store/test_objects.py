"""Assistants, threads, messages, runs and run steps: CRUD, key columns, project isolation."""

from __future__ import annotations

from typing import Any

import pytest

from codeinterp.errors import Conflict, InvalidRequest, NotFound
from codeinterp.store import Store

from .helpers import message_body, run_body, step_body

# kind -> (id, body, key keywords, expected (thread_id, run_id, status) of the record)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any], tuple[str | None, ...]]] = {
    "assistant": (
        "asst_1",
        {"id": "asst_1", "object": "assistant", "model": "gpt-4o", "tools": []},
        {},
        (None, None, None),
    ),
    "thread": ("thread_1", {"id": "thread_1", "object": "thread", "metadata": {}}, {}, (None,) * 3),
    "message": (
        "msg_1",
        message_body("msg_1", "thread_1", "run_1", "in_progress"),
        {"thread_id": "thread_1", "run_id": "run_1"},
        ("thread_1", "run_1", "in_progress"),
    ),
    "run": (
        "run_1",
        run_body("run_1", "thread_1"),
        {"thread_id": "thread_1", "status": "queued"},
        ("thread_1", None, "queued"),
    ),
    "run_step": (
        "step_1",
        step_body("step_1", "run_1", "thread_1", "in_progress"),
        {"thread_id": "thread_1", "run_id": "run_1", "status": "in_progress"},
        ("thread_1", "run_1", "in_progress"),
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
async def test_crud(store: Store, kind: str) -> None:
    """Each kind can be created, read, replaced, listed and deleted."""
    obj_id, body, keys, expected = CASES[kind]
    created = await store.create_object(kind, "p1", obj_id, body, **keys)
    assert (created.id, created.project, created.body) == (obj_id, "p1", body)
    assert (created.thread_id, created.run_id, created.status) == expected
    assert created.created_at == body.get("created_at", created.created_at)
    assert await store.get_object(kind, "p1", obj_id) == created

    changed = {**body, "metadata": {"k": "v"}}
    updated = await store.update_object(kind, "p1", obj_id, changed)
    assert updated.body == changed
    assert (updated.seq, updated.created_at) == (created.seq, created.created_at)
    assert await store.get_object(kind, "p1", obj_id) == updated
    assert [r.id for r in (await store.list_objects(kind, "p1")).items] == [obj_id]

    await store.delete_object(kind, "p1", obj_id)
    with pytest.raises(NotFound, match=obj_id):
        await store.get_object(kind, "p1", obj_id)
    assert (await store.list_objects(kind, "p1")).items == []


async def test_body_round_trips_exactly(store: Store) -> None:
    """Nested JSON, unicode, floats, nulls and key order come back exactly as stored."""
    body: dict[str, Any] = {
        "z": 1,
        "a": [1.5, -0.0, 1e300, None, True, "ünïcødé ✓ \u0000"],
        "m": {"nested": {"deep": [{}, []]}},
        "big": 2**62,
    }
    await store.create_object("assistant", "p1", "asst_1", body, created_at=5)
    stored = await store.get_object("assistant", "p1", "asst_1")
    assert stored.body == body
    assert list(stored.body) == list(body)
    assert stored.created_at == 5


@pytest.mark.parametrize("kind", list(CASES))
async def test_other_project_sees_nothing(store: Store, kind: str) -> None:
    """Another project's object is NotFound for get, update and delete and absent from lists."""
    obj_id, body, keys, _ = CASES[kind]
    await store.create_object(kind, "p1", obj_id, body, **keys)
    with pytest.raises(NotFound):
        await store.get_object(kind, "p2", obj_id)
    with pytest.raises(NotFound):
        await store.update_object(kind, "p2", obj_id, body)
    with pytest.raises(NotFound):
        await store.delete_object(kind, "p2", obj_id)
    assert (await store.list_objects(kind, "p2")).items == []
    assert (await store.get_object(kind, "p1", obj_id)).body == body


async def test_duplicate_id_is_a_conflict(store: Store) -> None:
    """Creating an object with a taken id raises Conflict and keeps the first."""
    await store.create_object("thread", "p1", "thread_1", {"n": 1})
    with pytest.raises(Conflict, match="thread_1"):
        await store.create_object("thread", "p2", "thread_1", {"n": 2})
    assert (await store.get_object("thread", "p1", "thread_1")).body == {"n": 1}


async def test_unknown_kind_is_invalid(store: Store) -> None:
    """An unknown kind raises InvalidRequest naming the known ones."""
    with pytest.raises(InvalidRequest, match="run_step"):
        await store.get_object("vector_store", "p1", "vs_1")


async def test_key_columns_come_from_the_body(store: Store) -> None:
    """Without keywords, thread_id, run_id and status are read from the body."""
    await store.create_object("run", "p1", "run_1", run_body("run_1", "thread_1", "in_progress"))
    record = await store.get_object("run", "p1", "run_1")
    assert (record.thread_id, record.status) == ("thread_1", "in_progress")


async def test_missing_required_key_is_invalid(store: Store) -> None:
    """A run without a thread_id anywhere is refused."""
    with pytest.raises(InvalidRequest, match="thread_id"):
        await store.create_object("run", "p1", "run_1", {"status": "queued"})


async def test_keyword_disagreeing_with_body_is_invalid(store: Store) -> None:
    """A keyword that contradicts the body's field is refused, on create and on update."""
    with pytest.raises(InvalidRequest, match="disagrees"):
        await store.create_object("run", "p1", "run_1", run_body("run_1", "t1"), thread_id="t2")
    await store.create_object("run", "p1", "run_1", run_body("run_1", "t1"))
    with pytest.raises(InvalidRequest, match="disagrees"):
        await store.update_object(
            "run", "p1", "run_1", run_body("run_1", "t1", "in_progress"), status="completed"
        )


async def test_keyword_the_object_cannot_keep_is_invalid(store: Store) -> None:
    """A key the kind has neither a column nor a body field for is refused, not dropped."""
    with pytest.raises(InvalidRequest, match="has no thread_id"):
        await store.create_object("assistant", "p1", "asst_1", {}, thread_id="thread_1")


async def test_update_keeps_status_column_in_step_with_body(store: Store) -> None:
    """Updating a run's body updates its status column; a status keyword works alone too."""
    await store.create_object("run", "p1", "run_1", run_body("run_1", "t1"))
    await store.update_object("run", "p1", "run_1", run_body("run_1", "t1", "in_progress"))
    assert (await store.get_object("run", "p1", "run_1")).status == "in_progress"
    no_status = {"id": "run_1", "thread_id": "t1"}
    await store.update_object("run", "p1", "run_1", no_status, status="completed")
    record = await store.get_object("run", "p1", "run_1")
    assert (record.status, record.body) == ("completed", no_status)
    listed = await store.list_objects("run", "p1", thread_id="t1")
    assert [r.status for r in listed.items] == ["completed"]


async def test_thread_of_an_object_cannot_change(store: Store) -> None:
    """An update whose body names another thread is refused."""
    await store.create_object("message", "p1", "msg_1", message_body("msg_1", "t1", None, "done"))
    with pytest.raises(InvalidRequest, match="cannot change"):
        await store.update_object("message", "p1", "msg_1", message_body("msg_1", "t2", None, "x"))


async def test_list_by_thread_and_run(store: Store) -> None:
    """Messages list by thread and by run; listing a kind by a key it lacks is refused."""
    await store.create_object("message", "p1", "m1", message_body("m1", "t1", None, "completed"))
    await store.create_object("message", "p1", "m2", message_body("m2", "t1", "r1", "completed"))
    await store.create_object("message", "p1", "m3", message_body("m3", "t2", "r2", "completed"))
    by_thread = await store.list_objects("message", "p1", thread_id="t1", order="asc")
    assert [m.id for m in by_thread.items] == ["m1", "m2"]
    by_run = await store.list_objects("message", "p1", thread_id="t1", run_id="r1")
    assert [m.id for m in by_run.items] == ["m2"]
    with pytest.raises(InvalidRequest, match="run_id"):
        await store.list_objects("run", "p1", run_id="r1")


async def test_delete_thread_cascade(store: Store) -> None:
    """Deleting a thread deletes its messages, runs and steps, and nothing of other threads."""
    for thread_id in ("t1", "t2"):
        await store.create_object("thread", "p1", thread_id, {"id": thread_id})
        await store.create_object(
            "run", "p1", f"r-{thread_id}", run_body(f"r-{thread_id}", thread_id)
        )
        msg = message_body(f"m-{thread_id}", thread_id, f"r-{thread_id}", "completed")
        await store.create_object("message", "p1", f"m-{thread_id}", msg)
        step = step_body(f"s-{thread_id}", f"r-{thread_id}", thread_id, "completed")
        await store.create_object("run_step", "p1", f"s-{thread_id}", step)
    await store.delete_thread_cascade("p1", "t1")
    for kind in ("thread", "run", "message", "run_step"):
        assert [r.id for r in (await store.list_objects(kind, "p1")).items] == [
            {"thread": "t2", "run": "r-t2", "message": "m-t2", "run_step": "s-t2"}[kind]
        ]
    with pytest.raises(NotFound):
        await store.delete_thread_cascade("p1", "t1")


async def test_cascade_from_another_project_is_not_found(store: Store) -> None:
    """delete_thread_cascade of another project's thread raises NotFound and deletes nothing."""
    await store.create_object("thread", "p1", "t1", {})
    await store.create_object("run", "p1", "r1", run_body("r1", "t1"))
    with pytest.raises(NotFound):
        await store.delete_thread_cascade("p2", "t1")
    assert (await store.get_object("run", "p1", "r1")).thread_id == "t1"

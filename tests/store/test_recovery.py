"""Restarts: nothing stored is lost, and runs a stop interrupted are failed with a clear error."""

from __future__ import annotations

from pathlib import Path

from codeinterp.store import Store

from .helpers import message_body, run_body, step_body

MESSAGE = "The server restarted while this run was in progress."


async def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    """Close and reopen on the same directory: files, objects and sessions are all still there."""
    data_dir = str(tmp_path / "data")
    store = await Store.open(data_dir)
    file = await store.create_file("p1", "a.txt", "assistants", b"hello", 10)
    await store.create_object("thread", "p1", "t1", {"id": "t1", "metadata": {"k": "v"}})
    run = await store.create_object("run", "p1", "r1", run_body("r1", "t1", "completed"))
    await store.record_session_start("p1", "sess_1", "thread", "t1", 100, 0.03)
    await store.close()

    store = await Store.open(data_dir)
    try:
        assert await store.get_file("p1", file.id) == file
        assert await store.read_file("p1", file.id) == b"hello"
        assert (await store.get_object("thread", "p1", "t1")).body == {
            "id": "t1",
            "metadata": {"k": "v"},
        }
        assert await store.get_object("run", "p1", "r1") == run
        assert [s.id for s in await store.list_sessions("p1", start_time=0)] == ["sess_1"]
        # New objects keep counting after the old ones: the order survives too.
        await store.create_object("run", "p1", "r2", run_body("r2", "t1", "completed"))
        listed = await store.list_objects("run", "p1", order="asc")
        assert [r.id for r in listed.items] == ["r1", "r2"]
    finally:
        await store.close()


async def test_interrupted_runs_fail(store: Store) -> None:
    """Runs in flight become failed with last_error; finished runs are untouched."""
    for status in ("queued", "in_progress", "cancelling", "requires_action", "completed"):
        body = run_body(f"r-{status}", "t1", status)
        if status == "requires_action":
            body["required_action"] = {"type": "submit_tool_outputs"}
        await store.create_object("run", "p1", f"r-{status}", body)
    await store.create_object("run", "p2", "r-other", run_body("r-other", "t9", "in_progress"))

    failed = await store.fail_interrupted_runs(MESSAGE, 1234)

    assert [r.id for r in failed] == [
        "r-queued", "r-in_progress", "r-cancelling", "r-requires_action", "r-other",
    ]  # fmt: skip
    for record in failed:
        stored = await store.get_object("run", record.project, record.id)
        assert stored == record
        assert stored.status == stored.body["status"] == "failed"
        assert stored.body["failed_at"] == 1234
        assert stored.body["last_error"] == {"code": "server_error", "message": MESSAGE}
        assert stored.body["expires_at"] is None
        assert stored.body["required_action"] is None
    completed = await store.get_object("run", "p1", "r-completed")
    assert completed.body == run_body("r-completed", "t1", "completed")
    assert await store.fail_interrupted_runs(MESSAGE, 5678) == []


async def test_interrupted_steps_and_messages_are_closed(store: Store) -> None:
    """A failed run's in-progress steps fail and its in-progress messages become incomplete."""
    await store.create_object("run", "p1", "r1", run_body("r1", "t1", "in_progress"))
    await store.create_object("run", "p1", "r0", run_body("r0", "t1", "completed"))
    await store.create_object("run_step", "p1", "s1", step_body("s1", "r1", "t1", "in_progress"))
    await store.create_object("run_step", "p1", "s2", step_body("s2", "r1", "t1", "completed"))
    await store.create_object("run_step", "p1", "s0", step_body("s0", "r0", "t1", "in_progress"))
    await store.create_object("message", "p1", "m1", message_body("m1", "t1", "r1", "in_progress"))
    await store.create_object("message", "p1", "m2", message_body("m2", "t1", "r1", "completed"))
    await store.create_object("message", "p1", "m0", message_body("m0", "t1", "r0", "in_progress"))

    await store.fail_interrupted_runs(MESSAGE, 1234)

    step = await store.get_object("run_step", "p1", "s1")
    assert step.status == step.body["status"] == "failed"
    assert step.body["failed_at"] == 1234
    assert step.body["last_error"] == {"code": "server_error", "message": MESSAGE}
    message = await store.get_object("message", "p1", "m1")
    assert message.status == message.body["status"] == "incomplete"
    assert message.body["incomplete_at"] == 1234
    assert message.body["incomplete_details"] == {"reason": "run_failed"}
    assert message.body["content"] == message_body("m1", "t1", "r1", "x")["content"]
    # Finished steps and messages, and those of runs that were not interrupted, stay as they were.
    assert (await store.get_object("run_step", "p1", "s2")).body["status"] == "completed"
    assert (await store.get_object("run_step", "p1", "s0")).body["status"] == "in_progress"
    assert (await store.get_object("message", "p1", "m2")).body["status"] == "completed"
    assert (await store.get_object("message", "p1", "m0")).body["status"] == "in_progress"

"""What a restart does to the runs it interrupted: the new bodies of runs, steps and messages.

A run executes inside the server process, so a run still in flight when the server stopped can
never finish. At start-up the store marks it failed, with a `last_error` that says why, and closes
what the run had open: its in-progress steps fail the same way and its in-progress messages become
incomplete. The rules are pure functions of the old body; `fail_interrupted_runs` applies them
inside the caller's transaction (a synchronous connection, see backends.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, update

from . import session_states, statements
from .records import ObjectRecord
from .tables import ContainerRow, MessageRow, RunRow, RunStepRow, expired_container, table_of

INTERRUPTED_RUN_STATUSES = ("queued", "in_progress", "cancelling", "requires_action")


def server_error(message: str) -> dict[str, str]:
    return {"code": "server_error", "message": message}


def failed_run(body: dict[str, Any], message: str, now: int) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "status": "failed",
        "failed_at": now,
        "last_error": server_error(message),
        "expires_at": None,
    }
    if "required_action" in body:
        changes["required_action"] = None  # no tool outputs will be taken any more
    return {**body, **changes}


def failed_step(body: dict[str, Any], message: str, now: int) -> dict[str, Any]:
    return {**body, "status": "failed", "failed_at": now, "last_error": server_error(message)}


def incomplete_message(body: dict[str, Any], now: int) -> dict[str, Any]:
    return {
        **body,
        "status": "incomplete",
        "incomplete_at": now,
        "incomplete_details": {"reason": "run_failed"},
    }


def fail_interrupted_runs(connection: Connection, message: str, now: int) -> list[ObjectRecord]:
    """Fail the interrupted runs of every project and close their steps and messages."""
    runs = table_of(RunRow)
    query = (
        select(*statements.object_columns(runs))
        .where(runs.c.status.in_(INTERRUPTED_RUN_STATUSES))
        .order_by(runs.c.seq)
    )
    failed = []
    for row in connection.execute(query):
        run = statements.object_record(row)
        failed.append(replace(run, body=failed_run(run.body, message, now), status="failed"))
    if not failed:
        return []
    _set_bodies(connection, runs, {run.seq: run.body for run in failed}, status="failed")
    run_ids = [run.id for run in failed]
    _close(connection, table_of(RunStepRow), run_ids, lambda body: failed_step(body, message, now))
    _close(connection, table_of(MessageRow), run_ids, lambda body: incomplete_message(body, now))
    return failed


def expire_running_containers(connection: Connection) -> int:
    """Mark every running container expired unless its session's state was saved: its files and
    state were in a session, and only a saved state outlives the server. Returns how many."""
    containers = table_of(ContainerRow)
    query = select(containers.c.seq, containers.c.body).where(
        containers.c.status == "running",
        containers.c.id.not_in(session_states.owners_with_state()),
    )
    bodies = {seq: expired_container(body) for seq, body in connection.execute(query)}
    _set_bodies(connection, containers, bodies, status="expired")
    return len(bodies)


def _close(
    connection: Connection,
    table: Table,
    run_ids: list[str],
    close: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Rewrite with `close` the body of each of the runs' rows in `table` still in progress."""
    query = select(table.c.seq, table.c.body).where(table.c.run_id.in_(run_ids))
    bodies = {
        seq: close(body)
        for seq, body in connection.execute(query)
        if body.get("status") == "in_progress"
    }
    _set_bodies(connection, table, bodies)


def _set_bodies(
    connection: Connection, table: Table, bodies: dict[int, dict[str, Any]], **values: Any
) -> None:
    """Replace the body (and set `values`) of each row by seq."""
    if not bodies:
        return
    statement = (
        update(table)
        .where(table.c.seq == bindparam("match_seq"))
        .values(body=bindparam("body"), **values)
    )
    connection.execute(
        statement, [{"match_seq": seq, "body": body} for seq, body in bodies.items()]
    )

"""What a restart does to the runs it interrupted: the new bodies of runs, steps and messages.

A run executes inside the server process, so a run still in flight when the server stopped can
never finish. At start-up the store marks it failed, with a `last_error` that says why, and closes
what the run had open: its in-progress steps fail the same way and its in-progress messages become
incomplete. The rules are pure functions of the old body; `fail_interrupted_runs` applies them
inside the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .tables import MessageRow, RunRow, RunStepRow

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


async def fail_interrupted_runs(session: AsyncSession, message: str, now: int) -> list[RunRow]:
    """Fail the interrupted runs of every project and close their steps and messages."""
    query = select(RunRow).where(RunRow.status.in_(INTERRUPTED_RUN_STATUSES)).order_by(RunRow.seq)
    runs = list((await session.scalars(query)).all())
    if not runs:
        return []
    for run in runs:
        run.body = failed_run(run.body, message, now)
        run.status = "failed"
    run_ids = [run.id for run in runs]
    for step in await session.scalars(select(RunStepRow).where(RunStepRow.run_id.in_(run_ids))):
        if step.body.get("status") == "in_progress":
            step.body = failed_step(step.body, message, now)
    for msg in await session.scalars(select(MessageRow).where(MessageRow.run_id.in_(run_ids))):
        if msg.body.get("status") == "in_progress":
            msg.body = incomplete_message(msg.body, now)
    return runs

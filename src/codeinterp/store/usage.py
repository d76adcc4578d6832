"""Usage records of code sessions: each operation a synchronous function run in one transaction."""

from __future__ import annotations

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from codeinterp.errors import Conflict, NotFound

from . import session_states, statements
from .records import SessionRecord
from .tables import SandboxSessionRow, table_of

SESSIONS = table_of(SandboxSessionRow)
_RECORD_COLUMNS = (
    SESSIONS.c.id, SESSIONS.c.project, SESSIONS.c.owner_kind, SESSIONS.c.owner_id,
    SESSIONS.c.started_at, SESSIONS.c.ended_at, SESSIONS.c.price_usd, SESSIONS.c.memory_limit,
)  # fmt: skip


def insert_session(connection: Connection, record: SessionRecord) -> None:
    """Insert a started session's row. Conflict if its id is taken."""
    values = {
        "id": record.id,
        "project": record.project,
        "created_at": record.started_at,
        "body": {},
        "owner_kind": record.owner_kind,
        "owner_id": record.owner_id,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "price_usd": record.price_usd,
        "memory_limit": record.memory_limit,
    }
    try:
        connection.execute(statements.insert_row(SESSIONS), values)
    except IntegrityError as exc:
        raise Conflict(f"A session with id '{record.id}' already exists.") from exc


def end_session(connection: Connection, session_id: str, ended_at: int) -> None:
    """Set the end time of a session not ended yet; NotFound for an unknown id."""
    ended = connection.execute(
        update(SESSIONS)
        .where(SESSIONS.c.id == session_id, SESSIONS.c.ended_at.is_(None))
        .values(ended_at=ended_at)
    )
    if ended.rowcount == 0:
        known = connection.execute(select(SESSIONS.c.seq).where(SESSIONS.c.id == session_id))
        if known.first() is None:
            raise NotFound(f"No session found with id '{session_id}'.")


def list_sessions(
    connection: Connection, project: str, start_time: int, end_time: int | None
) -> list[SessionRecord]:
    """The project's sessions that started in [start_time, end_time), oldest first."""
    query = select(*_RECORD_COLUMNS).where(
        SESSIONS.c.project == project, SESSIONS.c.started_at >= start_time
    )
    if end_time is not None:
        query = query.where(SESSIONS.c.started_at < end_time)
    query = query.order_by(SESSIONS.c.started_at, SESSIONS.c.seq)
    return [SessionRecord(*row) for row in connection.execute(query)]


def end_open_sessions(connection: Connection, ended_at: int) -> int:
    """End every session still open, of every project, but those a saved state continues (they
    wake from it); return how many were ended."""
    result = connection.execute(
        update(SESSIONS)
        .where(
            SESSIONS.c.ended_at.is_(None),
            SESSIONS.c.id.not_in(session_states.sessions_with_state()),
        )
        .values(ended_at=ended_at)
    )
    return result.rowcount

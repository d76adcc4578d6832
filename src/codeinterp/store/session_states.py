"""The saved states of sessions: each operation a synchronous function run in one transaction.

Rows only, as in files.py: the archives are blobs, which store.py puts in place before a row
names them and deletes after a row stops naming them. Discarding a state (retention, the
project's byte quota) ends what it kept alive in the same transaction: a container whose state
is discarded is expired, and the usage record of its session ends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import Connection, Select, delete, func, select, update

from .records import SessionStateRecord
from .tables import (
    ContainerRow,
    SandboxSessionRow,
    SessionStateRow,
    expired_container,
    table_of,
)

STATES = table_of(SessionStateRow)
CONTAINERS = table_of(ContainerRow)
SESSIONS = table_of(SandboxSessionRow)
_COLUMNS = (
    STATES.c.id, STATES.c.project, STATES.c.owner_kind, STATES.c.session_id, STATES.c.bytes,
    STATES.c.saved_at, STATES.c.body, STATES.c.blob,
)  # fmt: skip

PathOf = Callable[[str], str]  # blob name -> its path


def _record(row: Any, path_of: PathOf) -> SessionStateRecord:
    owner_id, project, owner_kind, session_id, size, saved_at, body, blob = row
    path = "" if blob is None else path_of(blob)
    return SessionStateRecord(owner_id, project, owner_kind, session_id, size, saved_at, body, path)


def put_state(
    connection: Connection, record: SessionStateRecord, blob: str | None, now: int
) -> str | None:
    """Insert or replace the owner's state (`blob` None: a state without an archive); the blob
    it named before (to delete), if any."""
    values = {
        "project": record.project,
        "owner_kind": record.owner_kind,
        "session_id": record.session_id,
        "blob": blob,
        "bytes": record.bytes,
        "saved_at": record.saved_at,
        "body": record.body,
    }
    found = connection.execute(select(STATES.c.blob).where(STATES.c.id == record.owner_id)).first()
    if found is None:
        connection.execute(STATES.insert().values(id=record.owner_id, created_at=now, **values))
        return None
    connection.execute(update(STATES).where(STATES.c.id == record.owner_id).values(**values))
    old: str | None = found.blob
    return old


def find_state(
    connection: Connection, project: str, owner_id: str, path_of: PathOf
) -> SessionStateRecord | None:
    row = connection.execute(
        select(*_COLUMNS).where(STATES.c.project == project, STATES.c.id == owner_id)
    ).first()
    return None if row is None else _record(row, path_of)


def list_states(
    connection: Connection, project: str | None, saved_before: int | None, path_of: PathOf
) -> list[SessionStateRecord]:
    """The states of `project` (None: every project), saved before `saved_before` if given,
    oldest first."""
    query = select(*_COLUMNS)
    if project is not None:
        query = query.where(STATES.c.project == project)
    if saved_before is not None:
        query = query.where(STATES.c.saved_at < saved_before)
    query = query.order_by(STATES.c.saved_at, STATES.c.seq)
    return [_record(row, path_of) for row in connection.execute(query)]


def touch_state(connection: Connection, project: str, owner_id: str, saved_at: int) -> None:
    connection.execute(
        update(STATES)
        .where(STATES.c.project == project, STATES.c.id == owner_id)
        .values(saved_at=saved_at)
    )


def bytes_used(connection: Connection, project: str, except_owner: str) -> int:
    """The bytes of the project's states but one owner's."""
    query = select(func.coalesce(func.sum(STATES.c.bytes), 0)).where(
        STATES.c.project == project, STATES.c.id != except_owner
    )
    return int(connection.execute(query).scalar_one())


def delete_state(connection: Connection, project: str, owner_id: str) -> str | None:
    """Delete the owner's state row; its blob name (for the caller to delete), if it had one."""
    found = connection.execute(
        select(STATES.c.blob).where(STATES.c.project == project, STATES.c.id == owner_id)
    ).first()
    if found is None:
        return None
    connection.execute(delete(STATES).where(STATES.c.id == owner_id))
    blob: str | None = found.blob
    return blob


def discard_states(
    connection: Connection, owner_ids: Collection[str], now: int
) -> list[str | None]:
    """Delete these states for good: their containers expire and their usage records end.
    Returns each state's blob name (to delete; None for a state without an archive)."""
    if not owner_ids:
        return []
    rows = connection.execute(
        select(STATES.c.id, STATES.c.session_id, STATES.c.blob).where(STATES.c.id.in_(owner_ids))
    ).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    connection.execute(delete(STATES).where(STATES.c.id.in_(ids)))
    expired = connection.execute(
        select(CONTAINERS.c.seq, CONTAINERS.c.body).where(
            CONTAINERS.c.id.in_(ids), CONTAINERS.c.status == "running"
        )
    ).all()
    for seq, body in expired:
        connection.execute(
            update(CONTAINERS)
            .where(CONTAINERS.c.seq == seq)
            .values(status="expired", body=expired_container(body))
        )
    connection.execute(
        update(SESSIONS)
        .where(SESSIONS.c.id.in_([row.session_id for row in rows]), SESSIONS.c.ended_at.is_(None))
        .values(ended_at=now)
    )
    return [row.blob for row in rows]


def all_blobs(connection: Connection) -> set[str]:
    """The blob name of every saved state that has an archive."""
    query = select(STATES.c.blob).where(STATES.c.blob.is_not(None))
    return set(connection.execute(query).scalars())


def owners_with_state() -> Select[Any]:
    """The owner ids that have a saved state (their sessions outlive the server), for IN."""
    return select(STATES.c.id)


def sessions_with_state() -> Select[Any]:
    """The usage records that saved states continue, for IN."""
    return select(STATES.c.session_id)


def users_of_packages(connection: Connection, environment_id: str, packages: str) -> list[str]:
    """The running containers pinned to an environment and the owners whose saved sessions
    have its packages (sleeping threads and containers): what keeps it from being removed."""
    users = [
        row.id
        for row in connection.execute(
            select(CONTAINERS.c.id, CONTAINERS.c.body).where(CONTAINERS.c.status == "running")
        )
        if row.body.get("environment") == environment_id
    ]
    for row in connection.execute(select(STATES.c.id, STATES.c.body)):
        if row.body.get("packages") == packages and row.id not in users:
            users.append(row.id)
    return users

"""The database schema as SQLAlchemy ORM classes: one table per kind of stored object.

Every table has the same five columns: `seq` (insertion order, for ordering and list cursors),
`id` (the public OpenAI-style id), `project` (the owner; every query filters on it), `created_at`
(unix seconds) and `body` (the rest of the object as JSON, kept exactly as given). On top of those,
each table has the few key columns that queries filter on. A key column repeats a field of `body`
of the same name; the store keeps the two consistent.

The store queries these tables with Core statements (statements.py; `table_of` gives a class's
table), not through ORM sessions, and hands out the frozen records of `records.py`. The alembic
migrations in `migrations/versions/` must build exactly this schema (tests/store/test_migrations.py
compares them), so a change here needs a new migration.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Float, Integer, MetaData, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

# Named constraints and indexes, so that migrations can refer to them by a stable name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite makes an INTEGER PRIMARY KEY the rowid; other databases get a 64-bit sequence.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Row(Base):
    """The columns every table has."""

    __abstract__ = True

    # AUTOINCREMENT: a deleted row's seq is never reused, so a cursor never points at a stranger.
    @declared_attr.directive
    def __table_args__(cls) -> dict[str, Any]:
        return {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True, sort_order=-4)
    id: Mapped[str] = mapped_column(Text, unique=True, sort_order=-3)
    project: Mapped[str] = mapped_column(Text, index=True, sort_order=-2)
    created_at: Mapped[int] = mapped_column(BigInteger, sort_order=-1)
    # JSON, not JSONB: keeps key order. Last in the table, after the key columns.
    body: Mapped[dict[str, Any]] = mapped_column(JSON, sort_order=1)


class FileRow(Row):
    __tablename__ = "files"

    filename: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column("bytes", BigInteger)
    blob: Mapped[str] = mapped_column(Text, unique=True)  # name under blobs/, from `secrets`
    expires_at: Mapped[int | None] = mapped_column(BigInteger)


class AssistantRow(Row):
    __tablename__ = "assistants"


class ThreadRow(Row):
    __tablename__ = "threads"


class MessageRow(Row):
    __tablename__ = "messages"

    thread_id: Mapped[str] = mapped_column(Text, index=True)
    run_id: Mapped[str | None] = mapped_column(Text, index=True)


class RunRow(Row):
    __tablename__ = "runs"

    thread_id: Mapped[str] = mapped_column(Text, index=True)
    status: Mapped[str] = mapped_column(Text, index=True)


class RunStepRow(Row):
    __tablename__ = "run_steps"

    run_id: Mapped[str] = mapped_column(Text, index=True)
    thread_id: Mapped[str] = mapped_column(Text)


class ContainerRow(Row):
    """A container of the Containers API: its metadata (its files live in its session)."""

    __tablename__ = "containers"

    name: Mapped[str] = mapped_column(Text, index=True)
    status: Mapped[str] = mapped_column(Text, index=True)  # "running" | "expired"


def expired_container(body: dict[str, Any]) -> dict[str, Any]:
    """A container's body once it has expired. It can never wake again, so nothing needs the
    secrets of its network policy any more: they are not kept past this."""
    kept = {key: value for key, value in body.items() if key != "domain_secrets"}
    return {**kept, "status": "expired"}


class ResponseRow(Row):
    """A stored response of the Responses API: `body` holds the response and its context."""

    __tablename__ = "responses"

    status: Mapped[str] = mapped_column(Text)


class SandboxSessionRow(Row):
    """Usage record of one code session; `body` is kept for extra details (empty today)."""

    __tablename__ = "sandbox_sessions"

    owner_kind: Mapped[str] = mapped_column(Text)  # "thread" | "container"
    owner_id: Mapped[str] = mapped_column(Text)
    started_at: Mapped[int] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger)
    price_usd: Mapped[float] = mapped_column(Float)
    memory_limit: Mapped[str] = mapped_column(Text)


class SessionStateRow(Row):
    """The saved state of a thread's or a container's session, its snapshot archive a blob: what
    a session asleep on disk wakes from, and what a crash falls back to. One per owner: `id` is
    the owner's id (a thread's or a container's). `body` holds what the owner keeps beside the
    archive (its file ids, the session's memory tier and idle time, what could not be saved).
    No `blob`: the session had not changed since it was made, and wakes as a new one."""

    __tablename__ = "session_states"

    owner_kind: Mapped[str] = mapped_column(Text)  # "thread" | "container"
    session_id: Mapped[str] = mapped_column(Text, index=True)  # the usage record it continues
    blob: Mapped[str | None] = mapped_column(Text, unique=True)  # name under blobs/
    size: Mapped[int] = mapped_column("bytes", BigInteger)
    saved_at: Mapped[int] = mapped_column(BigInteger, index=True)  # retention goes by this


class TraceRow(Row):
    """One trace of ours, kept for the trace viewer: its root span and every span under it.

    `id` is the root span's id: a caller's `traceparent` can put several of our traces under one
    trace id. The key columns summarize the root for the list page; `body` holds the spans.
    """

    __tablename__ = "traces"

    # indexed: retention deletes by age, across projects
    created_at: Mapped[int] = mapped_column(BigInteger, index=True, sort_order=-1)
    trace_id: Mapped[str] = mapped_column(Text, index=True)
    kind: Mapped[str] = mapped_column(Text)  # "run" | "response" | "chat" | "execute"
    item_id: Mapped[str | None] = mapped_column(Text, index=True)
    thread_id: Mapped[str | None] = mapped_column(Text, index=True)
    assistant_id: Mapped[str | None] = mapped_column(Text, index=True)
    container_id: Mapped[str | None] = mapped_column(Text, index=True)
    status: Mapped[str] = mapped_column(Text)  # "ok" | "error"
    model: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    error_type: Mapped[str | None] = mapped_column(Text)
    error_count: Mapped[int] = mapped_column(Integer)  # its spans that failed, the root's too


def table_of(model: type[Row]) -> Table:
    """The Core table of a mapped class (declarative classes with a __tablename__ have one)."""
    return cast(Table, model.__table__)

"""The Store: every object the server keeps, behind one async API scoped by project.

Each call is one short transaction. Every query filters on the caller's project, so an object of
another project is NotFound exactly like a missing one and never shows up in a list. Callers get
frozen records (records.py), never ORM objects. File bytes live in the blob directory (blobs.py):
a file's row is inserted only once its blob is in place, and deleted before its blob, so a row
never points at missing bytes; what a crash leaves behind is swept at the next start.

Concurrency. One engine and one session factory serve every coroutine. Reads run side by side
(SQLite in WAL mode: readers never wait for the writer). On SQLite, writes from this process
first take `_write_lock`. SQLite admits one writer at a time; without the lock, concurrent write
transactions from the pool would queue in SQLite's busy handler, which sleeps and polls, favours
no one, and gives up with "database is locked" once the busy timeout passes. An asyncio lock wakes
the next writer as soon as the previous one commits, in arrival order, and can never time out.
Other databases lock rows themselves, so there writes are not serialized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, delete, make_url, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from codeinterp.errors import Conflict, InvalidRequest, NotFound
from codeinterp.ids import new_id

from . import recovery
from .blobs import BlobDir
from .database import WRITE, default_url, migrate, open_engine
from .kinds import current_keys, file_record, key_columns, kind_of, session_record, to_record
from .paging import page
from .records import FileRecord, ObjectRecord, Page, SessionRecord
from .tables import FileRow, MessageRow, Row, RunRow, RunStepRow, SandboxSessionRow, ThreadRow

log = logging.getLogger("codeinterp.store")

T = TypeVar("T", bound=Row)

BLOB_DIR = "blobs"
OWNER_KINDS = ("thread", "container")
# Leftover blobs and temporary files younger than this are spared at start-up: they may belong
# to an upload still in progress in another server sharing the data directory.
ORPHAN_GRACE_SECONDS = 600.0


def _now() -> int:
    return int(time.time())


async def _find(session: AsyncSession, model: type[T], project: str, obj_id: str, noun: str) -> T:
    row = await session.scalar(select(model).where(model.project == project, model.id == obj_id))
    if row is None:
        raise NotFound(f"No {noun} found with id '{obj_id}'.")
    return row


def _make_dirs(data_dir: str, url: str) -> str:
    blob_dir = os.path.join(data_dir, BLOB_DIR)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    os.makedirs(blob_dir, mode=0o700, exist_ok=True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
    return blob_dir


class Store:
    """The server's storage; make one with `await Store.open(data_dir)`, end with `close()`."""

    def __init__(self, engine: AsyncEngine, blobs: BlobDir) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._blobs = blobs
        self._serialize_writes = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, data_dir: str, url: str | None = None) -> Store:
        """Open (creating if needed) the store in `data_dir`, migrated to the newest schema.

        `url` is any SQLAlchemy async database URL; the default is SQLite in `data_dir`.
        """
        url = url or default_url(data_dir)
        blob_dir = await asyncio.to_thread(_make_dirs, data_dir, url)
        engine = open_engine(url)
        try:
            await migrate(engine)
            store = cls(engine, BlobDir(blob_dir))
            await store._sweep_blobs()
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        await self._engine.dispose()

    # Transactions

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        turn: AbstractAsyncContextManager[Any] = (
            self._write_lock if self._serialize_writes else contextlib.nullcontext()
        )
        async with turn, self._sessions() as session, session.begin():
            await session.connection(execution_options={WRITE: True})
            yield session

    async def _sweep_blobs(self) -> None:
        async with self._read() as session:
            keep = set((await session.scalars(select(FileRow.blob))).all())
        removed = await self._blobs.sweep(keep, ORPHAN_GRACE_SECONDS)
        if removed:
            log.warning("removed %d blob(s) left behind by an earlier crash", len(removed))

    # Files

    async def create_file(
        self,
        project: str,
        filename: str,
        purpose: str,
        chunks: AsyncIterable[bytes] | bytes,
        max_bytes: int,
        expires_at: int | None = None,
        *,
        body: dict[str, Any] | None = None,
    ) -> FileRecord:
        """Store a new file's bytes, then its row. QuotaExceeded past `max_bytes` (nothing kept).

        `filename` is metadata only; the bytes go under a random name.
        """
        blob, size = await self._blobs.write(chunks, max_bytes)
        row = FileRow(
            id=new_id("file"),
            project=project,
            created_at=_now(),
            filename=filename,
            purpose=purpose,
            size=size,
            blob=blob,
            expires_at=expires_at,
            body=dict(body or {}),
        )
        # Shielded: once the bytes are in place, the row is inserted (or the blob removed) even
        # if the caller is cancelled meanwhile, so no blob is left without a row.
        await asyncio.shield(self._insert_file(row))
        return file_record(row)

    async def _insert_file(self, row: FileRow) -> None:
        try:
            async with self._write() as session:
                session.add(row)
        except BaseException:
            await self._blobs.delete(row.blob)
            raise

    async def get_file(self, project: str, file_id: str) -> FileRecord:
        async with self._read() as session:
            return file_record(await _find(session, FileRow, project, file_id, "file"))

    async def file_path(self, project: str, file_id: str) -> str:
        """Where the file's bytes are on disk (for streaming them in a response)."""
        async with self._read() as session:
            row = await _find(session, FileRow, project, file_id, "file")
        return self._blobs.path_of(row.blob)

    async def read_file(self, project: str, file_id: str) -> bytes:
        async with self._read() as session:
            row = await _find(session, FileRow, project, file_id, "file")
        try:
            return await self._blobs.read(row.blob)
        except FileNotFoundError:  # deleted since the row was read
            raise NotFound(f"No file found with id '{file_id}'.") from None

    async def list_files(
        self,
        project: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 10000,
        order: str = "desc",
    ) -> Page[FileRecord]:
        filters = [] if purpose is None else [FileRow.purpose == purpose]
        async with self._read() as session:
            rows, has_more = await page(
                session, FileRow, project, filters,
                after=after, before=None, limit=limit, order=order,
            )  # fmt: skip
        return Page([file_record(row) for row in rows], has_more)

    async def delete_file(self, project: str, file_id: str) -> None:
        """Delete the row, then the bytes (a crash in between leaves a blob for the next sweep)."""
        async with self._write() as session:
            row = await _find(session, FileRow, project, file_id, "file")
            await session.delete(row)
        await self._blobs.delete(row.blob)

    # Assistants, threads, messages, runs and run steps

    async def create_object(
        self,
        kind: str,
        project: str,
        obj_id: str,
        body: dict[str, Any],
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        status: str | None = None,
        created_at: int | None = None,
    ) -> ObjectRecord:
        """Store a new object. Key columns come from the keywords or else the body's fields.

        Conflict if `obj_id` is taken; InvalidRequest if a keyword disagrees with the body.
        """
        spec = kind_of(kind)
        given = {"thread_id": thread_id, "run_id": run_id, "status": status}
        keys = key_columns(spec, body, given)
        if created_at is None:
            stated = body.get("created_at")
            created_at = stated if isinstance(stated, int) else _now()
        row = spec.model(id=obj_id, project=project, created_at=created_at, body=body, **keys)
        async with self._write() as session:
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                raise Conflict(f"A {spec.noun} with id '{obj_id}' already exists.") from exc
        return to_record(row)

    async def get_object(self, kind: str, project: str, obj_id: str) -> ObjectRecord:
        spec = kind_of(kind)
        async with self._read() as session:
            return to_record(await _find(session, spec.model, project, obj_id, spec.noun))

    async def update_object(
        self,
        kind: str,
        project: str,
        obj_id: str,
        body: dict[str, Any],
        *,
        status: str | None = None,
    ) -> ObjectRecord:
        """Replace the object's body (and its status, when given or in the body)."""
        spec = kind_of(kind)
        async with self._write() as session:
            row = await _find(session, spec.model, project, obj_id, spec.noun)
            keys = key_columns(spec, body, {"status": status}, current=current_keys(row))
            row.body = body
            for name, value in keys.items():
                setattr(row, name, value)
        return to_record(row)

    async def delete_object(self, kind: str, project: str, obj_id: str) -> None:
        """Delete one object (a thread's messages and runs stay: see delete_thread_cascade)."""
        spec = kind_of(kind)
        async with self._write() as session:
            await session.delete(await _find(session, spec.model, project, obj_id, spec.noun))

    async def list_objects(
        self,
        kind: str,
        project: str,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> Page[ObjectRecord]:
        """A page of the project's objects of `kind`, optionally only a thread's or a run's."""
        spec = kind_of(kind)
        filters: list[ColumnElement[bool]] = []
        for name, value in (("thread_id", thread_id), ("run_id", run_id)):
            if value is not None:
                if name not in spec.columns:
                    raise InvalidRequest(f"{spec.noun}s cannot be listed by {name}", param=name)
                filters.append(spec.model.__table__.c[name] == value)
        async with self._read() as session:
            rows, has_more = await page(
                session, spec.model, project, filters,
                after=after, before=before, limit=limit, order=order,
            )  # fmt: skip
        return Page([to_record(row) for row in rows], has_more)

    async def delete_thread_cascade(self, project: str, thread_id: str) -> None:
        """Delete a thread with its messages, runs and run steps, all or nothing."""
        async with self._write() as session:
            thread = await _find(session, ThreadRow, project, thread_id, "thread")
            for model in (RunStepRow, RunRow, MessageRow):
                in_thread = model.__table__.c.thread_id == thread_id
                await session.execute(delete(model).where(model.project == project, in_thread))
            await session.delete(thread)

    # Crash recovery

    async def fail_interrupted_runs(self, message: str, now: int) -> list[ObjectRecord]:
        """At start-up, fail every run a stop interrupted (all projects); see recovery.py.

        Their in-progress steps fail too and their in-progress messages become incomplete, in one
        transaction. Returns the failed runs.
        """
        async with self._write() as session:
            runs = await recovery.fail_interrupted_runs(session, message, now)
        return [to_record(run) for run in runs]

    # Usage of code sessions

    async def record_session_start(
        self,
        project: str,
        session_id: str,
        owner_kind: str,
        owner_id: str,
        started_at: int,
        price_usd: float,
        memory_limit: str = "1g",
    ) -> SessionRecord:
        """Record that a code session started for a thread or a container."""
        if owner_kind not in OWNER_KINDS:
            raise InvalidRequest(f"owner_kind must be 'thread' or 'container', not {owner_kind!r}")
        row = SandboxSessionRow(
            id=session_id,
            project=project,
            created_at=started_at,
            body={},
            owner_kind=owner_kind,
            owner_id=owner_id,
            started_at=started_at,
            ended_at=None,
            price_usd=float(price_usd),
            memory_limit=memory_limit,
        )
        async with self._write() as session:
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                raise Conflict(f"A session with id '{session_id}' already exists.") from exc
        return session_record(row)

    async def record_session_end(self, session_id: str, ended_at: int) -> None:
        """Record a session's end; a session already ended keeps its first end time."""
        async with self._write() as session:
            row = await session.scalar(
                select(SandboxSessionRow).where(SandboxSessionRow.id == session_id)
            )
            if row is None:
                raise NotFound(f"No session found with id '{session_id}'.")
            if row.ended_at is None:
                row.ended_at = ended_at

    async def list_sessions(
        self, project: str, *, start_time: int, end_time: int | None = None
    ) -> list[SessionRecord]:
        """The project's sessions that started in [start_time, end_time), oldest first."""
        query = select(SandboxSessionRow).where(
            SandboxSessionRow.project == project, SandboxSessionRow.started_at >= start_time
        )
        if end_time is not None:
            query = query.where(SandboxSessionRow.started_at < end_time)
        query = query.order_by(SandboxSessionRow.started_at, SandboxSessionRow.seq)
        async with self._read() as session:
            return [session_record(row) for row in (await session.scalars(query)).all()]

    async def end_open_sessions(self, ended_at: int) -> int:
        """At start-up, end every session still open: sessions do not survive a restart."""
        async with self._write() as session:
            rows = (
                await session.scalars(
                    select(SandboxSessionRow).where(SandboxSessionRow.ended_at.is_(None))
                )
            ).all()
            for row in rows:
                row.ended_at = ended_at
        return len(rows)

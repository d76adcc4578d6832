"""The Store: every object the server keeps, behind one async API scoped by project.

Each call is one short transaction. Every query filters on the caller's project, so an object of
another project is NotFound exactly like a missing one and never shows up in a list. Callers get
frozen records (records.py), never rows. File bytes live in the blob directory (blobs.py): a
file's row is inserted only once its blob is in place, and deleted before its blob, so a row never
points at missing bytes; what a crash leaves behind is swept at the next start.

The body of each call is a synchronous function of a connection (objects.py, files.py, usage.py),
which a `Database` (backends.py) runs as a read or a write transaction: inline on the event loop
for SQLite, where that is much faster than a thread hop and serializes this process's writers by
itself, through the async engine elsewhere. Blob I/O stays off the loop, in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterable
from typing import Any

from sqlalchemy import make_url

from codeinterp.errors import InvalidRequest, NotFound
from codeinterp.ids import new_id

from . import files, objects, recovery, session_states, traces, usage
from .backends import Database, open_database
from .blobs import BlobDir
from .database import default_url
from .kinds import key_columns, kind_of
from .records import (
    FileRecord,
    ObjectRecord,
    Page,
    SessionRecord,
    SessionStateRecord,
    TraceFilter,
    TraceRecord,
)

log = logging.getLogger("codeinterp.store")

BLOB_DIR = "blobs"
OWNER_KINDS = ("thread", "container")
# Leftover blobs and temporary files younger than this are spared at start-up: they may belong
# to an upload still in progress in another server sharing the data directory.
ORPHAN_GRACE_SECONDS = 600.0


def _now() -> int:
    return int(time.time())


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

    def __init__(self, database: Database, blobs: BlobDir) -> None:
        self._db = database
        self._blobs = blobs

    @classmethod
    async def open(cls, data_dir: str, url: str | None = None) -> Store:
        """Open (creating if needed) the store in `data_dir`, migrated to the newest schema.

        `url` is any SQLAlchemy async database URL; the default is SQLite in `data_dir`.
        """
        return await cls._open(data_dir, url)

    @classmethod
    async def _open(cls, data_dir: str, url: str | None, *, sqlite_inline: bool = True) -> Store:
        """`open`; with `sqlite_inline` false, SQLite runs through the async engine (for tests)."""
        url = url or default_url(data_dir)
        blob_dir = await asyncio.to_thread(_make_dirs, data_dir, url)
        database = await open_database(url, sqlite_inline=sqlite_inline)
        try:
            store = cls(database, BlobDir(blob_dir))
            await store.sweep_blobs()
        except BaseException:
            await database.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def sweep_blobs(self) -> None:
        """Remove blobs no row names and temporary files, once ORPHAN_GRACE_SECONDS old: what a
        crash leaves between writing a blob and inserting its row. Done at start-up and, by the
        server, every ORPHAN_GRACE_SECONDS while it runs (a crash of another server sharing the
        data directory leaves them too)."""
        keep = await self._db.read(lambda c: files.all_blobs(c) | session_states.all_blobs(c))
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
        return await self._add_file(project, filename, purpose, blob, size, expires_at, body)

    async def adopt_file(
        self, project: str, filename: str, purpose: str, temp: str, *, body: dict[str, Any]
    ) -> FileRecord:
        """A new file made of the finished file at `temp` (a `temp_path`), taken over without
        copying its bytes."""
        blob, size = await self._blobs.adopt(temp)
        return await self._add_file(project, filename, purpose, blob, size, None, body)

    async def _add_file(
        self,
        project: str,
        filename: str,
        purpose: str,
        blob: str,
        size: int,
        expires_at: int | None,
        body: dict[str, Any] | None,
    ) -> FileRecord:
        record = FileRecord(
            id=new_id("file"),
            project=project,
            created_at=_now(),
            filename=filename,
            purpose=purpose,
            bytes=size,
            expires_at=expires_at,
            body=dict(body or {}),
        )
        # Shielded: once the bytes are in place, the row is inserted (or the blob removed) even
        # if the caller is cancelled meanwhile, so no blob is left without a row.
        await asyncio.shield(self._insert_file(record, blob))
        return record

    async def _insert_file(self, record: FileRecord, blob: str) -> None:
        try:
            await self._db.write(lambda c: files.insert_file(c, record, blob))
        except BaseException:
            await self._blobs.delete(blob)
            raise

    async def get_file(self, project: str, file_id: str) -> FileRecord:
        record, _ = await self._db.read(lambda c: files.find_file(c, project, file_id))
        return record

    async def file_path(self, project: str, file_id: str) -> str:
        """Where the file's bytes are on disk (for streaming them in a response)."""
        _, blob = await self._db.read(lambda c: files.find_file(c, project, file_id))
        return self._blobs.path_of(blob)

    async def read_file(self, project: str, file_id: str) -> bytes:
        _, blob = await self._db.read(lambda c: files.find_file(c, project, file_id))
        try:
            return await self._blobs.read(blob)
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
        return await self._db.read(
            lambda c: files.list_files(c, project, purpose, after, limit, order)
        )

    async def delete_file(self, project: str, file_id: str) -> None:
        """Delete the row, then the bytes (a crash in between leaves a blob for the next sweep)."""
        blob = await self._db.write(lambda c: files.delete_file(c, project, file_id))
        await self._blobs.delete(blob)

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
        name: str | None = None,
        created_at: int | None = None,
    ) -> ObjectRecord:
        """Store a new object. Key columns come from the keywords or else the body's fields.

        Conflict if `obj_id` is taken; InvalidRequest if a keyword disagrees with the body.
        """
        spec = kind_of(kind)
        given = {"thread_id": thread_id, "run_id": run_id, "status": status, "name": name}
        keys = key_columns(spec, body, given)
        if created_at is None:
            stated = body.get("created_at")
            created_at = stated if isinstance(stated, int) else _now()
        return await self._db.write(
            lambda c: objects.insert_object(c, spec, project, obj_id, created_at, body, keys)
        )

    async def get_object(self, kind: str, project: str, obj_id: str) -> ObjectRecord:
        spec = kind_of(kind)
        return await self._db.read(lambda c: objects.get_object(c, spec, project, obj_id))

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
        given = {"status": status}
        return await self._db.write(
            lambda c: objects.update_object(c, spec, project, obj_id, body, given)
        )

    async def delete_object(self, kind: str, project: str, obj_id: str) -> None:
        """Delete one object (a thread's messages and runs stay: see delete_thread_cascade)."""
        spec = kind_of(kind)
        await self._db.write(lambda c: objects.delete_object(c, spec, project, obj_id))

    async def list_objects(
        self,
        kind: str,
        project: str,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        name: str | None = None,
        status: str | None = None,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> Page[ObjectRecord]:
        """A page of the project's objects of `kind`, optionally only those whose key columns
        (a thread's, a run's, a name, a status) have the values given."""
        spec = kind_of(kind)
        filters: dict[str, str] = {}
        named = (("thread_id", thread_id), ("run_id", run_id), ("name", name), ("status", status))
        for column, value in named:
            if value is not None:
                if column not in spec.columns:
                    raise InvalidRequest(f"{spec.noun}s cannot be listed by {column}", param=column)
                filters[column] = value
        return await self._db.read(
            lambda c: objects.list_objects(
                c, spec, project, filters, after=after, before=before, limit=limit, order=order
            )
        )

    async def delete_thread_cascade(self, project: str, thread_id: str) -> None:
        """Delete a thread with its messages, runs and run steps, all or nothing."""
        await self._db.write(lambda c: objects.delete_thread_cascade(c, project, thread_id))

    # Crash recovery

    async def fail_interrupted_runs(self, message: str, now: int) -> list[ObjectRecord]:
        """At start-up, fail every run a stop interrupted (all projects); see recovery.py.

        Their in-progress steps fail too and their in-progress messages become incomplete, in one
        transaction. Returns the failed runs.
        """
        return await self._db.write(lambda c: recovery.fail_interrupted_runs(c, message, now))

    async def expire_running_containers(self) -> int:
        """At start-up, mark running containers expired (their sessions are gone) unless their
        state was saved (they wake from it)."""
        return await self._db.write(recovery.expire_running_containers)

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
        record = SessionRecord(
            id=session_id,
            project=project,
            owner_kind=owner_kind,
            owner_id=owner_id,
            started_at=started_at,
            ended_at=None,
            price_usd=float(price_usd),
            memory_limit=memory_limit,
        )
        await self._db.write(lambda c: usage.insert_session(c, record))
        return record

    async def record_session_end(self, session_id: str, ended_at: int) -> None:
        """Record a session's end; a session already ended keeps its first end time."""
        await self._db.write(lambda c: usage.end_session(c, session_id, ended_at))

    async def list_sessions(
        self, project: str, *, start_time: int, end_time: int | None = None
    ) -> list[SessionRecord]:
        """The project's sessions that started in [start_time, end_time), oldest first."""
        return await self._db.read(lambda c: usage.list_sessions(c, project, start_time, end_time))

    async def end_open_sessions(self, ended_at: int) -> int:
        """End every session still open but those a saved state continues: at start-up
        (sessions do not survive a restart) and at shutdown."""
        return await self._db.write(lambda c: usage.end_open_sessions(c, ended_at))

    # Saved states of sessions (their archives are blobs)

    def temp_path(self) -> str:
        """Where to write a file that `save_session_state` (or `adopt_file`) then takes over
        without copying: a temporary name in the blob directory, swept if left behind."""
        return self._blobs.temp_path()

    async def save_session_state(self, record: SessionStateRecord, temp: str | None) -> None:
        """Keep the archive at `temp` (a `temp_path`) as the owner's saved state, replacing the
        one it had; `temp` None: a state without an archive (a session that had not changed
        since it was made). `record.path` is ignored (the store names the blob)."""
        blob = None if temp is None else (await self._blobs.adopt(temp))[0]
        # Shielded as a whole: once the blob is in place, the row names it (and the old blob
        # goes) or the blob goes, even if the caller is cancelled meanwhile.
        await asyncio.shield(self._put_session_state(record, blob))

    async def _put_session_state(self, record: SessionStateRecord, blob: str | None) -> None:
        try:
            old = await self._db.write(lambda c: session_states.put_state(c, record, blob, _now()))
        except BaseException:
            if blob is not None:
                await self._blobs.delete(blob)
            raise
        if old is not None:
            await self._blobs.delete(old)

    async def touch_session_state(self, project: str, owner_id: str, saved_at: int) -> None:
        """The owner's state is still its session's state at `saved_at` (for the retention)."""
        await self._db.write(lambda c: session_states.touch_state(c, project, owner_id, saved_at))

    async def find_session_state(self, project: str, owner_id: str) -> SessionStateRecord | None:
        path_of = self._blobs.path_of
        return await self._db.read(
            lambda c: session_states.find_state(c, project, owner_id, path_of)
        )

    async def list_session_states(
        self, project: str | None = None, *, saved_before: int | None = None
    ) -> list[SessionStateRecord]:
        """Saved states, oldest first: of `project` (None: all), saved before a time if given."""
        path_of = self._blobs.path_of
        return await self._db.read(
            lambda c: session_states.list_states(c, project, saved_before, path_of)
        )

    async def session_state_bytes(self, project: str, *, except_owner: str = "") -> int:
        """The bytes the project's saved states take, but `except_owner`'s."""
        return await self._db.read(lambda c: session_states.bytes_used(c, project, except_owner))

    async def environment_users(self, environment_id: str, packages: str) -> list[str]:
        """Containers and saved sessions, of every project, that use an environment."""
        return await self._db.read(
            lambda c: session_states.users_of_packages(c, environment_id, packages)
        )

    async def delete_session_state(self, project: str, owner_id: str) -> None:
        """Forget the owner's saved state (a thread or container deleted, or ended for good)."""
        blob = await self._db.write(lambda c: session_states.delete_state(c, project, owner_id))
        if blob is not None:
            await self._blobs.delete(blob)

    async def discard_session_states(self, owner_ids: list[str]) -> int:
        """Delete these saved states for good: their containers are expired and their usage
        records end, in one transaction. Returns how many there were."""
        stamp = _now()
        blobs = await self._db.write(lambda c: session_states.discard_states(c, owner_ids, stamp))
        for blob in blobs:
            if blob is not None:
                await self._blobs.delete(blob)
        return len(blobs)

    # Traces (the trace viewer's)

    async def add_traces(
        self,
        finished: list[TraceRecord],
        late: dict[str, list[dict[str, Any]]],
        summarize: traces.Summarize,
    ) -> None:
        """Store finished traces and the spans that ended after their root (their traces
        summarized again with `summarize`), in one transaction."""

        def work(connection: Any) -> None:
            if finished:
                traces.insert_traces(connection, finished)
            for root_id, spans in late.items():
                traces.add_late_spans(connection, root_id, spans, summarize)

        await self._db.write(work)

    async def list_traces(
        self,
        project: str,
        where: TraceFilter,
        *,
        limit: int = 50,
        offset: int = 0,
        errors_first: bool = False,
    ) -> tuple[list[TraceRecord], bool]:
        """A page of the project's traces (without spans) and whether more follow."""
        return await self._db.read(
            lambda c: traces.list_traces(
                c, project, where, limit=limit, offset=offset, errors_first=errors_first
            )
        )

    async def get_trace(self, project: str, root_id: str) -> TraceRecord:
        return await self._db.read(lambda c: traces.get_trace(c, project, root_id))

    async def delete_traces_before(self, cutoff: int, batch: int = 500) -> int:
        """Retention: delete the traces of every project that began before `cutoff`, `batch`
        at a time (a transaction each, so other writers get their turns); return how many."""
        removed = 0
        while True:
            done = await self._db.write(lambda c: traces.delete_traces_before(c, cutoff, batch))
            removed += done
            if done < batch:
                return removed
            await asyncio.sleep(0)

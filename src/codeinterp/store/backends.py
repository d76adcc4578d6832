"""Where the store's transactions run: inline on the event loop for SQLite, else an async engine.

Every operation of the store is a synchronous function of a SQLAlchemy `Connection` (see
objects.py, files.py, usage.py, recovery.py); a `Database` runs it as one transaction, `read` or
`write`.

SQLite (`SQLiteDatabase`): the function runs right away, on the event loop's thread, with the
stdlib sqlite3 driver. A small transaction on a WAL database takes microseconds, while handing it
to a thread and back (aiosqlite does that for every statement) costs a hundred microseconds or
more each time, plus SQLAlchemy's greenlet bridging: blocking the loop for the transaction is far
cheaper than not blocking it. It also serializes writes for free. SQLite admits one writer at a
time; transactions that do not await run one after another, so the writers of this process never
meet in SQLite's busy handler (which sleeps and polls, favours no one, and gives up with "database
is locked" after the busy timeout), and one connection serves them all. A writer in another
process can still hold the lock; then BEGIN IMMEDIATE waits in the busy handler, blocking the loop
for as long as that process's write transaction takes (short ones, if it is another store).
The price: a large read (a list of thousands of rows) holds the loop while its rows are decoded.
WAL checkpoints, which fsync, are kept off the loop (checkpoints.py).

Other databases (`AsyncDatabase`, e.g. PostgreSQL with asyncpg): the same function runs through
`AsyncConnection.run_sync`, each statement awaiting the network. Those databases lock rows
themselves, so writes are not serialized here; on SQLite through an async driver (which only the
tests use, to run that path) an asyncio lock serializes this process's writers, as said above.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from codeinterp.errors import StorageBusy, StorageFull

from .checkpoints import Checkpointer, backstop_autocheckpoint
from .database import (
    BUSY_TIMEOUT_MS,
    async_engine,
    is_sqlite,
    sqlite_engine,
    transaction,
    upgrade,
)

T = TypeVar("T")
INLINE_BUSY_MS = 20  # the longest one try blocks the event loop in SQLite's busy handler


class Database(Protocol):
    """Runs a function of a connection as one transaction; a `write` one may change rows."""

    async def read(self, work: Callable[[Connection], T]) -> T: ...

    async def write(self, work: Callable[[Connection], T]) -> T: ...

    async def close(self) -> None: ...


async def open_database(url: str, *, sqlite_inline: bool = True) -> Database:
    """The database at `url`, migrated to the newest schema.

    SQLite runs inline unless `sqlite_inline` is false (for tests of the async path).
    """
    database: Database = (
        SQLiteDatabase(sqlite_engine(url))
        if sqlite_inline and is_sqlite(url)
        else AsyncDatabase(async_engine(url))
    )
    try:
        await database.write(upgrade)
    except BaseException:
        await database.close()
        raise
    return database


class SQLiteDatabase:
    """Transactions on the event loop's thread over one synchronous connection; checkpoints in
    a worker thread.

    Another process holding the write lock must not freeze the loop: SQLite's busy handler
    waits at most INLINE_BUSY_MS here, and a transaction that could not begin is tried again
    after an asynchronous pause, until BUSY_TIMEOUT_MS in all; then StorageBusy (a 503)."""

    def __init__(self, engine: Engine) -> None:
        event.listen(engine, "connect", backstop_autocheckpoint)
        self._engine = engine
        self._connection = engine.connect()
        driver = self._connection.connection.driver_connection
        assert driver is not None
        driver.execute(f"PRAGMA busy_timeout={INLINE_BUSY_MS}")  # this connection only
        self._checkpointer = Checkpointer(engine)

    async def read(self, work: Callable[[Connection], T]) -> T:
        return await self._run(work, write=False)

    async def write(self, work: Callable[[Connection], T]) -> T:
        result = await self._run(work, write=True)
        self._checkpointer.wrote()
        return result

    async def _run(self, work: Callable[[Connection], T], write: bool) -> T:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.005
        while True:
            started = False

            def marked(connection: Connection) -> T:
                nonlocal started
                started = True
                return work(connection)

            try:
                return transaction(self._connection, marked, write)
            except OperationalError as exc:
                problem = storage_problem(exc)
                if problem == "busy" and not started and time.monotonic() < deadline:
                    await asyncio.sleep(pause)  # the lock is another process's: let it finish
                    pause = min(pause * 2, 0.2)
                    continue
                raise_storage_problem(exc, problem)
                raise

    async def close(self) -> None:
        await self._checkpointer.close()
        self._connection.close()
        self._engine.dispose()


def storage_problem(exc: OperationalError) -> str | None:
    """ "full" (the disk), "busy" (another process holds the lock), or None (anything else)."""
    name = getattr(exc.orig, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL"):
        return "full"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return "busy"
    return None


def raise_storage_problem(exc: OperationalError, problem: str | None) -> None:
    if problem == "full":
        raise StorageFull() from exc
    if problem == "busy":
        raise StorageBusy(
            "The database is locked by another process and stayed locked for "
            f"{BUSY_TIMEOUT_MS // 1000} s: try again shortly.",
            retry_after=2.0,
        ) from exc


class AsyncDatabase:
    """Transactions on a pooled connection of an async engine, through run_sync."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    async def read(self, work: Callable[[Connection], T]) -> T:
        try:
            async with self._engine.connect() as connection:
                return await connection.run_sync(transaction, work, False)
        except OperationalError as exc:
            raise_storage_problem(exc, storage_problem(exc))
            raise

    async def write(self, work: Callable[[Connection], T]) -> T:
        turn: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if self._write_lock is None else self._write_lock
        )
        try:
            async with turn, self._engine.connect() as connection:
                return await connection.run_sync(transaction, work, True)
        except OperationalError as exc:
            raise_storage_problem(exc, storage_problem(exc))
            raise

    async def close(self) -> None:
        await self._engine.dispose()

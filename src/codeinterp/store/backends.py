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
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from .checkpoints import Checkpointer, backstop_autocheckpoint
from .database import async_engine, is_sqlite, sqlite_engine, transaction, upgrade

T = TypeVar("T")


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
    a worker thread."""

    def __init__(self, engine: Engine) -> None:
        event.listen(engine, "connect", backstop_autocheckpoint)
        self._engine = engine
        self._connection = engine.connect()
        self._checkpointer = Checkpointer(engine)

    async def read(self, work: Callable[[Connection], T]) -> T:
        return transaction(self._connection, work, write=False)

    async def write(self, work: Callable[[Connection], T]) -> T:
        result = transaction(self._connection, work, write=True)
        self._checkpointer.wrote()
        return result

    async def close(self) -> None:
        await self._checkpointer.close()
        self._connection.close()
        self._engine.dispose()


class AsyncDatabase:
    """Transactions on a pooled connection of an async engine, through run_sync."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    async def read(self, work: Callable[[Connection], T]) -> T:
        async with self._engine.connect() as connection:
            return await connection.run_sync(transaction, work, False)

    async def write(self, work: Callable[[Connection], T]) -> T:
        turn: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if self._write_lock is None else self._write_lock
        )
        async with turn, self._engine.connect() as connection:
            return await connection.run_sync(transaction, work, True)

    async def close(self) -> None:
        await self._engine.dispose()

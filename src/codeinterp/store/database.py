"""Opening the database: the async engine, SQLite's settings, and migration to the newest schema.

SQLite in the data directory is the default; any SQLAlchemy async URL works (PostgreSQL for several
servers). On SQLite every new connection gets WAL (readers never wait for the writer),
synchronous=NORMAL (durable at each checkpoint, fast commits), foreign_keys=ON and a busy timeout.
SQLAlchemy, not the sqlite3 driver, decides when a transaction begins (the recipe of SQLAlchemy's
SQLite docs): a read begins a deferred transaction, so all of its SELECTs see one snapshot; a write
begins IMMEDIATE, taking SQLite's write lock up front. A deferred transaction that reads and then
writes would have to upgrade its lock, and that upgrade fails with "database is locked" at once,
whatever the busy timeout, if another connection wrote in between.

Migrations are alembic scripts shipped in `migrations/`; `migrate` applies them through the async
engine's own connection (alembic's asyncio recipe), so no synchronous driver is needed.
"""

from __future__ import annotations

import os
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")
DATABASE_FILE = "codeinterp.db"
BUSY_TIMEOUT_MS = 10_000

# Execution option that marks a connection as about to write (SQLite: BEGIN IMMEDIATE).
WRITE = "codeinterp_write"

_SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",  # first: switching to WAL may have to wait
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


def default_url(data_dir: str) -> str:
    """The SQLite database in `data_dir` (the same as Settings.database)."""
    return f"sqlite+aiosqlite:///{os.path.join(data_dir, DATABASE_FILE)}"


def open_engine(url: str) -> AsyncEngine:
    """An async engine for `url`; SQLite connections are configured as the docstring says."""
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver no longer begins transactions itself
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    writes = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema up to the newest migration ("upgrade head"), in one transaction."""
    async with engine.connect() as connection:
        writer = await connection.execution_options(**{WRITE: True})
        async with writer.begin():
            await writer.run_sync(_upgrade)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code (there is no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")

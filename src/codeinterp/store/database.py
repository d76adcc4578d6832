"""Opening the database: engines, SQLite's settings, transactions, migration to the newest schema.

SQLite in the data directory is the default; any SQLAlchemy async URL works (PostgreSQL for several
servers). SQLite is opened with the standard library's synchronous driver whatever driver the URL
names (`sqlite+aiosqlite://...` in the settings), because the store runs its SQLite transactions
inline on the event loop (backends.py says why); other databases get an async engine.

On SQLite every new connection gets WAL (readers never wait for the writer), synchronous=NORMAL
(durable at each checkpoint, fast commits), foreign_keys=ON and a busy timeout. SQLAlchemy, not
the sqlite3 driver, decides when a transaction begins (the recipe of SQLAlchemy's SQLite docs): a
read begins a deferred transaction, so all of its SELECTs see one snapshot; a write begins
IMMEDIATE, taking SQLite's write lock up front. A deferred transaction that reads and then writes
would have to upgrade its lock, and that upgrade fails with "database is locked" at once, whatever
the busy timeout, if another connection wrote in between.

Migrations are alembic scripts shipped in `migrations/`; `upgrade` applies them on a connection
inside a write transaction, the same synchronous function for both kinds of engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

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

T = TypeVar("T")


def default_url(data_dir: str) -> str:
    """The SQLite database in `data_dir` (the same as Settings.database)."""
    return f"sqlite+aiosqlite:///{os.path.join(data_dir, DATABASE_FILE)}"


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_engine(url: str | URL) -> Engine:
    """A synchronous engine on the SQLite database of `url`, with one connection.

    One connection is enough because every transaction runs on the event loop's thread, one at a
    time (StaticPool hands out that one connection; with a `:memory:` database it also keeps the
    one database). sqlite3's check_same_thread stays on: a call from another thread would be a bug
    (it would bypass the serialization the loop gives), and fails loudly instead.
    """
    engine = create_engine(
        make_url(url).set(drivername="sqlite+pysqlite"),
        poolclass=StaticPool,
        connect_args={"check_same_thread": True},
    )
    _listen_sqlite(engine)
    return engine


def async_engine(url: str | URL) -> AsyncEngine:
    """An async engine for `url`; SQLite connections (aiosqlite) are configured as above."""
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        _listen_sqlite(engine.sync_engine)
    return engine


def _listen_sqlite(engine: Engine) -> None:
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", _begin_sqlite)


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


def transaction(connection: Connection, work: Callable[[Connection], T], write: bool) -> T:
    """Run `work` in one transaction on `connection`: committed if it returns, else rolled back.

    `write` marks a transaction that will write (on SQLite it begins IMMEDIATE, see above).
    """
    connection.execution_options(**{WRITE: write})
    with connection.begin():
        return work(connection)


def upgrade(connection: Connection) -> None:
    """Bring the schema up to the newest migration ("upgrade head"), in the caller's transaction."""
    command.upgrade(alembic_config(connection), "head")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code (there is no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config

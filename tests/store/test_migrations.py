"""The schema: migrations build exactly the ORM's tables, and SQLite runs in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from codeinterp.store import Store
from codeinterp.store.database import DATABASE_FILE, alembic_config
from codeinterp.store.tables import Base


async def migrated_db(tmp_path: Path) -> Path:
    await (await Store.open(str(tmp_path / "data"))).close()
    return tmp_path / "data" / DATABASE_FILE


async def test_migrations_match_the_orm(tmp_path: Path) -> None:
    """After `upgrade head`, alembic finds no difference between the database and tables.py."""
    engine = create_engine(f"sqlite:///{await migrated_db(tmp_path)}")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, Base.metadata) == []
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            assert context.get_current_revision() == head
    finally:
        engine.dispose()


async def test_downgrade_then_upgrade(tmp_path: Path) -> None:
    """Every migration can be undone and redone."""
    engine = create_engine(f"sqlite:///{await migrated_db(tmp_path)}")
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
            assert MigrationContext.configure(connection).get_current_revision() is None
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


async def test_sqlite_settings(tmp_path: Path) -> None:
    """The database file is in WAL mode and every table's seq uses AUTOINCREMENT (seqs are
    never reused), also in the tables a migration has since copied to alter them."""
    db = sqlite3.connect(await migrated_db(tmp_path))
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        for name in Base.metadata.tables:
            sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
            assert "seq INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT" in sql[0], (name, sql)
    finally:
        db.close()


async def test_reopening_migrates_nothing_twice(tmp_path: Path) -> None:
    """Opening an up-to-date store again leaves the schema as it was."""
    path = await migrated_db(tmp_path)
    before = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master").fetchall()
    await (await Store.open(str(tmp_path / "data"))).close()
    after = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master").fetchall()
    assert after == before


async def test_explicit_url(tmp_path: Path) -> None:
    """A database URL outside the data directory is honoured, its directory created."""
    db = tmp_path / "elsewhere" / "nested" / "store.db"
    store = await Store.open(str(tmp_path / "data"), f"sqlite+aiosqlite:///{db}")
    try:
        await store.create_object("thread", "p1", "t1", {})
    finally:
        await store.close()
    assert db.is_file()
    assert not (tmp_path / "data" / DATABASE_FILE).exists()
    assert (tmp_path / "data" / "blobs").is_dir()


async def test_a_state_saved_before_0006_survives_the_upgrade(tmp_path: Path) -> None:
    """0006 copies session_states to make `blob` nullable: the rows come through unchanged."""
    database = await migrated_db(tmp_path)
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0005")
        db = sqlite3.connect(database)
        with db:
            db.execute(
                "INSERT INTO session_states (id, project, created_at, owner_kind, session_id, "
                "blob, bytes, saved_at, body) VALUES ('cntr_1', 'p1', 1, 'container', 'sess_1', "
                "'blob-1', 10, 2, '{\"files\": {}}')"
            )
        db.close()
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
    finally:
        engine.dispose()
    db = sqlite3.connect(database)
    try:
        rows = db.execute(
            "SELECT seq, id, project, owner_kind, session_id, blob, bytes, saved_at, body "
            "FROM session_states"
        ).fetchall()
        assert rows == [
            (1, "cntr_1", "p1", "container", "sess_1", "blob-1", 10, 2, '{"files": {}}')
        ]
    finally:
        db.close()

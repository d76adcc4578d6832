"""SQLite on the event loop: one connection, owned by the loop's thread; checkpoints elsewhere."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import ProgrammingError

from codeinterp.store import Store
from codeinterp.store.backends import SQLiteDatabase
from codeinterp.store.checkpoints import CHECKPOINT_EVERY
from codeinterp.store.database import DATABASE_FILE


async def test_a_call_from_another_thread_fails_loudly(store: Store) -> None:
    """The connection belongs to the loop's thread: a call from elsewhere raises, harmlessly."""
    await store.create_object("thread", "p1", "t1", {})
    with pytest.raises(ProgrammingError, match="same thread"):
        await asyncio.to_thread(asyncio.run, store.create_object("thread", "p1", "t2", {}))
    assert (await store.get_object("thread", "p1", "t1")).id == "t1"
    await store.create_object("thread", "p1", "t3", {})
    assert [t.id for t in (await store.list_objects("thread", "p1")).items] == ["t3", "t1"]


async def test_checkpoints_let_the_wal_start_over(tmp_path: Path) -> None:
    """After CHECKPOINT_EVERY writes the thread checkpoints, and the next write restarts the WAL.

    SQLite's own checkpoint, which would run on the loop, waits for 10,000 pages instead.
    """
    store = await Store.open(str(tmp_path / "data"))
    try:
        assert isinstance(store._db, SQLiteDatabase)
        for i in range(CHECKPOINT_EVERY):
            await store.create_object("thread", "p1", f"t{i}", {"pad": "x" * 2000})
        await store._db._checkpointer.wait()
        await store.create_object("thread", "p1", "t-last", {"pad": "x" * 2000})
        db = sqlite3.connect(tmp_path / "data" / DATABASE_FILE)
        try:
            _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            db.close()
        assert 0 < frames < 20  # the last write only, not CHECKPOINT_EVERY writes' pages
    finally:
        await store.close()


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///:memory:", "sqlite://"])
async def test_in_memory_database(tmp_path: Path, url: str) -> None:
    """An in-memory database is one database for the whole store (one connection)."""
    store = await Store.open(str(tmp_path / "data"), url)
    try:
        for i in range(CHECKPOINT_EVERY + 1):  # a checkpoint of nothing, harmless
            await store.create_object("thread", "p1", f"t{i}", {})
        assert (await store.get_object("thread", "p1", "t0")).id == "t0"
    finally:
        await store.close()
    assert not (tmp_path / "data" / DATABASE_FILE).exists()


async def test_synchronous_url(tmp_path: Path) -> None:
    """A sqlite:// URL (the stdlib driver) is as good as sqlite+aiosqlite://."""
    db = tmp_path / "other.db"
    store = await Store.open(str(tmp_path / "data"), f"sqlite:///{db}")
    try:
        await store.create_object("thread", "p1", "t1", {})
    finally:
        await store.close()
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("SELECT id FROM threads").fetchall() == [("t1",)]
    finally:
        connection.close()

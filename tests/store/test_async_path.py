"""The store's tests again, through the async engine: the path PostgreSQL (asyncpg) takes.

On a database other than SQLite each operation runs through AsyncConnection.run_sync on a pooled
connection of an async engine, with no write lock of our own. That path is run here on SQLite with
aiosqlite (the only async driver installed), where the store adds its asyncio write lock.

Every test of the modules below that takes the `store` fixture is collected here again, under
the name test_<module>__<test>, and gets this module's `store` fixture instead of conftest's.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from codeinterp.store import Store
from codeinterp.store.backends import AsyncDatabase

from . import (
    test_concurrency,
    test_files,
    test_objects,
    test_paging,
    test_recovery,
    test_sessions,
    test_updates,
)

for _module in (
    test_concurrency,
    test_files,
    test_objects,
    test_paging,
    test_recovery,
    test_sessions,
    test_updates,
):
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and "store" in inspect.signature(_test).parameters:
            _short = _module.__name__.rpartition(".test_")[2]
            globals()[f"test_{_short}__{_name[len('test_') :]}"] = _test


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A freshly migrated store in tmp_path/data whose SQLite runs through the async engine."""
    opened = await Store._open(str(tmp_path / "data"), None, sqlite_inline=False)
    assert isinstance(opened._db, AsyncDatabase)
    yield opened
    await opened.close()

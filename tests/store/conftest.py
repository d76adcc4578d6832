"""Fixtures for the store tests: a real Store on a SQLite file in the test's tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from codeinterp.store import Store


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A freshly migrated store in tmp_path/data, closed after the test."""
    opened = await Store.open(str(tmp_path / "data"))
    yield opened
    await opened.close()

"""Shared fixtures: one real Sandbox (zygote, jail, kernel) for the whole test run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from codeinterp.sandbox import Sandbox, SandboxConfig, Session
from codeinterp.sandbox.doctor import isolation_problems


def isolation_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for namespaces, cgroups and seccomp"
    problems = isolation_problems()
    return "; ".join(problems) if problems else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = isolation_skip_reason()
    if reason is None:
        return
    for item in items:
        if "root" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest_asyncio.fixture(scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    """The engine, started once: isolation on, a small warm pool, a short interrupt grace."""
    box = await Sandbox.start(SandboxConfig(pool_size=2, interrupt_grace=1.0))
    yield box
    await box.close()


@pytest_asyncio.fixture
async def session(sandbox: Sandbox) -> AsyncIterator[Session]:
    """A fresh session per test, closed afterwards."""
    created = await sandbox.create_session()
    yield created
    await created.close()

"""Many sessions asked for at once all come: spawn requests queue up on the zygote's socket
(full, past ~100 waiting), and each one is sent and answered."""

from __future__ import annotations

import asyncio

import pytest

from codeinterp.sandbox import Sandbox, SandboxConfig

pytestmark = [pytest.mark.root, pytest.mark.slow]


async def test_two_hundred_sessions_asked_for_at_once_all_start() -> None:
    """Before: the event loop keeps one writer per socket, so concurrent sends to a full zygote
    socket replaced each other's and dozens of creates waited forever."""
    box = await Sandbox.start(SandboxConfig(pool_size=0))
    try:
        sessions = await asyncio.wait_for(
            asyncio.gather(*(box.create_session() for _ in range(200))), timeout=90
        )
        assert len({s.id for s in sessions}) == 200
        answers = await asyncio.gather(*(s.run("6 * 7") for s in sessions[:5]))
        assert [a.text for a in answers] == ["42"] * 5
        await asyncio.gather(*(s.close() for s in sessions))
    finally:
        await box.close()

"""The engine recovers when its own processes die under it."""

from __future__ import annotations

import asyncio
import os
import signal

from codeinterp.sandbox import Sandbox, SandboxConfig


async def test_a_killed_zygote_is_replaced_and_sessions_come_back() -> None:
    """After SIGKILL of the zygote, a session's next execution runs in a new interpreter and
    says its state was lost; its files remain, and new sessions can be created."""
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session()
        await session.upload("kept.txt", b"files survive")
        assert (await session.run("x = 1")).status == "ok"
        old_zygote = sandbox.zygote.pid
        os.kill(old_zygote, signal.SIGKILL)
        await asyncio.sleep(0.2)

        lost = await session.run("x")
        assert lost.status == "error"
        assert lost.error is not None and lost.error.name == "NameError"
        assert lost.state_lost
        assert "killed by signal 9 while idle" in lost.message
        assert sandbox.zygote.pid != old_zygote

        again = await session.run("open('/mnt/data/kept.txt').read()")
        assert (again.status, again.text) == ("ok", "'files survive'")
        fresh = await sandbox.create_session()
        assert (await fresh.run("2 + 2")).text == "4"


async def test_a_sandbox_made_without_start_says_how_to_make_one() -> None:
    """`Sandbox(config)` alone has no zygote and no runtime directory: asking it for a session is
    a clear error, not a missing directory deep in the workspace code."""
    from codeinterp.errors import SandboxError

    sandbox = Sandbox(SandboxConfig(pool_size=0))
    try:
        await sandbox.create_session()
    except SandboxError as exc:
        assert "Sandbox.start()" in str(exc)
    else:
        raise AssertionError("create_session worked on a sandbox that was never started")

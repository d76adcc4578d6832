"""Many sessions asked for at once all come: spawn requests queue up on the zygote's socket
(full, past ~100 waiting), and each one is sent and answered; and more sessions than the
open files limit the server was started with allows for."""

from __future__ import annotations

import asyncio
import os
import resource

import pytest

from codeinterp.sandbox import Sandbox, SandboxConfig, linux

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


def _open_files_limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


async def test_sessions_past_the_inherited_open_files_limit_all_start() -> None:
    """The host holds three descriptors per session: with the soft limit it was given (1,024
    is usual) it stopped at ~330 sessions. The Sandbox raises it to the hard limit, and the
    zygote keeps its own at or below the ceiling its sessions close up to."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        box = await Sandbox.start(SandboxConfig(pool_size=0))
        try:
            raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            assert raised > 256 and raised >= min(hard, 4096)
            zygote_soft, _ = _open_files_limits(box.zygote.pid)
            assert 256 < zygote_soft <= linux.FD_CEILING
            sessions = []
            for _ in range(5):  # 100 sessions: over 300 descriptors here
                sessions += await asyncio.gather(*(box.create_session() for _ in range(20)))
            answers = await asyncio.gather(*(s.run("6 * 7") for s in sessions))
            assert [a.text for a in answers] == ["42"] * 100
            await asyncio.gather(*(s.close() for s in sessions))
        finally:
            await box.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_sessions_closed_all_at_once_leave_no_cgroup_behind() -> None:
    """Hundreds of sessions closed together take seconds to exit, longer than one removal
    waits: groups that are still busy are removed later, at the latest when the Sandbox closes.
    Before, each was given up on (and left behind for good) after its first wait."""
    box = await Sandbox.start(SandboxConfig(pool_size=0))
    assert box.cgroups is not None
    bases = box.cgroups.base_directories
    try:
        sessions = []
        for _ in range(10):
            sessions += await asyncio.gather(*(box.create_session() for _ in range(20)))
        await asyncio.gather(*(s.run("1") for s in sessions))
        await asyncio.gather(*(s.close() for s in sessions))
    finally:
        await box.close()
    assert [b for b in bases if os.path.exists(b)] == []
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if box.runtime_dir in line]

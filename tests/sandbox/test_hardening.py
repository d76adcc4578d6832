"""Attacks on the host side of a session: hostile frames, planted FIFOs, writable submounts,
closing mid-execution, and cleanup that must never touch what is not ours."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time
from pathlib import Path

import pytest

from codeinterp.errors import InvalidRequest, SessionClosed
from codeinterp.sandbox import Sandbox, SandboxConfig, SandboxPolicy, Session

CHANNEL_FD = """
import os, stat
def _is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False
channel = [fd for fd in map(int, os.listdir('/proc/self/fd')) if _is_socket(fd)][0]
"""

SEND_FRAME = (
    CHANNEL_FD
    + """
import json, struct
from codeinterp.sandbox.kernel import Kernel
def send(body: bytes):
    os.write(channel, struct.pack('>I', len(body)) + body)
"""
)


async def test_deeply_nested_frame_ends_the_session_cleanly(session: Session) -> None:
    """A frame of 200,000 nested brackets does not hang the host: the execution ends, the
    session restarts, and it answers again."""
    ex = await session.run(
        SEND_FRAME + "send(b'[' * 200_000)\nimport time\ntime.sleep(30)", timeout=None
    )
    assert ex.status == "killed"
    assert ex.state_lost
    assert (await session.run("1 + 1")).text == "2"


async def test_error_frames_count_against_the_results_budget(session: Session) -> None:
    """Twenty forged 10 MB error frames keep at most the results cap in the host."""
    code = SEND_FRAME + (
        "body = json.dumps({'ev': 'error', 'id': Kernel.current._execution_id, 'name': 'E',"
        " 'value': 'x' * 10_000_000, 'traceback': ''}).encode()\n"
        "for _ in range(20):\n    send(body)\n"
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ex = await session.run(code, timeout=60)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert ex.status in ("ok", "error")
    assert ex.truncated.get("results", 0) >= 20 * 10_000_000 - session.policy.limits.results
    assert grown_kib < 3 * session.policy.limits.results // 1024
    assert (await session.run("1 + 1")).text == "2"


async def test_planted_fifo_never_blocks_an_upload(session: Session) -> None:
    """Uploading over a FIFO the sandbox planted is refused at once instead of hanging."""
    await session.run("import os\nos.mkfifo('/mnt/data/report.csv')")
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="not a regular file"):
        await asyncio.wait_for(session.upload("report.csv", b"data"), 5)
    assert time.monotonic() - started < 2


async def test_submounts_of_readonly_binds_are_readonly(sandbox: Sandbox, tmp_path: Path) -> None:
    """A mount inside a read-only bind is read-only in the session too."""
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(shared / "sub")], check=True)
    try:
        policy = SandboxPolicy(readonly_binds=(*SandboxPolicy().readonly_binds, str(shared)))
        async with await sandbox.create_session(policy) as session:
            ex = await session.run(
                f"import errno\ntry:\n    open('{shared}/sub/x', 'w')\n"
                f"except OSError as e:\n    print(errno.errorcode[e.errno])"
            )
        assert ex.stdout.strip() == "EROFS"
        assert not (shared / "sub" / "x").exists()
    finally:
        subprocess.run(["umount", str(shared / "sub")], check=True)


async def test_close_during_an_execution_ends_it(sandbox: Sandbox) -> None:
    """Closing a session while its code runs ends that execution at once and later calls are
    refused as closed."""
    session = await sandbox.create_session()
    running = asyncio.create_task(session.run("import time\ntime.sleep(60)", timeout=None))
    await asyncio.sleep(0.5)
    await session.close()
    ex = await asyncio.wait_for(running, 10)
    assert ex.status == "killed" and "closed" in ex.message
    with pytest.raises(SessionClosed):
        await session.run("1")


async def test_ping_keeps_output_written_between_executions(session: Session) -> None:
    """Output a background thread writes after an execution ended survives a ping and arrives
    with the next execution."""
    await session.run(
        "import threading, time, os\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), os.write(1, b'late\\n'))).start()"
    )
    await asyncio.sleep(0.6)
    await session.ping()
    assert (await session.run("pass")).stdout == "late\n"


async def test_a_custom_runtime_dir_never_removes_its_neighbours(tmp_path: Path) -> None:
    """Starting with runtime_dir in a shared directory leaves old neighbours alone."""
    neighbour = tmp_path / "0123abcd"
    neighbour.mkdir()
    (neighbour / "precious.txt").write_text("keep me")
    old = time.time() - 3600
    os.utime(neighbour, (old, old))
    config = SandboxConfig(pool_size=0, runtime_dir=str(tmp_path / "codeinterp"))
    async with await Sandbox.start(config):
        pass
    assert (neighbour / "precious.txt").read_text() == "keep me"

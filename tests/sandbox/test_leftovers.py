"""A server that dies without closing leaves nothing behind once the next one starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from codeinterp.sandbox import Sandbox, SandboxConfig

CRASHING_HOST = """
import asyncio, os, sys
from codeinterp.sandbox import Sandbox, SandboxConfig

async def main():
    sandbox = await Sandbox.start(SandboxConfig(pool_size=0))
    session = await sandbox.create_session()
    await session.upload("data.txt", b"x" * 1000)
    print(session.uid, sandbox.runtime_dir, session.workspace.path, *session.cgroup.dirs.values(),
          flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def _processes_of(uid: int) -> list[int]:
    """Live processes of `uid` (zombies wait for this machine's pid 1 to reap them)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                if os.stat(f"/proc/{name}").st_uid == uid and state != "Z":
                    found.append(int(name))
            except OSError:
                pass
    return found


async def test_next_sandbox_removes_what_a_killed_one_left() -> None:
    """After SIGKILL of a host process, its runtime dir, workspace mount and cgroups are removed
    by the next Sandbox to start, and its session processes are gone."""
    with subprocess.Popen(
        [sys.executable, "-c", CRASHING_HOST], stdout=subprocess.PIPE, text=True
    ) as host:
        assert host.stdout is not None
        uid, runtime_dir, workspace, *cgroup_dirs = host.stdout.readline().split()
        assert _mounted(workspace) and all(os.path.isdir(d) for d in cgroup_dirs)
        host.send_signal(signal.SIGKILL)
    time.sleep(0.2)  # the zygote and the session die with their parent
    assert _processes_of(int(uid)) == []

    assert os.path.isdir(runtime_dir)  # nothing has cleaned up yet
    async with await Sandbox.start(SandboxConfig(pool_size=0)):
        pass
    assert not os.path.exists(runtime_dir)
    assert not _mounted(workspace)
    for directory in cgroup_dirs:
        assert not os.path.exists(directory)
        assert not os.path.exists(os.path.dirname(directory))

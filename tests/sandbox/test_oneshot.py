"""One-shot tasks through the engine's own API: `Sandbox.run_task` and `Sandbox.map`."""

from __future__ import annotations

import json

import pytest

from codeinterp.errors import InvalidRequest
from codeinterp.sandbox import Limits, Sandbox, SandboxConfig, SandboxPolicy, Task

pytestmark = pytest.mark.root


async def test_map_runs_each_task_in_a_session_of_its_own() -> None:
    async with await Sandbox.start(SandboxConfig(pool_size=2)) as sandbox:
        tasks: list[Task | str] = [
            Task("import os; print(os.getuid()); x = 1", expected_output=None),
            "print('x' in globals())",
            Task("print(input())", stdin="from stdin\n", expected_output="from stdin"),
            Task("open('made.txt', 'w').write('abc')", return_files=True),
            Task("1", files={"../out": b""}),  # refused before any session is made
        ]
        results = {i: r async for i, r in sandbox.map(tasks, concurrency=3)}
        assert sorted(results) == [0, 1, 2, 3, 4]
        assert isinstance(results[4], InvalidRequest)
        ok = {i: r for i, r in results.items() if i != 4}
        assert all(not isinstance(r, Exception) and r.status == "ok" for r in ok.values()), ok
        assert results[1].stdout == "False\n"  # type: ignore[union-attr]
        assert results[2].passed is True  # type: ignore[union-attr]
        assert results[3].files == {"made.txt": b"abc"}  # type: ignore[union-attr]
        # every session was closed when its task ended
        assert sandbox.sessions == {}


async def test_run_task_closes_its_session_even_when_the_code_fails() -> None:
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        result = await sandbox.run_task("raise SystemExit(3)")
        assert result.status == "error" and result.execution["error"]["name"] == "SystemExit"
        assert sandbox.sessions == {}
        result = await sandbox.run_task(Task("import time; time.sleep(5)", timeout=0.3))
        assert result.status == "timeout"
        assert sandbox.sessions == {}


LEAVE_TRACES = """
import os, subprocess, ctypes
SECRET = 'pssst'
for path in ('/mnt/data/secret', '/tmp/secret', '/dev/shm/secret', os.path.expanduser('~/secret')):
    open(path, 'w').write('pssst')
subprocess.Popen(['sleep', '419'], start_new_session=True)
os.system('(sleep 421 &)')  # an orphan, reparented to the task's pid 1
libc = ctypes.CDLL(None, use_errno=True)
assert libc.shmget(0x5EC2E8, 4096, 0o1666) >= 0
print(os.getuid())
"""

LOOK = """
import os, ctypes, json, pwd
def listing(path):
    return sorted(os.listdir(path))
def cmdlines():
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            found.append(open(f'/proc/{pid}/cmdline', 'rb').read().decode())
        except OSError:
            pass
    return found
libc = ctypes.CDLL(None, use_errno=True)
print(json.dumps({
    'files': listing('/mnt/data') + listing('/tmp') + listing('/dev/shm')
             + listing(os.path.expanduser('~')),
    'variable': 'SECRET' in globals(),
    'processes': cmdlines(),
    'shm': libc.shmget(0x5EC2E8, 0, 0) >= 0,
    'uid': os.getuid(),
    'user': pwd.getpwuid(os.getuid()).pw_name,
    'passwd': open('/etc/passwd').read(),
}))
"""


async def test_one_task_after_another_in_one_jail_sees_nothing_of_the_last() -> None:
    """Tasks run one after another reuse one task jail (its network, root and cgroup); what a
    task leaves (files in every writable place, processes, an orphan, a SysV segment) is gone
    for the next, which runs as another uid that its own passwd names."""
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        assert sandbox.task_jails is not None
        seen = []
        for _ in range(3):
            left = await sandbox.run_task(LEAVE_TRACES)
            assert left.status == "ok", left.execution
            looked = await sandbox.run_task(LOOK)
            assert looked.status == "ok", looked.execution
            seen.append((int(left.stdout), json.loads(looked.stdout)))
        assert sandbox.task_jails.count == 1  # every task ran in the same jail
        uids = [uid for uid, _ in seen] + [view["uid"] for _, view in seen]
        assert len(set(uids)) == len(uids), uids
        for _, view in seen:
            # (/tmp may hold the directories of a Python environment that lives under /tmp on
            # the host, bound read-only at their paths: a CI checkout.)
            assert not any("secret" in name for name in view["files"]), view
            assert view["variable"] is False and view["shm"] is False
            assert not any("sleep" in line for line in view["processes"]), view["processes"]
            assert len(view["processes"]) == 1  # the task's own REPL, nothing else
            assert view["user"] == "sandbox"
            assert str(view["uid"]) in view["passwd"]
            assert all(str(uid) not in view["passwd"] for uid, _ in seen)


async def test_tasks_fork_from_the_zygote_that_has_what_they_import() -> None:
    """Code that imports the preloaded library set runs in the full zygote's fork (pandas is
    there before the import runs); other code in the light one, where a chart still comes back."""
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        heavy = await sandbox.run_task(
            "import sys\nprint('pandas' in sys.modules)  # import pandas"
        )
        light = await sandbox.run_task("import sys\nprint('pandas' in sys.modules)")
        assert (heavy.stdout, light.stdout) == ("True\n", "False\n")
        chart = await sandbox.run_task(
            "import sys\nplt = __import__('matplotlib.pyplot').pyplot\nplt.plot([1, 2, 3])"
        )
        assert chart.status == "ok", chart.execution
        assert any("image/png" in r["data"] for r in chart.execution["results"]), chart.execution


async def test_a_task_killed_by_its_limits_leaves_the_jail_fit_for_the_next() -> None:
    memory = 256 * 1024 * 1024
    policy = SandboxPolicy(limits=Limits(memory=memory))
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        timed_out = await sandbox.run_task(Task("while True: pass", timeout=0.5), policy)
        assert timed_out.status == "timeout"
        oom = await sandbox.run_task(
            "import ctypes, mmap\n"
            "m = mmap.mmap(-1, 1 << 30)\n"
            "for i in range(0, 1 << 30, 4096): m[i] = 1",
            policy,
        )
        assert oom.status == "oom", oom.execution
        after = await sandbox.run_task(Task("print(6 * 7)", expected_output="42"), policy)
        assert after.passed is True
        assert sandbox.task_jails is not None and sandbox.task_jails.count == 1

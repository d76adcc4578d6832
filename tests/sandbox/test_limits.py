"""CPU quota and rlimits: the limits a policy names are the limits code meets."""

from __future__ import annotations

import json
import time

from codeinterp.sandbox import Sandbox, SandboxPolicy, Session

BUSY_TWO_PROCESSES = """
import multiprocessing, time
def spin(seconds):
    end = time.time() + seconds
    while time.time() < end:
        pass
workers = [multiprocessing.Process(target=spin, args=(1.5,)) for _ in range(2)]
for w in workers: w.start()
for w in workers: w.join()
"""


async def test_cpu_quota_holds_two_busy_processes_to_half_a_cpu(sandbox: Sandbox) -> None:
    """With cpus=0.5, two processes spinning for 1.5 s use about 0.75 CPU-seconds, not 3."""
    policy = SandboxPolicy().with_limits(cpus=0.5)
    async with await sandbox.create_session(policy) as session:
        before = session.stats().cpu_seconds
        started = time.monotonic()
        ex = await session.run(BUSY_TWO_PROCESSES, timeout=30)
        wall = time.monotonic() - started
        assert ex.status == "ok", ex.error
        used = session.stats().cpu_seconds - before
    assert used / wall < 0.65  # the quota is 0.5 CPU; without it this is close to 2


RLIMITS = """
import json, resource
names = ["RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE"]
limits = {n: resource.getrlimit(getattr(resource, n)) for n in names}
try:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard * 2, hard * 2))
    raised = "raised"
except (ValueError, OSError) as exc:
    raised = type(exc).__name__
files = []
try:
    for _ in range(5000):
        files.append(open("/dev/null"))
except OSError as exc:
    opened = (len(files), exc.errno)
print(json.dumps({"limits": limits, "raise": raised, "opened": opened}))
"""


async def test_rlimits_are_set_and_cannot_be_raised(session: Session) -> None:
    """Core dumps are off; open files, address space, processes and file size are bounded by
    the policy, and sandboxed code cannot raise a hard limit."""
    ex = await session.run(RLIMITS)
    assert ex.status == "ok", ex.error
    found = json.loads(ex.stdout.strip().splitlines()[-1])
    lim = session.policy.limits
    assert found["limits"]["RLIMIT_CORE"] == [0, 0]
    assert found["limits"]["RLIMIT_NOFILE"] == [lim.open_files, lim.open_files]
    assert found["limits"]["RLIMIT_AS"] == [lim.address_space, lim.address_space]
    assert found["limits"]["RLIMIT_NPROC"] == [lim.processes, lim.processes]
    assert found["limits"]["RLIMIT_FSIZE"][1] == max(lim.workspace, lim.tmp)
    assert found["raise"] == "ValueError"
    count, errno_ = found["opened"]
    assert count < lim.open_files and errno_ == 24  # EMFILE

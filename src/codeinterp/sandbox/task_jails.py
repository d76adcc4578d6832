"""Task jails: the namespaces and cgroup of a one-shot task, made once and then used by one task
after another, so that a task costs a process and a few mounts instead of a whole session.

A session's jail makes a network namespace, a root of some forty mounts, a cgroup in every
hierarchy, and tears all of it down again: about half of the ~20 ms of CPU a fresh session costs
here. None of that holds anything of a task once its processes are gone, so a task jail keeps
it: the zygote holds the namespaces open (jail.JAIL_BUILD_STEPS), and each task's process joins
them and takes private copies of everything a task can write or see (jail.enter_task_jail).

A jail runs one task at a time. It is handed to the next only once its cgroup holds no process
(every process of the last task is gone), its memory peak reset.
Each task still gets its own uid, workspace, pid, mount and IPC namespaces, so nothing one task
leaves behind reaches the next; a jail that cannot be emptied is dropped, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass

from .cgroups import CgroupManager, SessionCgroup
from .policy import SandboxPolicy
from .zygote_client import ZygoteClient

log = logging.getLogger("codeinterp.sandbox")

EMPTY_WAIT_SECONDS = 5.0  # for a finished task's processes to be gone before the jail is dropped
IDLE_JAILS = 16  # kept per zygote and policy for the next tasks; more are dropped on release


@dataclass(eq=False)
class TaskJail:
    zygote: ZygoteClient
    number: int  # the zygote's name for it
    policy: SandboxPolicy
    cgroup: SessionCgroup
    tasks: int = 0  # run in it so far


class TaskJails:
    """The task jails of one Sandbox: made on demand, per zygote and policy."""

    def __init__(self, cgroups: CgroupManager, new_root: str) -> None:
        self._cgroups = cgroups
        self._new_root = new_root
        self._idle: defaultdict[tuple[int, SandboxPolicy], list[TaskJail]] = defaultdict(list)
        self._busy: set[TaskJail] = set()
        self._closed = False

    @property
    def count(self) -> int:
        return len(self._busy) + sum(len(idle) for idle in self._idle.values())

    async def acquire(self, zygote: ZygoteClient, policy: SandboxPolicy) -> TaskJail:
        """A jail of `zygote` for `policy`, idle or made now; the caller has it alone until
        `release`."""
        idle = self._idle[(id(zygote), policy)]
        while idle:
            jail = idle.pop()
            if jail.zygote.alive:
                self._busy.add(jail)
                return jail
            await self._drop(jail)
        cgroup = await asyncio.to_thread(
            self._cgroups.create, f"jail-{secrets.token_hex(6)}", policy.limits
        )
        try:
            number = await zygote.make_jail(policy.to_dict(), cgroup.join_paths, self._new_root)
        except BaseException:
            await self._remove_cgroup(cgroup)
            raise
        jail = TaskJail(zygote, number, policy, cgroup)
        self._busy.add(jail)
        return jail

    async def wait_empty(self, jail: TaskJail) -> None:
        """Until no process is left in `jail` (for at most EMPTY_WAIT_SECONDS): the processes
        a task left may still be exiting for a moment after its REPL's end is known (the REPL
        is pid 1 of the task's namespace: as it exits, the kernel kills the rest)."""
        deadline = time.monotonic() + EMPTY_WAIT_SECONDS
        while jail.cgroup.process_count() and time.monotonic() < deadline:
            await asyncio.sleep(0.0005)

    async def release(self, jail: TaskJail) -> None:
        """Take `jail` back once its last task's processes are gone; dropped (its cgroup
        removed, stragglers killed) if they are not gone in time, if its zygote died, or if
        enough jails are idle already."""
        self._busy.discard(jail)
        jail.tasks += 1
        await self.wait_empty(jail)
        idle = self._idle[(id(jail.zygote), jail.policy)]
        if (
            self._closed
            or jail.cgroup.process_count()
            or not jail.zygote.alive
            or len(idle) >= IDLE_JAILS
        ):
            await self._drop(jail)
            return
        jail.cgroup.reset_peak_memory()
        idle.append(jail)

    async def close(self) -> None:
        """Drop every idle jail (busy ones are dropped as their tasks end: see `release`)."""
        self._closed = True
        idle = [jail for jails in self._idle.values() for jail in jails]
        self._idle.clear()
        for jail in idle:
            await self._drop(jail)

    async def _drop(self, jail: TaskJail) -> None:
        with contextlib.suppress(Exception):
            await jail.zygote.drop_jail(jail.number)
        await self._remove_cgroup(jail.cgroup)

    async def _remove_cgroup(self, cgroup: SessionCgroup) -> None:
        try:
            await asyncio.to_thread(cgroup.remove, 5)
        except OSError as exc:
            log.warning("task jail cgroup not removed yet (%s)", exc)
            self._cgroups.defer_removal(cgroup)

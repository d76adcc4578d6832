"""`Sandbox`: the engine's entry point. It owns the zygote, the cgroups, the runtime directory and
a warm pool of ready sessions, and creates `Session`s from policies.

    async with await Sandbox.start() as sandbox:
        session = await sandbox.create_session()
        execution = await session.run("1 + 1")
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import resource
import secrets
import shutil
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from codeinterp.errors import InvalidRequest, IsolationUnavailable, LimitReached, SandboxError

from . import doctor, environments, leftovers, linux, oneshot
from .cgroups import CgroupManager
from .oneshot import Task, TaskResult
from .policy import SECCOMP_PROFILES, SandboxPolicy
from .session import KernelProcess, Session, SessionNetwork
from .task_jails import TaskJail, TaskJails
from .workspace import Workspace
from .zygote_client import ZygoteClient

log = logging.getLogger("codeinterp.sandbox")

# Per-session host uids come from [UID_FLOOR, UID_FLOOR + 2**30): each Sandbox picks a random
# block, so two servers on one machine do not share uids by accident.
UID_FLOOR = 1 << 20
UID_BLOCK = 1 << 16
PIPE_BYTES = 1 << 20  # a restore's pipe: fewer turns between the host filling it and the session
REFILL_QUIET = 0.1  # seconds without a hand-out before the pool is refilled (unless empty)


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the new soft limit.

    The host holds three descriptors per live session (channel, stdout and stderr pipes) and the
    zygote, which inherits the limit, one more: the usual soft limit of 1,024 stopped a server
    at ~330 sessions. The event loop uses epoll, so descriptors past 1,024 are fine here.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            log.warning("cannot raise the open files limit from %d to %d", soft, target)
    return soft


def _feed(source: int, pipe: int) -> None:
    """Copy the file `source` into `pipe` until the end, or until the reader is gone; close
    both. (In a worker thread: the pipe fills up until the session reads.)"""
    try:
        while os.sendfile(pipe, source, None, 1 << 20) > 0:
            pass
    except OSError:  # the session stopped reading: it reports why itself
        pass
    finally:
        os.close(source)
        os.close(pipe)


def default_seccomp_profile() -> str:
    """CODEINTERP_SECCOMP_PROFILE ("deny" or "allow"), else "deny"."""
    return os.environ.get("CODEINTERP_SECCOMP_PROFILE", "").strip().lower() or "deny"


def default_cache_dir() -> str:
    if os.geteuid() == 0:
        return "/var/cache/codeinterp"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "codeinterp")


@dataclass(frozen=True)
class SandboxConfig:
    python: str = (
        sys.executable
    )  # interpreter of the sandbox environment (any venv with codeinterp)
    policy: SandboxPolicy = field(default_factory=SandboxPolicy)  # default for new sessions
    pool_size: int = 16  # ready sessions for the default policy (~11 MB each); 0: no pool
    # An environment's sessions (policy.packages) fork from a zygote of its own that has its
    # modules imported, started on its first session, for at most this many environments (the
    # others fork from the main zygote); each keeps env_pool_size ready sessions of the policy
    # they were first asked with.
    environment_zygotes: int = 4
    env_pool_size: int = 2
    runtime_dir: str | None = None  # default: /run/codeinterp/<instance>
    cache_dir: str | None = None  # persistent caches (matplotlib's font list)
    interrupt_grace: float = 2.0  # seconds between SIGINT and SIGKILL on timeout or cancel
    start_timeout: float = 30.0  # seconds for one session to become ready
    unsafe_no_sandbox: bool = False  # run sessions without any isolation (explicit opt-in)
    # The seccomp profile of every session whose policy names none (seccomp_profile=None, the
    # default): "deny" or "allow". Default: CODEINTERP_SECCOMP_PROFILE, else "deny".
    seccomp_profile: str = field(default_factory=default_seccomp_profile)

    def __post_init__(self) -> None:
        if self.seccomp_profile not in SECCOMP_PROFILES:
            raise InvalidRequest(
                f"seccomp_profile must be one of {', '.join(SECCOMP_PROFILES)} "
                f"(got {self.seccomp_profile!r})"
            )
        if self.pool_size < 0 or self.env_pool_size < 0 or self.environment_zygotes < 0:
            raise InvalidRequest("pool sizes and environment_zygotes must be zero or more")
        if self.interrupt_grace <= 0:
            raise InvalidRequest("interrupt_grace must be positive")

    def effective(self, policy: SandboxPolicy) -> SandboxPolicy:
        """`policy` as a session gets it: with this sandbox's seccomp profile if it names none."""
        if policy.seccomp_profile is not None:
            return policy
        return dataclasses.replace(policy, seccomp_profile=self.seccomp_profile)


class Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.instance = secrets.token_hex(4)
        self.runtime_dir = config.runtime_dir or f"/run/codeinterp/{self.instance}"
        self.unsafe = config.unsafe_no_sandbox
        self.zygote = self._new_zygote()
        self._zygote_lock = asyncio.Lock()
        # One-shot tasks without heavy imports fork from a zygote without the library set, in
        # task jails (see task_jails.py); both are made on the first such task.
        self.task_zygote: ZygoteClient | None = None
        self.task_jails: TaskJails | None = None
        self.cgroups: CgroupManager | None = None
        self.sessions: dict[str, Session] = {}
        self._uid_base = UID_FLOOR + secrets.randbelow((1 << 30) // UID_BLOCK) * UID_BLOCK
        self._free_uids: deque[int] = deque(range(self._uid_base, self._uid_base + UID_BLOCK))
        # Warm pools, by the policy their sessions have: the default one's, then one per
        # environment asked for (see SandboxConfig.env_pool_size and _pool_target).
        self._pools: dict[SandboxPolicy, deque[Session]] = {config.policy: deque()}
        self._env_zygotes: dict[str, ZygoteClient] = {}  # by the environment's site-packages
        self._pool_task: asyncio.Task[None] | None = None
        self._pool_wakeup = asyncio.Event()
        self._demand = 0  # sessions being created for callers right now: the pool waits for them
        self._last_handout = 0.0
        self._closed = False
        self._started = False  # by `Sandbox.start`, which every caller must use

    # -- life cycle -----------------------------------------------------------------------------

    @classmethod
    async def start(cls, config: SandboxConfig | None = None) -> Sandbox:
        """Check isolation, start the zygote and fill the warm pool in the background."""
        sandbox = cls(config or SandboxConfig())
        await sandbox._start()
        return sandbox

    async def _start(self) -> None:
        self._started = True
        if not self.unsafe:
            problems = doctor.isolation_problems()
            if problems:
                raise IsolationUnavailable(
                    "cannot isolate sessions on this machine: "
                    + "; ".join(problems)
                    + ". Fix that (see `codeinterp doctor`), or pass unsafe_no_sandbox=True "
                    "(CLI: --unsafe-no-sandbox) to run code with no isolation at all."
                )
            self.cgroups = CgroupManager(self.instance)
            self.task_jails = TaskJails(self.cgroups, os.path.join(self.runtime_dir, "root"))
        else:
            log.warning("sessions run WITHOUT a sandbox: code can read and change this machine")
        raise_open_files_limit()  # before the zygote starts: it inherits the limit
        os.makedirs(os.path.join(self.runtime_dir, "sessions"), mode=0o700, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)
        os.makedirs(os.path.join(self.runtime_dir, "root"), mode=0o755, exist_ok=True)
        leftovers.write_owner(self.runtime_dir)
        if self.cgroups is not None:
            leftovers.write_cgroups(self.runtime_dir, self.cgroups.base_directories)
        self._remove_leftovers()
        try:
            hello = await self.zygote.start()
            if not self.unsafe and not hello.get("seccomp"):
                raise IsolationUnavailable(
                    f"seccomp is unavailable: {hello.get('seccomp_error')}; "
                    "run on x86_64 or aarch64 Linux with seccomp enabled"
                )
            if not self.unsafe and not hello.get("file_locks"):
                log.warning(
                    "record locks are not counted per session (%s): sandboxed code can fill "
                    "kernel memory with fcntl locks",
                    hello.get("file_locks_error"),
                )
        except BaseException:
            await self.close()
            raise
        if self.config.pool_size:
            self._start_pool_task()

    def _remove_leftovers(self) -> None:
        """Clean up after Sandboxes that died without closing (see leftovers.py). Only under
        the default runtime root: a caller's own runtime_dir has neighbours we know nothing of."""
        if self.config.runtime_dir is not None:
            return
        root = os.path.dirname(self.runtime_dir)
        for name in leftovers.stale_instances(root, self.instance):
            log.warning("removing leftovers of a sandbox that did not shut down: %s", name)
            leftovers.remove_runtime_dir(os.path.join(root, name))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool_task is not None:
            self._pool_task.cancel()
            self._pool_wakeup.set()
            # Bounded: a refill that lost its cancellation (see session.next_item) must not
            # hold up shutdown; _closed stops its loop at the next turn anyway.
            await asyncio.wait({self._pool_task}, timeout=5)
        pooled = [session for pool in self._pools.values() for session in pool]
        for session in pooled + list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await session.close()
        self._pools.clear()
        for zygote in self._env_zygotes.values():
            await zygote.close()
        if self.task_jails is not None:
            await self.task_jails.close()
        if self.task_zygote is not None:
            await self.task_zygote.close()
        await self.zygote.close()
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.close)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sessions -------------------------------------------------------------------------------

    @property
    def warm_sessions(self) -> int:
        """Sessions started ahead, waiting in the pool to be handed out."""
        return sum(len(pool) for pool in self._pools.values())

    async def create_session(
        self,
        policy: SandboxPolicy | None = None,
        *,
        restore_from: str | None = None,
        network: SessionNetwork | None = None,
    ) -> Session:
        """A ready session: from the warm pool when the policy is the default, else forked now.
        `restore_from`: the path of a snapshot (`Session.snapshot`) to start from: its
        variables, files, count and history; `session.restore_report` says what came back.
        `network`: gives each process of the session, before any code runs there, a way out of
        its namespace (the egress proxy's), and is closed with it; such a session never comes
        from the pool."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if not self._started:
            raise SandboxError("the sandbox was not started: make it with `await Sandbox.start()`")
        policy = policy or self.config.policy
        session: Session | None = None
        if restore_from is None and network is None:
            self._want_pool_for(policy)
            pool = self._pools.get(policy, deque())
            while pool and session is None:
                candidate = pool.popleft()
                if candidate.process is not None and not candidate.process.exit_status.done():
                    session = candidate
                else:
                    await candidate.close()
            self._pool_wakeup.set()
        if session is None:
            self._demand += 1
            try:
                session = await self._new_session(policy, restore_from, network)
            finally:
                self._demand -= 1
                self._pool_wakeup.set()
        self.sessions[session.id] = session
        session.last_used = self._last_handout = time.monotonic()
        return session

    async def run_task(self, task: Task | str, policy: SandboxPolicy | None = None) -> TaskResult:
        """Run one task in a fresh session of its own, closed before this returns."""
        task = Task(task) if isinstance(task, str) else task
        task.check()
        session = await self.create_task_session(task.code, policy)
        try:
            return await oneshot.run_in(session, task)
        finally:
            await session.close()

    def map(
        self,
        tasks: Iterable[Task | str],
        concurrency: int = 4,
        policy: SandboxPolicy | None = None,
    ) -> AsyncIterator[tuple[int, TaskResult | Exception]]:
        """Run every task in a fresh session of its own, `concurrency` at a time; yields
        (index, result) as each finishes (an exception for a task that could not run)."""
        return oneshot.as_completed(tasks, concurrency, lambda task: self.run_task(task, policy))

    async def create_task_session(self, code: str, policy: SandboxPolicy | None = None) -> Session:
        """A fresh session for one task that runs `code`, in a task jail (see task_jails.py):
        same limits and isolation as any session, made for a fraction of the cost. Forked from
        the full zygote if `code` imports its library set, else from the light one. Close it
        after the task; it is not meant for more."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if self.unsafe or self.task_jails is None:
            return await self.create_session(policy)
        policy = self.config.effective(policy or self.config.policy)
        zygote = (
            await self._live_zygote()
            if oneshot.uses_preloaded_libraries(code)
            else await self._live_task_zygote()
        )
        jails = self.task_jails
        jail = await jails.acquire(zygote, policy)
        try:
            uid, workspace = self._claim_identity(policy)
        except BaseException:
            await jails.release(jail)
            raise

        async def spawn(session: Session) -> KernelProcess:
            await jails.wait_empty(jail)  # a restart: the last process must be gone
            return await self._spawn(session, zygote, jail)

        async def release(session: Session) -> None:
            self.sessions.pop(session.id, None)
            try:
                await jails.release(jail)  # once the task's processes are gone
            finally:
                self._release_identity(session)

        try:
            session = Session(
                secrets.token_hex(8),
                policy,
                workspace,
                jail.cgroup,
                uid,
                spawner=spawn,
                releaser=release,
                interrupt_grace=self.config.interrupt_grace,
            )
            await session.start()
        except BaseException:
            try:
                await jails.release(jail)  # once a process that did start is gone
            finally:
                workspace.destroy()
                self._free_uids.append(uid)
            raise
        self.sessions[session.id] = session
        session.last_used = time.monotonic()
        return session

    def _claim_identity(self, policy: SandboxPolicy) -> tuple[int, Workspace]:
        """A free uid, and a new workspace owned by it (mounted)."""
        if not self._free_uids:
            raise LimitReached(
                f"all {UID_BLOCK} session uids of this sandbox are in use: close idle sessions",
                retry_after=5.0,
            )
        uid = self._free_uids.popleft()
        workspace = Workspace(
            os.path.join(self.runtime_dir, "sessions", secrets.token_hex(8)),
            policy.limits.workspace,
            uid,
            uid,
        )
        try:
            workspace.create(mount_tmpfs=not self.unsafe)
        except BaseException:
            self._free_uids.append(uid)
            raise
        return uid, workspace

    async def _new_session(
        self,
        policy: SandboxPolicy,
        restore_from: str | None = None,
        network: SessionNetwork | None = None,
    ) -> Session:
        policy = self.config.effective(policy)
        uid, workspace = self._claim_identity(policy)
        session_id = os.path.basename(workspace.path)
        cgroup = None
        try:
            if self.cgroups is not None:
                cgroup = self.cgroups.create(session_id, policy.limits)
            session = Session(
                session_id,
                policy,
                workspace,
                cgroup,
                uid,
                spawner=self._spawn,
                releaser=self._release,
                interrupt_grace=self.config.interrupt_grace,
                network=network,
            )
            session.restore_from = restore_from
            await session.start()
        except BaseException:
            if cgroup is not None:
                cgroup.remove(2)
            workspace.destroy()
            self._free_uids.append(uid)
            raise
        return session

    def _new_zygote(
        self, *, light: bool = False, packages: str | None = None, preload: tuple[str, ...] = ()
    ) -> ZygoteClient:
        # With a sandbox the zygote keeps its own mount namespace, where the workspaces mounted
        # here never show: each session's jail copies that namespace, and copying (and tearing
        # down) every live session's workspace made each new session slower than the last.
        # A zygote started again detaches the ones already there.
        return ZygoteClient(
            self.config.python,
            self.config.cache_dir or default_cache_dir(),
            private_mounts=not self.unsafe,
            init_root=None if self.unsafe else os.path.join(self.runtime_dir, "root"),
            hidden_mounts=(
                # Under the default root, other sandboxes' workspaces too.
                os.path.dirname(self.runtime_dir)
                if self.config.runtime_dir is None
                else os.path.join(self.runtime_dir, "sessions"),
            ),
            light=light,
            packages=packages,
            preload=preload,
        )

    async def _live_zygote(self) -> ZygoteClient:
        """The zygote, started again if it died (its sessions died with it and restart)."""
        if self.zygote.alive:
            return self.zygote
        async with self._zygote_lock:
            if not self.zygote.alive and not self._closed:
                log.warning("the zygote exited; starting a new one")
                await self.zygote.close()
                self.zygote = self._new_zygote()
                await self.zygote.start()
        return self.zygote

    async def _zygote_for(self, policy: SandboxPolicy) -> ZygoteClient:
        """The zygote a session of `policy` forks from: its environment's (started on the
        first, and again if it died), or the main one (no environment, or no room for another
        environment's zygote: SandboxConfig.environment_zygotes)."""
        packages = policy.packages
        if packages is None or not os.path.isdir(packages):  # (the jail says it is missing)
            return await self._live_zygote()
        zygote = self._env_zygotes.get(packages)
        if zygote is not None and zygote.alive:
            return zygote
        async with self._zygote_lock:
            zygote = self._env_zygotes.get(packages)
            if zygote is not None and not zygote.alive:
                log.warning("the zygote of environment %s exited; starting a new one", packages)
                await zygote.close()
                del self._env_zygotes[packages]
                zygote = None
            if zygote is None and len(self._env_zygotes) < self.config.environment_zygotes:
                zygote = self._new_zygote(
                    packages=packages, preload=environments.modules_of(packages)
                )
                self._env_zygotes[packages] = zygote
                try:
                    await zygote.start()
                except BaseException:
                    del self._env_zygotes[packages]
                    raise
        if zygote is None or self._closed:
            return await self._live_zygote()
        return zygote

    async def _live_task_zygote(self) -> ZygoteClient:
        """The light zygote of one-shot tasks, started on first use and again if it died."""
        if self.task_zygote is not None and self.task_zygote.alive:
            return self.task_zygote
        async with self._zygote_lock:
            if self._closed:
                raise SandboxError("the sandbox is closed")
            if self.task_zygote is None or not self.task_zygote.alive:
                if self.task_zygote is not None:
                    log.warning("the task zygote exited; starting a new one")
                    await self.task_zygote.close()
                self.task_zygote = self._new_zygote(light=True)
                await self.task_zygote.start()
        return self.task_zygote

    async def _spawn(
        self, session: Session, zygote: ZygoteClient | None = None, jail: TaskJail | None = None
    ) -> KernelProcess:
        """Fork `session`'s kernel: by its policy's zygote, or by `zygote` into a task `jail`."""
        zygote = zygote or await self._zygote_for(session.policy)
        # The zygote cannot see the workspace's mount (see _new_zygote): a detached copy of it
        # goes along with the request, and the jail attaches that at /mnt/data.
        mount_fd = linux.clone_mount(session.workspace.path) if session.workspace.mounted else -1
        # A session made from a snapshot restores it once, at its start: a restart after a
        # crash starts empty, as any session's does.
        # The archive goes through a pipe, which this side fills: a descriptor of the file
        # itself would show its host path in the session's /proc/self/fd.
        restore_fd, feeding = -1, None
        if session.restore_from is not None:
            restore_from, session.restore_from = session.restore_from, None
            try:
                archive = os.open(restore_from, os.O_RDONLY | os.O_CLOEXEC)
            except BaseException:
                if mount_fd >= 0:
                    os.close(mount_fd)
                raise
            restore_fd, fill = os.pipe2(os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # fewer turns between the two sides
                fcntl.fcntl(fill, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            feeding = asyncio.create_task(asyncio.to_thread(_feed, archive, fill))
        fds = {"workspace": mount_fd, "restore": restore_fd}
        try:
            spawned = await zygote.spawn(
                {
                    "op": "spawn",
                    "policy": session.policy.to_dict(),
                    "uid": session.uid,
                    "gid": session.uid,
                    "cgroup_procs": session.cgroup.join_paths if session.cgroup else [],
                    "workspace": session.workspace.path,
                    "new_root": os.path.join(self.runtime_dir, "root"),
                    "unsafe": self.unsafe,
                    **({"jail": str(jail.number)} if jail is not None else {}),
                    "fds": [name for name, fd in fds.items() if fd >= 0],
                },
                tuple(fd for fd in fds.values() if fd >= 0),
            )
        finally:
            for fd in fds.values():
                if fd >= 0:
                    os.close(fd)
        limits = session.policy.limits
        process = KernelProcess(spawned, limits.output, limits.results)
        zygote.on_exit(spawned.pid, process.on_exit)
        try:
            await process.open()
            await process.wait_ready(self.config.start_timeout)
        except BaseException:
            await process.close()
            raise
        finally:
            if feeding is not None:  # ends once the session has closed the pipe (or died)
                await asyncio.gather(feeding, return_exceptions=True)
        return process

    async def _release(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        try:
            if session.cgroup is not None and self.cgroups is not None:
                try:
                    await asyncio.to_thread(session.cgroup.remove, 5)
                except OSError as exc:
                    log.warning("session %s: cgroup not removed yet (%s)", session.id, exc)
                    self.cgroups.defer_removal(session.cgroup)
                if self.cgroups.has_deferred:
                    await asyncio.to_thread(self.cgroups.retry_deferred)
        finally:
            self._release_identity(session)

    def _release_identity(self, session: Session) -> None:
        """The workspace and uid go once no process of the session can still use them."""
        session.workspace.destroy()
        self._free_uids.append(session.uid)

    # -- warm pool ------------------------------------------------------------------------------

    def _want_pool_for(self, policy: SandboxPolicy) -> None:
        """An environment's first session asks for a pool of its policy (if there is room)."""
        if policy in self._pools or policy.packages is None:
            return
        if self.config.env_pool_size and len(self._pools) <= self.config.environment_zygotes:
            self._pools[policy] = deque()
            self._start_pool_task()

    def _pool_target(self, policy: SandboxPolicy) -> int:
        """How many ready sessions the pool of `policy` keeps."""
        if policy == self.config.policy:
            return self.config.pool_size
        return self.config.env_pool_size

    def _start_pool_task(self) -> None:
        if self._pool_task is None and not self._closed:
            self._pool_task = asyncio.create_task(self._keep_pool_full())

    def _pool_to_fill(self) -> SandboxPolicy | None:
        """The policy of the emptiest pool below its target (the default one first)."""
        short = [
            (len(pool) / target, policy)
            for policy, pool in self._pools.items()
            if len(pool) < (target := self._pool_target(policy))
        ]
        return min(short, key=lambda item: item[0])[1] if short else None

    async def _keep_pool_full(self) -> None:
        while not self._closed:
            # Callers first: a refill would queue behind (and delay) their own forks.
            while self._demand == 0 and (policy := self._pool_to_fill()) is not None:
                pool = self._pools[policy]
                # Right after a hand-out the caller is busy starting to use its session: a fork
                # now would compete with it for the CPU. Wait for a quiet moment, unless empty.
                while pool and time.monotonic() - self._last_handout < REFILL_QUIET:
                    await asyncio.sleep(REFILL_QUIET / 2)
                try:
                    session = await self._new_session(policy)
                    try:
                        await session.warm()
                    except BaseException:  # the sandbox is closing, or warming failed
                        with contextlib.suppress(Exception):
                            await session.close()
                        raise
                    pool.append(session)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("could not refill the warm pool")
                    await asyncio.sleep(1)
            self._pool_wakeup.clear()
            if not self._closed:
                await self._pool_wakeup.wait()

    async def wait_pool_full(self, timeout: float = 60.0) -> None:
        """Wait until the warm pool holds `pool_size` ready sessions (for tests and benches)."""
        deadline = time.monotonic() + timeout
        while self.pool_ready < self.config.pool_size:
            if time.monotonic() > deadline:
                raise TimeoutError("warm pool did not fill in time")
            await asyncio.sleep(0.005)

    @property
    def pool_ready(self) -> int:
        """Ready sessions of the default policy."""
        return len(self._pools.get(self.config.policy, ()))

    def describe(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "unsafe": self.unsafe,
            "seccomp_profile": self.config.seccomp_profile,
            "zygote": self.zygote.hello,
            "sessions": len(self.sessions),
            "pool_ready": self.pool_ready,
            "environment_zygotes": len(self._env_zygotes),
            "task_jails": self.task_jails.count if self.task_jails else 0,
        }

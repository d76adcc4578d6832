"""One sandbox session per owner (a thread), created on first use, reused, expired when idle.

Every session created is recorded in the store with its price, for the usage endpoint. Files are
copied into /mnt/data once per session under their file names (a clashing name gets the file id
appended), and the paths are remembered so the model can be told about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from codeinterp.errors import LimitReached, Overloaded
from codeinterp.ids import new_id
from codeinterp.sandbox import Sandbox, SandboxPolicy, Session
from codeinterp.store import FileRecord, Store
from codeinterp.telemetry import metrics

from .admission import Admission

log = logging.getLogger("codeinterp.sessions")

ROOM_POLL_SECONDS = 0.05  # how often a caller waiting for room under a cap looks again


def _check_memory(reserve: int) -> None:
    """Overloaded if the machine has less memory available than `reserve` bytes."""
    available = available_memory()
    if available is not None and available < reserve:
        raise Overloaded(
            f"The machine has {available // 2**20} MiB of memory available, under the "
            f"{reserve // 2**20} MiB kept in reserve: no new session now.",
            retry_after=5.0,
        )


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class ManagedSession:
    id: str
    project: str
    owner_kind: str
    owner_id: str
    session: Session
    files: dict[str, str] = field(default_factory=dict)  # file id -> path in /mnt/data
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    cost_usd: float = 0.0  # what the session is billed (the usage report's price)
    idle_seconds: float | None = None  # None: the manager's default
    # called (before the session closes) when the session expires for being idle
    on_expire: Callable[[ManagedSession], Awaitable[None]] | None = None

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def idle_for(self, default: float) -> float:
        return default if self.idle_seconds is None else self.idle_seconds

    def expired(self, default: float) -> bool:
        return self.busy == 0 and time.monotonic() - self.last_used > self.idle_for(default)


@dataclass(frozen=True)
class SessionLimits:
    """How many sessions, and how fast: what a caller past a limit waits for, and gets."""

    max_sessions: int | None = None  # live sessions of threads and containers, server-wide
    max_sessions_per_project: int | None = None
    create_concurrency: int = 4  # sessions being made at once; more wait their turn
    queue_wait_seconds: float = 20.0  # the longest a caller waits (for its turn, or for room)
    min_free_memory_bytes: int = 256 * 1024 * 1024  # no new session below this MemAvailable


class SessionManager:
    def __init__(
        self,
        sandbox: Sandbox,
        store: Store,
        idle_seconds: float,
        price_usd: float,
        limits: SessionLimits | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.store = store
        self.idle_seconds = idle_seconds
        self.price_usd = price_usd
        self.limits = limits or SessionLimits()
        self._creating = Admission(
            self.limits.create_concurrency, self.limits.queue_wait_seconds, "new sessions"
        )
        self._live_by_project: Counter[str] = Counter()  # live and being made, by project
        self._draining = ""  # why no session is made any more (the server is stopping)
        self._sessions: dict[tuple[str, str, str], ManagedSession] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._reaper_wakeup = asyncio.Event()  # a session with a shorter idle time arrived

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._expire_idle_sessions())

    async def acquire(
        self,
        project: str,
        owner_kind: str,
        owner_id: str,
        *,
        memory_limit: str = "1g",
        idle_seconds: float | None = None,
        on_expire: Callable[[ManagedSession], Awaitable[None]] | None = None,
        restore_from: str | None = None,
    ) -> ManagedSession:
        """The owner's session, created if it has none (or its last one expired).

        A new session gets the memory tier's limit and, if given, its own idle time, a
        callback for its expiry (containers) and a snapshot to start from (`restore_from`, a
        path); the defaults are a thread's.
        """
        key = (project, owner_kind, owner_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            managed = self._sessions.get(key)
            if managed is None or managed.session.closed:
                if managed is not None:  # its session died: the new one takes its place
                    self._forget(managed)
                policy = SandboxPolicy.for_memory_tier(memory_limit)
                session = await self._create(project, policy, restore_from)
                managed = ManagedSession(
                    new_id("session"),
                    project,
                    owner_kind,
                    owner_id,
                    session,
                    idle_seconds=idle_seconds,
                    on_expire=on_expire,
                    cost_usd=self.price_usd,
                )
                self._sessions[key] = managed  # counted in _live_by_project by _create
                metrics.SESSIONS_CREATED.inc()
                metrics.SESSION_COST.inc(self.price_usd)
                if idle_seconds is not None:
                    self._reaper_wakeup.set()
                await self.store.record_session_start(
                    project,
                    managed.id,
                    owner_kind,
                    owner_id,
                    int(time.time()),
                    self.price_usd,
                    memory_limit,
                )
            managed.touch()
            return managed

    async def _create(
        self, project: str, policy: SandboxPolicy, restore_from: str | None = None
    ) -> Session:
        """A new session for `project`, within the limits: room under the caps (waiting for
        sessions to end, at most queue_wait_seconds: then LimitReached, a 429), memory to spare
        (else Overloaded, a 503), and a turn among the sessions being made (first come, first
        served; past queue_wait_seconds, Overloaded). The session is counted from the moment
        its room is reserved; the caller keeps it in _sessions, or it is uncounted here."""
        deadline = time.monotonic() + self.limits.queue_wait_seconds
        await self._wait_for_room(project, deadline)
        self._live_by_project[project] += 1  # reserved: no await since the check
        try:
            await self._creating.acquire(max(0.0, deadline - time.monotonic()))
            try:
                _check_memory(self.limits.min_free_memory_bytes)
                return await self.sandbox.create_session(policy, restore_from=restore_from)
            finally:
                self._creating.release()
        except BaseException:
            self._uncount(project)
            raise

    def drain(self, reason: str) -> None:
        """The server is stopping: callers waiting for a session, and later ones, get `reason`
        (a 503) at once instead of holding up the shutdown."""
        self._draining = reason
        self._creating.close(reason)

    async def _wait_for_room(self, project: str, deadline: float) -> None:
        while (full := self._full(project)) is not None:
            if self._draining:
                raise Overloaded(self._draining, retry_after=5.0)
            if time.monotonic() >= deadline:
                raise LimitReached(
                    f"{full}: close or delete some (or let them expire) and try again.",
                    retry_after=5.0,
                )
            await asyncio.sleep(ROOM_POLL_SECONDS)

    def _full(self, project: str) -> str | None:
        """Which cap a new session of `project` would pass, said for the caller; None: room."""
        limits = self.limits
        total = sum(self._live_by_project.values())
        if limits.max_sessions is not None and total >= limits.max_sessions:
            return f"The server holds its maximum of {limits.max_sessions} live sessions"
        cap = limits.max_sessions_per_project
        if cap is not None and self._live_by_project[project] >= cap:
            return f"This project holds its maximum of {cap} live sessions"
        return None

    def _uncount(self, project: str) -> None:
        self._live_by_project[project] -= 1
        if self._live_by_project[project] <= 0:
            del self._live_by_project[project]

    def _forget(self, managed: ManagedSession) -> None:
        """`managed` no longer counts against its project's limits."""
        key = (managed.project, managed.owner_kind, managed.owner_id)
        if self._sessions.get(key) is managed:
            self._sessions.pop(key)
            self._uncount(managed.project)

    def counts(self) -> dict[str, int]:
        """Sessions by state, for /metrics: running code (busy) or waiting (idle)."""
        busy = sum(1 for m in self._sessions.values() if m.busy)
        return {"live": len(self._sessions), "busy": busy, "idle": len(self._sessions) - busy}

    def peek(self, project: str, owner_kind: str, owner_id: str) -> ManagedSession | None:
        return self._sessions.get((project, owner_kind, owner_id))

    @staticmethod
    def plan_paths(known: dict[str, str], records: Sequence[FileRecord]) -> dict[str, str]:
        """Where each new file goes: /mnt/data/<its name>, or <stem>-<id tail><ext> on a clash."""
        taken = set(known.values())
        planned: dict[str, str] = {}
        for record in records:
            if record.id in known or record.id in planned:
                continue
            path = f"/mnt/data/{record.filename}"
            if path in taken:
                stem, ext = os.path.splitext(record.filename)
                path = f"/mnt/data/{stem}-{record.id[-8:]}{ext}"
            planned[record.id] = path
            taken.add(path)
        return planned

    async def load_files(self, managed: ManagedSession, file_ids: list[str]) -> dict[str, str]:
        """Copy the files not yet in the session into /mnt/data; returns file id -> path."""
        new_ids = [f for f in dict.fromkeys(file_ids) if f not in managed.files]
        records = [await self.store.get_file(managed.project, f) for f in new_ids]
        for file_id, path in self.plan_paths(managed.files, records).items():
            data = await self.store.read_file(managed.project, file_id)
            managed.files[file_id] = await managed.session.upload(path, data)
        return dict(managed.files)

    async def close(self, project: str, owner_kind: str, owner_id: str) -> None:
        managed = self._sessions.get((project, owner_kind, owner_id))
        self._locks.pop((project, owner_kind, owner_id), None)
        if managed is not None:
            self._forget(managed)
            await self._end(managed)

    async def _end(self, managed: ManagedSession) -> None:
        with contextlib.suppress(Exception):
            await managed.session.close()
        await self.store.record_session_end(managed.id, int(time.time()))

    async def expire(self, managed: ManagedSession) -> None:
        """End an idle session now: its owner is told (on_expire), then it closes."""
        key = (managed.project, managed.owner_kind, managed.owner_id)
        if self._sessions.get(key) is not managed:
            return  # already ended
        log.info("session %s of %s %s expired", managed.id, key[1], key[2])
        self._forget(managed)
        self._locks.pop(key, None)
        if managed.on_expire is not None:
            try:
                await managed.on_expire(managed)
            except Exception:
                log.exception("could not mark %s %s expired", key[1], key[2])
        await self._end(managed)

    async def _expire_idle_sessions(self) -> None:
        while True:
            shortest = min(
                (m.idle_for(self.idle_seconds) for m in self._sessions.values()),
                default=self.idle_seconds,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(30.0, max(0.25, shortest / 4))):
                    await self._reaper_wakeup.wait()
            self._reaper_wakeup.clear()
            for managed in list(self._sessions.values()):
                if managed.expired(self.idle_seconds):
                    await self.expire(managed)

    async def close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        # At shutdown: every session at once, and their ends recorded in one write (one write
        # per session took seconds with hundreds alive, and SIGTERM must stop the server soon).
        live = list(self._sessions.values())
        for managed in live:
            self._forget(managed)

        async def close(managed: ManagedSession) -> None:
            with contextlib.suppress(Exception):
                await managed.session.close()

        await asyncio.gather(*(close(m) for m in live))
        await self.store.end_open_sessions(int(time.time()))

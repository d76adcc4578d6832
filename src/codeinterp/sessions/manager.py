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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from codeinterp.ids import new_id
from codeinterp.sandbox import Sandbox, SandboxPolicy, Session
from codeinterp.store import FileRecord, Store
from codeinterp.telemetry import metrics

log = logging.getLogger("codeinterp.sessions")


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


class SessionManager:
    def __init__(
        self, sandbox: Sandbox, store: Store, idle_seconds: float, price_usd: float
    ) -> None:
        self.sandbox = sandbox
        self.store = store
        self.idle_seconds = idle_seconds
        self.price_usd = price_usd
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
    ) -> ManagedSession:
        """The owner's session, created if it has none (or its last one expired).

        A new session gets the memory tier's limit and, if given, its own idle time and a
        callback for its expiry (containers); the defaults are a thread's.
        """
        key = (project, owner_kind, owner_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            managed = self._sessions.get(key)
            if managed is None or managed.session.closed:
                policy = SandboxPolicy.for_memory_tier(memory_limit)
                session = await self.sandbox.create_session(policy)
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
                self._sessions[key] = managed
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
        managed = self._sessions.pop((project, owner_kind, owner_id), None)
        self._locks.pop((project, owner_kind, owner_id), None)
        if managed is not None:
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
        self._sessions.pop(key, None)
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
        for managed in list(self._sessions.values()):
            await self._end(managed)
        self._sessions.clear()

"""One sandbox session per owner (a thread or a container): created on first use, reused, put
to sleep on disk when idle and woken on its next use (persistence.py), expired if it cannot be.

Every session created is recorded in the store with its price, for the usage endpoint; a
session asleep and woken again is still the same session (one record, billed once). Files are
copied into /mnt/data once per session under their file names (a clashing name gets the file id
appended), and the paths are remembered so the model can be told about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from codeinterp.egress import NO_NETWORK, EgressProxy, NetworkPolicy
from codeinterp.errors import EgressUnavailable, LimitReached, Overloaded
from codeinterp.ids import new_id
from codeinterp.sandbox import Sandbox, SandboxPolicy, Session
from codeinterp.store import FileRecord, SessionStateRecord, Store
from codeinterp.telemetry import metrics

from . import persistence
from .admission import Admission
from .persistence import Persistence

log = logging.getLogger("codeinterp.sessions")

ROOM_POLL_SECONDS = 0.05  # how often a caller waiting for room under a cap looks again
Callback = Callable[["ManagedSession"], Awaitable[None]]
# Sessions the reaper saves or ends at once: a save is mostly the session's own work (its
# kernel pickles, on any core) and an end mostly waiting, so a few at once keep up with a
# burst of new sessions that one at a time would not.
REAPER_PARALLELISM = 4
# Sessions saved at once at a stop: a save waits mostly on its kernel and on the disk's
# flushes, so more than the cores keep both busy (500 sessions on 2 cores: saved 2 at once in
# 5.1 s, 8 at once in 3.4 to 3.8 s).
STOP_SAVE_PARALLELISM = 8


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
    memory_limit: str = "1g"
    packages: str | None = None  # an environment's site-packages (sandbox/environments.py)
    # called (before the session closes) when the session expires for being idle
    on_expire: Callback | None = None
    # called (before the process ends) when the session goes to sleep on disk
    on_sleep: Callback | None = None
    # what the owner keeps beside the session's saved state (JSON); given back in `woke_with`
    keep: Callable[[ManagedSession], dict[str, Any]] | None = None
    woke_with: dict[str, Any] | None = None  # None: a new session, not woken from a state
    changed_at: float | None = None  # when it first changed since it was last saved
    saved: bool = False  # a saved state of it exists (up to date unless changed_at is set)
    sleeping: bool = False  # being put to sleep: its next user waits and wakes it
    failed_saves: int = 0  # checkpoints that failed in a row: the next waits longer
    next_checkpoint: float = 0.0  # no checkpoint before this (monotonic), after a failure

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @property
    def fresh(self) -> bool:
        """Nothing happened in it since it was made (no code ran, no file came or went): its
        state is a new session's."""
        return not self.saved and self.changed_at is None

    def changed(self) -> None:
        """Its state changed (code ran, a file came or went): save it again."""
        if self.changed_at is None:
            self.changed_at = time.monotonic()

    def idle_for(self, default: float) -> float:
        return default if self.idle_seconds is None else self.idle_seconds

    def expired(self, default: float) -> bool:
        return self.busy == 0 and time.monotonic() - self.last_used > self.idle_for(default)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.project, self.owner_kind, self.owner_id)


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
        persist: Persistence | None = None,
        egress: EgressProxy | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.egress = egress
        self.persistence = persist or Persistence()
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
        # one lock per owner while anyone holds it (10,000 sleeping owners keep none)
        self._locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._waking: set[str] = set()  # owners whose sessions are being woken
        self._stopping = False  # close_all: the reaper ends its round and stops
        self._reaper: asyncio.Task[None] | None = None
        self._reaper_wakeup = asyncio.Event()  # a session with a shorter idle time arrived

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._expire_idle_sessions())

    async def acquire(
        self,
        project: str,
        owner_kind: str,
        owner_id: str,
        options: SessionOptions | None = None,
        *,
        restore_from: str | None = None,
    ) -> ManagedSession:
        """The owner's session: the live one, else woken from its saved state, else new (made
        with `options`, a thread's by default, and from a snapshot if `restore_from` names
        one)."""
        options = options or SessionOptions()
        managed = await self._get(project, owner_kind, owner_id, options, restore_from)
        assert managed is not None  # made if there was none
        return managed

    async def wake(
        self, project: str, owner_kind: str, owner_id: str, options: SessionOptions
    ) -> ManagedSession | None:
        """The owner's live session, or the one woken from its saved state; None if it has
        neither (it ended for good)."""
        return await self._get(project, owner_kind, owner_id, options, None, create=False)

    async def _get(
        self,
        project: str,
        owner_kind: str,
        owner_id: str,
        options: SessionOptions,
        restore_from: str | None,
        *,
        create: bool = True,
    ) -> ManagedSession | None:
        key = (project, owner_kind, owner_id)
        async with self._lock_of(key):
            managed = self._sessions.get(key)
            if managed is None or managed.session.closed:
                if managed is not None:  # its session died: the new one takes its place
                    self._forget(managed)
                state = None
                if restore_from is None and self.persistence.enabled:
                    state = await self._usable_state(project, owner_id)
                if state is not None:
                    managed = await self._wake(state, options)
                elif create:
                    managed = await self._start(key, options, restore_from)
                else:
                    return None
                if options.idle_seconds is not None or self.persistence.checkpoint_seconds:
                    self._reaper_wakeup.set()
            managed.touch()
            return managed

    async def _usable_state(self, project: str, owner_id: str) -> SessionStateRecord | None:
        """The owner's saved state, unless its archive is gone (then it is discarded: the
        owner's container expires, a thread starts afresh)."""
        state = await self.store.find_session_state(project, owner_id)
        if state is not None and state.path and not os.path.exists(state.path):
            log.error("the state of %s %s has no archive: discarded", state.owner_kind, owner_id)
            await self.store.discard_session_states([owner_id])
            return None
        return state

    def _live_owners(self) -> set[str]:
        """Owners whose saved states are in use: live sessions and sessions waking now."""
        return {m.owner_id for m in self._sessions.values()} | self._waking

    def _lock_of(self, key: tuple[str, str, str]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _start(
        self, key: tuple[str, str, str], options: SessionOptions, restore_from: str | None
    ) -> ManagedSession:
        project, owner_kind, owner_id = key
        policy = options.policy()
        session = await self._create(project, policy, options.network, restore_from)
        managed = options.managed(new_id("session"), key, session, self.price_usd)
        self._sessions[key] = managed  # counted in _live_by_project by _create
        metrics.SESSIONS_CREATED.inc()
        metrics.SESSION_COST.inc(self.price_usd)
        await self.store.record_session_start(
            project,
            managed.id,
            owner_kind,
            owner_id,
            int(time.time()),
            self.price_usd,
            options.memory_limit,
        )
        return managed

    async def _wake(self, state: SessionStateRecord, options: SessionOptions) -> ManagedSession:
        """The session back from its saved state, in a new process: the same session (its id
        and usage record go on), its files known, its owner's kept state in `woke_with`."""
        # the state's own tier and packages: what the session was made with
        memory_limit = state.body.get("memory_limit", options.memory_limit)
        packages = state.body.get("packages", options.packages)
        policy = SandboxPolicy.for_memory_tier(memory_limit).with_packages(packages)
        self._waking.add(state.owner_id)  # its state is not discarded meanwhile
        try:
            # the owner's network policy (its secrets are never saved with the state)
            # a state without an archive (path "") wakes as a new session
            session = await self._create(state.project, policy, options.network, state.path or None)
        finally:
            self._waking.discard(state.owner_id)
        key = (state.project, state.owner_kind, state.owner_id)
        managed = options.managed(state.session_id, key, session, self.price_usd)
        self._sessions[key] = managed  # counted in _live_by_project by _create
        managed.memory_limit = memory_limit
        managed.packages = packages
        managed.files = dict(state.body.get("files", {}))
        managed.woke_with = dict(state.body.get("owner", {}))
        managed.saved = True  # the state it woke from is its state until it changes
        metrics.SESSIONS_WOKEN.inc()
        log.info("session %s of %s %s woke from its saved state", managed.id, *key[1:])
        return managed

    async def _create(
        self,
        project: str,
        policy: SandboxPolicy,
        network: NetworkPolicy,
        restore_from: str | None = None,
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
                return await self._new_session(policy, network, restore_from)
            finally:
                self._creating.release()
        except BaseException:
            self._uncount(project)
            raise

    async def _new_session(
        self, policy: SandboxPolicy, network: NetworkPolicy, restore_from: str | None
    ) -> Session:
        """A sandbox session; with an allowlist, its way out through the egress proxy."""
        if not network.enabled:
            return await self.sandbox.create_session(policy, restore_from=restore_from)
        if self.egress is None:
            raise EgressUnavailable("this server has no egress proxy: network policies are off")
        lease = await self.egress.lease(network)
        try:
            return await self.sandbox.create_session(
                policy.with_egress(
                    self.egress.ca_bundle, network.allowed_domains, network.placeholders()
                ),
                restore_from=restore_from,
                network=lease,
            )
        except BaseException:
            await lease.close()
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

    async def known_files(self, project: str, owner_kind: str, owner_id: str) -> dict[str, str]:
        """The files (file id -> path) in the owner's session, live or asleep, without waking
        it."""
        managed = self.peek(project, owner_kind, owner_id)
        if managed is not None:
            return dict(managed.files)
        state = None
        if self.persistence.enabled:
            state = await self.store.find_session_state(project, owner_id)
        return dict(state.body.get("files", {})) if state is not None else {}

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
            managed.changed()
            data = await self.store.read_file(managed.project, file_id)
            managed.files[file_id] = await managed.session.upload(path, data)
        return dict(managed.files)

    async def close(self, project: str, owner_kind: str, owner_id: str) -> None:
        """End the owner's session for good (its thread or container is deleted): the live
        one, and any saved state."""
        key = (project, owner_kind, owner_id)
        async with self._lock_of(key):
            managed = self._sessions.get(key)
            if managed is not None:
                self._forget(managed)
                await self._end(managed)
            state = await self.store.find_session_state(project, owner_id)
            if state is not None:
                await self.store.delete_session_state(project, owner_id)
                if managed is None:  # asleep: its usage record ends now
                    await self.store.record_session_end(state.session_id, int(time.time()))

    async def _end(self, managed: ManagedSession) -> None:
        with contextlib.suppress(Exception):
            await managed.session.close()
        await self.store.record_session_end(managed.id, int(time.time()))

    async def expire(self, managed: ManagedSession) -> None:
        """End an idle session now: its owner is told (on_expire), then it closes."""
        async with self._lock_of(managed.key):
            await self._expire(managed)

    async def _expire(self, managed: ManagedSession) -> None:
        key = managed.key
        if self._sessions.get(key) is not managed:
            return  # already ended
        log.info("session %s of %s %s expired", managed.id, key[1], key[2])
        self._forget(managed)
        if managed.on_expire is not None:
            try:
                await managed.on_expire(managed)
            except Exception:
                log.exception("could not mark %s %s expired", key[1], key[2])
        if managed.saved:
            await self.store.delete_session_state(managed.project, managed.owner_id)
        await self._end(managed)

    async def sleep(self, managed: ManagedSession) -> None:
        """Put an idle session to sleep: its state saved (if it changed since it was last),
        its process ended; its next use wakes it. If it cannot be saved, it expires."""
        managed.sleeping = True  # its next user waits on the lock, then wakes it
        try:
            async with self._lock_of(managed.key):
                if self._sessions.get(managed.key) is not managed:
                    return  # ended meanwhile
                if not managed.expired(self.idle_seconds):
                    return  # used meanwhile
                if not self.persistence.enabled or not await self._save(managed, "sleep"):
                    await self._expire(managed)
                    return
                self._forget(managed)
                if managed.on_sleep is not None:
                    try:
                        await managed.on_sleep(managed)
                    except Exception:
                        log.exception("%s %s: could not go to sleep", *managed.key[1:])
                with contextlib.suppress(Exception):
                    await managed.session.close()
                metrics.SESSIONS_SLEPT.inc()
                log.info("session %s of %s %s went to sleep", managed.id, *managed.key[1:])
        finally:
            managed.sleeping = False

    async def _save(self, managed: ManagedSession, reason: str) -> bool:
        """Save `managed` if it changed since it was last saved (the caller holds its lock);
        whether its saved state is now up to date."""
        if managed.saved and managed.changed_at is None:
            if reason != "checkpoint":  # still its state now: kept as long as a new one
                await self.store.touch_session_state(
                    managed.project, managed.owner_id, int(time.time())
                )
            return True
        fresh = managed.fresh
        changed_at, managed.changed_at = managed.changed_at, None  # changes from now: again
        saved = False
        try:
            saved = await persistence.save(
                self.store, managed, self.persistence, self._live_owners, fresh=fresh
            )
        finally:
            if not saved and managed.changed_at is None:
                managed.changed_at = changed_at or time.monotonic()
        if saved:
            managed.saved = True
            managed.failed_saves = 0
            metrics.SESSION_SAVES.labels(reason).inc()
        else:  # tried again later, later each time
            managed.failed_saves += 1
            delay = self.persistence.checkpoint_seconds * 2**managed.failed_saves
            managed.next_checkpoint = time.monotonic() + min(3600.0, delay)
        return saved

    async def checkpoint(self, managed: ManagedSession) -> None:
        """Save a live session that changed, against a crash (the crash policy)."""
        async with self._lock_of(managed.key):
            if self._sessions.get(managed.key) is managed and not managed.session.closed:
                await self._save(managed, "checkpoint")

    def _checkpoint_due(self, managed: ManagedSession, now: float) -> bool:
        every = self.persistence.checkpoint_seconds
        return (
            self.persistence.enabled
            and every > 0
            and managed.changed_at is not None
            and managed.busy == 0
            and now - managed.changed_at >= every
            and now >= managed.next_checkpoint
        )

    async def _expire_idle_sessions(self) -> None:
        """The reaper: idle sessions go to sleep (or expire), changed ones are saved against a
        crash, states past their retention are discarded."""
        next_retention = 0.0
        turns = asyncio.Semaphore(REAPER_PARALLELISM)

        async def reap(managed: ManagedSession, now: float) -> None:
            async with turns:
                if self._stopping:
                    return
                try:
                    if managed.expired(self.idle_seconds):
                        await self.sleep(managed)
                    elif self._checkpoint_due(managed, now):
                        await self.checkpoint(managed)
                except Exception:
                    log.exception("session %s of %s %s", managed.id, *managed.key[1:])

        while not self._stopping:
            await self._wait_for_next_round()
            now = time.monotonic()
            due = [
                m
                for m in self._sessions.values()
                if m.expired(self.idle_seconds) or self._checkpoint_due(m, now)
            ]
            await asyncio.gather(*(reap(m, now) for m in due))
            if self.persistence.enabled and now >= next_retention:
                next_retention = now + min(60.0, self.persistence.retention_seconds / 4)
                try:
                    await persistence.discard_stale(self.store, self.persistence, self._live_owners)
                except Exception:
                    log.exception("could not discard sessions past their retention")

    async def _wait_for_next_round(self) -> None:
        times = [m.idle_for(self.idle_seconds) for m in self._sessions.values()]
        if self.persistence.enabled:
            times.append(self.persistence.retention_seconds)
            if self.persistence.checkpoint_seconds:
                times.append(self.persistence.checkpoint_seconds)
        shortest = min(times, default=self.idle_seconds)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(30.0, max(0.25, shortest / 4))):
                await self._reaper_wakeup.wait()
        self._reaper_wakeup.clear()

    async def close_all(self) -> None:
        """At a stop: end every live session, saving first those that changed since they were
        last saved (for at most stop_seconds; the rest keep the state they last saved, if any).
        Each process is ended as soon as its session needs it no more, so that the kernel's
        work of ending hundreds of processes overlaps the saves still under way."""
        if self._reaper is not None:  # its save in progress ends first, within the bound
            self._stopping = True
            self._reaper_wakeup.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reaper), self.persistence.stop_seconds)
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        live = list(self._sessions.values())
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + self.persistence.stop_seconds
        turns = asyncio.Semaphore(STOP_SAVE_PARALLELISM)
        saves: Counter[str] = Counter()

        async def save(managed: ManagedSession) -> None:
            async with turns, self._lock_of(managed.key):
                saves["saved" if await self._save(managed, "stop") else "failed"] += 1

        async def end(managed: ManagedSession) -> None:
            if managed.busy:  # its snapshot would wait for its execution: it keeps its last state
                saves["busy"] += 1
            elif self.persistence.enabled:
                try:
                    async with asyncio.timeout_at(deadline):
                        await save(managed)
                except TimeoutError:
                    saves["cut off"] += 1
                except Exception:  # the others are saved and ended all the same
                    log.exception("%s %s: not saved at the stop", *managed.key[1:])
                    saves["failed"] += 1
            with contextlib.suppress(Exception):
                await managed.session.close()

        await asyncio.gather(*(end(m) for m in live))
        for managed in live:
            self._forget(managed)
        if self.persistence.enabled and live:
            log.info(
                "saved %d of %d live session(s) and ended them all in %.1f s at the stop (%d "
                "busy, %d failed, %d cut off by the time bound)",
                saves["saved"],
                len(live),
                time.monotonic() - started,
                saves["busy"],
                saves["failed"],
                saves["cut off"],
            )
        # Every session's end recorded in one write (one write per session took seconds with
        # hundreds alive, and SIGTERM must stop the server soon); a saved one goes on.
        await self.store.end_open_sessions(int(time.time()))


@dataclass(frozen=True)
class SessionOptions:
    """What an owner asks of its session, when it is made and when it wakes: the memory tier's
    limit, an environment's packages (a site-packages path), a network policy, its own idle
    time (None: the manager's), callbacks for its expiry and its sleep, and what its owner keeps
    beside its saved state. The defaults are a thread's."""

    memory_limit: str = "1g"
    packages: str | None = None
    network: NetworkPolicy = NO_NETWORK
    idle_seconds: float | None = None
    on_expire: Callback | None = None
    on_sleep: Callback | None = None
    keep: Callable[[ManagedSession], dict[str, Any]] | None = None

    def policy(self) -> SandboxPolicy:
        return SandboxPolicy.for_memory_tier(self.memory_limit).with_packages(self.packages)

    def managed(
        self, session_id: str, key: tuple[str, str, str], session: Session, price: float
    ) -> ManagedSession:
        return ManagedSession(
            session_id,
            *key,
            session,
            cost_usd=price,
            idle_seconds=self.idle_seconds,
            memory_limit=self.memory_limit,
            packages=self.packages,
            on_expire=self.on_expire,
            on_sleep=self.on_sleep,
            keep=self.keep,
        )

"""A budget of POSIX record locks per session, kept by the zygote through seccomp user notification.

Each ``fcntl(F_SETLK)`` on a distinct byte range makes a kernel object (``struct file_lock``, about
200 bytes) that no memory cgroup pays for on current kernels (their accounting was dropped in
Linux 6.8) and no rlimit counts (``RLIMIT_LOCKS`` has not been enforced since 2.4). Nothing else
bounds them: one file takes as many as it has byte ranges, and read-only library files can be
read-locked, so without a count a session could fill the host's memory with them.

Every session process therefore carries the small filter of
:func:`seccomp.build_lock_supervision_program`. Its jail sends the filter's listener to the
zygote before any untrusted code runs, and the zygote's :class:`LockSupervisor` sees each
``F_SETLK``/``F_SETLKW`` before the kernel carries it out:

* It counts the call. One call adds at most two locks (locking the middle of a range splits it in
  three), so the session holds at most ``census + 2 * calls since the census``.
* When that bound would pass the budget it takes a census of the session's processes: every
  ``lock:`` line of POSIX type in ``/proc/PID/fdinfo/FD``. A POSIX lock belongs to its process's
  file table and is released when any descriptor of its file is closed, so every lock held shows
  under an open descriptor of a session process (twice under a ``dup``: the count errs high,
  never low). OFD locks, which can outlive every descriptor, are refused by the filter.
  (``/proc/locks`` would list them too, but reading it stops every lock operation on the host for
  an RCU grace period, milliseconds each time.)
* If the census leaves no room it answers ENOLCK ("no locks available", POSIX's answer for a full
  lock table); otherwise the call runs in the session as written
  (``SECCOMP_USER_NOTIF_FLAG_CONTINUE``). The decision never reads the session's memory, so there
  is nothing the session could change behind it.

A census and each notification cost the zygote time, and the zygote also spawns every session.
So a session's calls are paced (``rate`` a second, in bursts of up to ``rate``), censuses take at
most ``census_share`` of the zygote's time, and a census reads at most ``max_census_files``
descriptors (a session with more open files than that counts as full until it closes some). A
call that has to wait for either stays in the kernel until it is answered. A session far from
its budget (SQLite holds two or three locks) needs a census only every few hundred calls.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import itertools
import os
import select
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .seccomp import NOTIF_RESP_SIZE, NOTIF_SIZE

# <linux/seccomp.h>: SECCOMP_IOWR(0, struct seccomp_notif), SECCOMP_IOWR(1, .._resp).
_IOC_READ_WRITE = 3
_SECCOMP_IOC_MAGIC = ord("!")


def _iowr(nr: int, size: int) -> int:
    return (_IOC_READ_WRITE << 30) | (size << 16) | (_SECCOMP_IOC_MAGIC << 8) | nr


NOTIF_RECV = _iowr(0, NOTIF_SIZE)
NOTIF_SEND = _iowr(1, NOTIF_RESP_SIZE)
# SECCOMP_IOW(4, __u64), its argument passed by value: SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (6.6+)
# wakes the zygote, then the caller, on the CPU at hand: about 15% off each round trip here.
NOTIF_SET_FLAGS = (1 << 30) | (8 << 16) | (_SECCOMP_IOC_MAGIC << 8) | 4
_FD_SYNC_WAKE_UP = 1
_USER_NOTIF_FLAG_CONTINUE = 1
_NOTIF_ID = struct.Struct("=Q")  # the first field of struct seccomp_notif
_RESPONSE = struct.Struct("=QqiI")  # id, val, error, flags

MAX_CENSUS_FILES = 4096


@dataclass
class _Session:
    listener: int
    procs_path: str  # the session's cgroup.procs: the pids its locks carry
    budget: int
    held: int = 0  # locks found by the last census
    calls: int = 0  # lock calls let through since then
    tokens: float = 0.0
    refilled: float = 0.0
    waiting: list[int] = field(default_factory=list)  # notification ids not yet answered


class LockSupervisor:
    """Answers the lock notifications of every session of one zygote. Single-threaded: the
    zygote's poll loop calls :meth:`on_event` when a listener is ready and :meth:`run_due`
    after :meth:`timeout` seconds."""

    def __init__(
        self,
        *,
        rate: float = 20_000.0,
        census_share: float = 0.1,
        max_census_files: int = MAX_CENSUS_FILES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.census_share = census_share
        self.max_census_files = max_census_files
        self.clock = clock
        self.sessions: dict[int, _Session] = {}
        self.censuses = 0
        self.refused = 0
        self._next_census = 0.0  # the census duty cycle: none before this time
        self._paced: list[tuple[float, int, int]] = []  # (due, order, listener) heap
        self._order = itertools.count()
        self.on_forget: Callable[[int], None] | None = None  # called before a listener closes

    def watch(self, listener: int, procs_path: str, budget: int) -> None:
        """Serve ``listener`` (this object now owns the fd) for the session whose processes
        are listed in ``procs_path``, allowing it ``budget`` record locks."""
        with contextlib.suppress(OSError):  # EINVAL before 6.6: the ordinary wake-up
            fcntl.ioctl(listener, NOTIF_SET_FLAGS, _FD_SYNC_WAKE_UP)
        now = self.clock()
        self.sessions[listener] = _Session(
            listener, procs_path, budget, tokens=self.rate, refilled=now
        )

    def fds(self) -> Iterable[int]:
        return self.sessions.keys()

    def forget(self, listener: int) -> None:
        """The session's processes are gone (the listener hung up): drop it."""
        if self.sessions.pop(listener, None) is not None:
            if self.on_forget is not None:
                self.on_forget(listener)
            os.close(listener)

    def on_event(self, listener: int, events: int) -> None:
        session = self.sessions.get(listener)
        if session is None:
            return
        if events & select.POLLIN:
            # POLLIN means a notification is waiting, so this does not block; it can still find
            # none if the caller was killed meanwhile (ENOENT).
            buffer = bytearray(NOTIF_SIZE)
            try:
                fcntl.ioctl(listener, NOTIF_RECV, buffer, True)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EINTR):
                    self.forget(listener)
                return
            session.waiting.append(_NOTIF_ID.unpack_from(buffer)[0])
            self._serve(session)
        elif events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            self.forget(listener)

    def timeout(self) -> float | None:
        """Seconds until :meth:`run_due` has work, or None."""
        if not self._paced:
            return None
        return max(0.0, self._paced[0][0] - self.clock())

    def run_due(self) -> None:
        now = self.clock()
        due: dict[int, _Session] = {}
        while self._paced and self._paced[0][0] <= now:
            _, _, listener = heapq.heappop(self._paced)
            if listener in self.sessions:
                due[listener] = self.sessions[listener]
        for session in due.values():
            self._serve(session)

    # --- deciding --------------------------------------------------------------------------

    def _serve(self, session: _Session) -> None:
        """Answer the session's waiting calls in order until one has to wait."""
        while session.waiting:
            now = self.clock()
            session.tokens = min(self.rate, session.tokens + (now - session.refilled) * self.rate)
            session.refilled = now
            if session.tokens < 1:
                self._wait(session, now + (1 - session.tokens) / self.rate)
                return
            if session.held + 2 * (session.calls + 1) > session.budget:
                if now < self._next_census:
                    self._wait(session, self._next_census)
                    return
                self._census(session)
            session.tokens -= 1
            notification = session.waiting.pop(0)
            if session.held + 2 * (session.calls + 1) > session.budget:
                self.refused += 1
                self._answer(session, notification, -errno.ENOLCK, 0)
            else:
                session.calls += 1
                self._answer(session, notification, 0, _USER_NOTIF_FLAG_CONTINUE)

    def _wait(self, session: _Session, due: float) -> None:
        heapq.heappush(self._paced, (due, next(self._order), session.listener))

    def _census(self, session: _Session) -> None:
        started = self.clock()
        held = count_locks(session_pids(session.procs_path), self.max_census_files)
        session.held = session.budget if held is None else held
        session.calls = 0
        self.censuses += 1
        spent = self.clock() - started
        self._next_census = started + spent / self.census_share

    def _answer(self, session: _Session, notification: int, error: int, flags: int) -> None:
        response = bytearray(_RESPONSE.pack(notification, 0, error, flags))
        try:
            fcntl.ioctl(session.listener, NOTIF_SEND, response, True)
        except OSError as exc:
            # ENOENT: the caller was killed while it waited; nothing to answer.
            if exc.errno != errno.ENOENT:
                self.forget(session.listener)


def session_pids(procs_path: str) -> list[str]:
    """The session's process ids (its cgroup's ``cgroup.procs``)."""
    try:
        with open(procs_path) as procs:
            return procs.read().split()
    except OSError:
        return []


def count_locks(pids: list[str], max_files: int) -> int | None:
    """POSIX record locks held by the processes ``pids``, from their open files'
    ``/proc/PID/fdinfo`` (lines like ``lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:00:56 0 EOF``);
    None if they have more than ``max_files`` descriptors open between them."""
    held = 0
    files = 0
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fdinfo")
        except OSError:
            continue  # gone
        files += len(descriptors)
        if files > max_files:
            return None
        for fd in descriptors:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as info:
                    held += info.read().count(b": POSIX ")
            except OSError:
                continue  # closed meanwhile
    return held

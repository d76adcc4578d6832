"""The record-lock budget (sandbox/file_locks.py) with the real kernel: a forked process loads the
real lock filter and sends its listener here, and a real LockSupervisor answers it. The same
attack through the whole jail is in test_host_resources.py."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from codeinterp.sandbox import seccomp
from codeinterp.sandbox.file_locks import LockSupervisor, count_locks, session_pids

needs_supervision = pytest.mark.skipif(
    not seccomp.lock_supervision_supported()[0],
    reason=seccomp.lock_supervision_supported()[1],
)


@pytest.fixture
def scratch() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        yield directory


def lock_ranges(handle: Any, count: int, start: int = 0) -> tuple[int, str | None]:
    """Lock every other byte from `start`: `count` separate locks, or fewer and the errno."""
    for i in range(count):
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, start + 2 * i)
        except OSError as exc:
            return i, errno.errorcode.get(exc.errno or 0)
    return count, None


def supervised(
    probe: Callable[[], Any], supervisor: LockSupervisor, budget: int, scratch: str
) -> Any:
    """Fork; the child loads the lock filter, hands its listener over and runs `probe`; this
    process serves the listener with `supervisor` until the child is done. The child's pid is
    its own "session" (a procs file naming it)."""
    program = seccomp.build_lock_supervision_program()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # never return into pytest
        status = 1
        try:
            listener = seccomp.install(program, set_no_new_privs=True, listener=True)
            socket.send_fds(theirs, [b"L"], [listener])
            os.close(listener)
            payload = {"result": probe()}
            status = 0
        except BaseException as exc:
            payload = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(result_w, json.dumps(payload).encode())
        os._exit(status)
    os.close(result_w)
    theirs.close()
    _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    ours.close()
    procs = os.path.join(scratch, "procs")
    with open(procs, "w") as f:
        f.write(f"{pid}\n")
    supervisor.watch(fds[0], procs, budget)
    poller = select.poll()
    poller.register(fds[0], select.POLLIN)
    deadline = time.monotonic() + 60
    while fds[0] in supervisor.sessions and time.monotonic() < deadline:
        timeout = supervisor.timeout()
        for fd, events in poller.poll(1000 if timeout is None else timeout * 1000 + 1):
            supervisor.on_event(fd, events)
        supervisor.run_due()
    supervisor.forget(fds[0])
    with os.fdopen(result_r, "rb") as reader:
        payload = json.loads(reader.read() or b'{"error": "no result"}')
    os.waitpid(pid, 0)
    assert "error" not in payload, payload["error"]
    return payload["result"]


def test_count_locks_reads_each_processes_open_files(scratch: str) -> None:
    """Locks of this process show in its fdinfo; a dup shows them twice (the count errs high),
    a lock released by close is gone, and pids that do not exist count nothing."""
    me = [str(os.getpid())]
    before = count_locks(me, 10_000)
    assert before is not None
    with open(os.path.join(scratch, "f"), "w") as handle:
        assert lock_ranges(handle, 5) == (5, None)
        assert count_locks(me, 10_000) == before + 5
        duplicate = os.dup(handle.fileno())
        assert count_locks(me, 10_000) == before + 10
        os.close(duplicate)  # closing any descriptor of the file releases the process's locks
        assert count_locks(me, 10_000) == before
    assert count_locks(["999999999"], 10_000) == 0


def test_count_locks_gives_up_past_max_files() -> None:
    """A census that would read more descriptors than allowed answers None (counted as full)."""
    me = [str(os.getpid())]
    open_now = len(os.listdir(f"/proc/{os.getpid()}/fdinfo"))
    assert count_locks(me, open_now + 10) is not None
    assert count_locks(me, open_now - 1) is None


def test_session_pids_reads_a_procs_file(scratch: str) -> None:
    procs = os.path.join(scratch, "procs")
    with open(procs, "w") as f:
        f.write("12\n34\n")
    assert session_pids(procs) == ["12", "34"]
    assert session_pids(os.path.join(scratch, "missing")) == []


@needs_supervision
def test_locks_past_the_budget_get_enolck(scratch: str) -> None:
    """Separate locks stop at the budget with ENOLCK. At the budget every lock call fails, an
    unlock too (the filter cannot tell them apart without reading the caller's memory, which
    the caller could change behind the check); closing the file releases them and makes room
    again. Taking and releasing the same lock over and over is never refused."""
    path = os.path.join(scratch, "target")

    def probe() -> dict[str, Any]:
        with open(path, "w") as handle:
            first = lock_ranges(handle, 1000)
            try:
                fcntl.lockf(handle, fcntl.LOCK_UN, 0, 0)
                unlock = None
            except OSError as exc:
                unlock = errno.errorcode.get(exc.errno or 0)
        with open(path, "w") as handle:  # the close released them all
            again = lock_ranges(handle, 10, start=1)
        with open(path, "w") as handle:
            for _ in range(500):  # the same byte, again and again: one lock held
                fcntl.lockf(handle, fcntl.LOCK_EX, 1, 0)
                fcntl.lockf(handle, fcntl.LOCK_UN, 1, 0)
        return {"first": first, "unlock": unlock, "again": again}

    supervisor = LockSupervisor()
    out = supervised(probe, supervisor, budget=100, scratch=scratch)
    held, stop = out["first"]
    assert stop == "ENOLCK" and 90 <= held <= 100, out  # at most two short of the budget
    assert out["unlock"] == "ENOLCK" and out["again"] == [10, None], out
    assert supervisor.refused >= 1
    assert supervisor.censuses >= 1


@needs_supervision
def test_ofd_locks_are_refused_and_others_work(scratch: str) -> None:
    """OFD locks get EINVAL (as before Linux 3.15); flock and lock queries are untouched."""
    path = os.path.join(scratch, "target")
    f_ofd_setlk, f_ofd_getlk = 37, 36

    def probe() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with open(path, "w") as handle:
            request = struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 1, 0)
            try:
                fcntl.fcntl(handle, f_ofd_setlk, request)
                out["ofd"] = "locked"
            except OSError as exc:
                out["ofd"] = errno.errorcode.get(exc.errno or 0)
            fcntl.fcntl(handle, f_ofd_getlk, request)  # a query takes nothing
            fcntl.flock(handle, fcntl.LOCK_EX)
            fcntl.flock(handle, fcntl.LOCK_UN)
            fcntl.lockf(handle, fcntl.LOCK_EX, 1, 0)
            out["posix"] = "locked"
        return out

    out = supervised(probe, LockSupervisor(), budget=100, scratch=scratch)
    assert out == {"ofd": "EINVAL", "posix": "locked"}


@needs_supervision
def test_calls_are_paced_per_session(scratch: str) -> None:
    """Past its burst a session's lock calls wait their turn: 600 calls at 200 a second take at
    least (600 - 200) / 200 = 2 seconds, however fast the machine."""
    path = os.path.join(scratch, "target")

    def probe() -> float:
        started = time.monotonic()
        with open(path, "w") as handle:
            for _ in range(300):
                fcntl.lockf(handle, fcntl.LOCK_EX, 1, 0)
                fcntl.lockf(handle, fcntl.LOCK_UN, 1, 0)
        return time.monotonic() - started

    elapsed = supervised(probe, LockSupervisor(rate=200), budget=100, scratch=scratch)
    assert elapsed >= 1.9, elapsed

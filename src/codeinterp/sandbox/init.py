"""Each session's pid 1: a small reaper, forked from a process that never imported the library
set, so making one costs a fraction of a millisecond instead of a second fork of the zygote.

`InitFactory` is forked by the zygote before its heavy imports. For each session it makes a new
pid namespace and forks the init into it; the zygote then forks the REPL into the same namespace
(it becomes pid 2). The init only reaps orphans. It keeps uid 0 so that sandboxed code cannot
signal it or read its /proc entries, but it holds no capabilities, lives in an empty read-only
root of its own and has the seccomp filter. When the REPL dies the zygote kills the init, and the
kernel then kills every process left in the namespace.

Every init also holds the read end of the zygote's lifeline pipe: when the zygote dies, for any
reason, the init sees end of file and exits, which ends the session. (A parent-death signal alone
is not enough: the kernel clears it whenever a process changes its credentials.)
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
from typing import Any

from . import linux

MAX_PACKET = 1 << 16


def _close_all_but(keep: set[int]) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, linux.FD_CEILING)


def _isolate(cgroup_procs: list[str], new_root: str, lifeline: int) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    _close_all_but({lifeline})
    for path in cgroup_procs:
        with open(path, "w") as f:
            f.write("0")
    # A mount namespace for the empty root is all it needs: it runs no code but ours, and a
    # network namespace costs ~0.5 ms to make and more to tear down.
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", new_root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=4k,mode=555")
    os.chdir(new_root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    linux.mount(
        None, "/", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID
    )


def _drop_privileges(seccomp_program: bytes | None) -> None:
    linux.drop_bounding_set()
    linux.clear_capabilities()
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    if seccomp_program is not None:
        from . import seccomp

        seccomp.install(seccomp_program)


def _reap_until_lifeline_ends(lifeline: int) -> None:
    """Reap every zombie as SIGCHLD arrives; return when the zygote's lifeline closes."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, or pid 1 would drop the signal
    signal.set_wakeup_fd(wake_w)
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        try:
            ready, _, _ = select.select([lifeline, wake_r], [], [])
        except InterruptedError:
            continue
        if lifeline in ready:
            return
        with contextlib.suppress(BlockingIOError):
            os.read(wake_r, 4096)


def run_init(request: dict[str, Any], seccomp_program: bytes | None, lifeline: int) -> None:
    """In the forked child, pid 1 of the new namespace. Never returns."""
    try:
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        _isolate(list(request["cgroup_procs"]), str(request["new_root"]), lifeline)
        _drop_privileges(seccomp_program)
        _reap_until_lifeline_ends(lifeline)
    finally:
        os._exit(1)


class InitFactory:
    """The zygote's handle on the factory process (blocking; the zygote is single-threaded)."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid

    @classmethod
    def start(cls, lifeline: int) -> InitFactory:
        """Fork the factory. `lifeline` is the read end of a pipe whose write end only the
        zygote holds."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                _serve(theirs, lifeline)
            finally:
                os._exit(0)
        theirs.close()
        return cls(ours, pid)

    def spawn_init(self, cgroup_procs: list[str], new_root: str) -> int:
        """Host pid of a new init, pid 1 of a fresh pid namespace."""
        self.sock.send(json.dumps({"cgroup_procs": cgroup_procs, "new_root": new_root}).encode())
        reply = json.loads(self.sock.recv(MAX_PACKET) or b'{"error": "init factory exited"}')
        if "pid" not in reply:
            raise OSError(0, f"cannot create the session's init: {reply.get('error')}")
        return int(reply["pid"])


def _serve(sock: socket.socket, lifeline: int) -> None:
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # inits are reaped by the kernel
    _close_all_but({sock.fileno(), lifeline})
    program: bytes | None = None
    with contextlib.suppress(Exception):
        from . import seccomp

        if seccomp.supported()[0]:
            program = seccomp.build_program(seccomp.SeccompProfile())
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    own_pid = os.getpid()
    while True:
        data = sock.recv(MAX_PACKET)
        if not data:
            return
        request = json.loads(data)
        try:
            linux.unshare(linux.CLONE_NEWPID)
            try:
                pid = os.fork()
            finally:
                if os.getpid() == own_pid:
                    linux.setns(own_pidns, linux.CLONE_NEWPID)
            if pid == 0:
                sock.close()
                run_init(request, program, lifeline)
            sock.send(json.dumps({"pid": pid}).encode())
        except Exception as exc:
            sock.send(json.dumps({"error": str(exc)}).encode())

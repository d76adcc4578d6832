"""Each session's pid 1: a small reaper, forked from a process that never imported the library
set, so making one costs a fraction of a millisecond instead of a second fork of the zygote.

`InitFactory` is forked by the zygote before its heavy imports. For each session it makes a new
pid namespace and forks the init into it; the zygote then forks the REPL into the same namespace
(it becomes pid 2). The init only reaps orphans. It keeps uid 0 so that sandboxed code cannot
signal it or read its /proc entries, but it holds no capabilities, lives in an empty read-only
root of its own and has the seccomp filter. When the REPL dies the zygote kills the init, and the
kernel then kills every process left in the namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from typing import Any

from . import linux

MAX_PACKET = 1 << 16


def _isolate(cgroup_procs: list[str], new_root: str) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)
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


def _reap_forever() -> None:
    """Wait for SIGCHLD (blocked, so pid 1 does not drop it) and reap every zombie."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        signal.sigtimedwait({signal.SIGCHLD}, 5.0)


def run_init(request: dict[str, Any], seccomp_program: bytes | None) -> None:
    """In the forked child, pid 1 of the new namespace. Never returns."""
    try:
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        _isolate(list(request["cgroup_procs"]), str(request["new_root"]))
        _drop_privileges(seccomp_program)
        _reap_forever()
    finally:
        os._exit(1)


class InitFactory:
    """The zygote's handle on the factory process (blocking; the zygote is single-threaded)."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid

    @classmethod
    def start(cls) -> InitFactory:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                _serve(theirs)
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


def _serve(sock: socket.socket) -> None:
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # inits are reaped by the kernel
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)
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
                run_init(request, program)
            sock.send(json.dumps({"pid": pid}).encode())
        except Exception as exc:
            sock.send(json.dumps({"error": str(exc)}).encode())

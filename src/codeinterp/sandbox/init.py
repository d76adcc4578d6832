"""Each session's pid 1: a small reaper, forked from a process that never imported the library
set, so making one costs a fraction of a millisecond instead of a second fork of the zygote.

`InitFactory` is forked by the zygote before its heavy imports. For each session it makes a new
pid namespace and forks the init into it; the zygote then forks the REPL into the same namespace
(it becomes pid 2). The init only reaps orphans. It keeps uid 0 so that sandboxed code cannot
signal it or read its /proc entries, but it holds no capabilities, lives in an empty read-only
root and has the seccomp filter. When the REPL dies the zygote kills the init, and the kernel
then kills every process left in the namespace.

The empty root is made once, by the factory, in a mount namespace of its own, which every init
it forks shares: an init used to make its own (unshare, mount, pivot_root, detach), and
pivot_root walks every thread on the machine under the tasklist lock, which the REPL's fork,
running at the same moment, waits for: with 500 sessions alive that made each new one ~2 ms
slower. The session's cgroup files, which the factory cannot reach from there, come with each
request as descriptors opened by the zygote.

The factory keeps one init made ahead, waiting (with all its privileges, alone in its empty pid
namespace, running nothing but ours) to be handed its session's cgroup files: a spawn request
then costs the zygote a hand-over instead of a fork, which takes longer the more inits are
alive (the kernel links each fork into reverse-map trees shared by all of them), and the next
init is forked while the zygote forks the REPL. It exits with the zygote like every init.

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

from . import linux

MAX_PACKET = 1 << 16
MAX_CGROUP_FDS = 8  # join files sent with one request (one per cgroup v1 hierarchy)


def _close_all_but(keep: set[int]) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, linux.FD_CEILING)


def _empty_root(new_root: str) -> None:
    """Move the calling process (the factory) into a mount namespace of its own whose root is
    an empty read-only tmpfs; nothing of the host's file systems stays in it."""
    # A mount namespace for the empty root is all the inits need: they run no code but ours,
    # and a network namespace costs ~0.5 ms to make and more to tear down.
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", new_root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=4k,mode=555")
    os.chdir(new_root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    flags = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
    linux.mount(None, "/", None, flags | linux.MS_NOEXEC)


def _isolate(cgroup_fds: list[int], null: int, lifeline: int) -> None:
    """In the init: 0/1/2 on /dev/null, nothing else open but the lifeline; join the session's
    cgroups (`cgroup_fds`: its join files, opened by the zygote)."""
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for fd in cgroup_fds:
        os.write(fd, b"0")
    _close_all_but({lifeline})


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


def _wait_for_session(conn: socket.socket, lifeline: int) -> list[int]:
    """The session's cgroup join files, when the factory hands this init to one; exits if the
    zygote goes away first."""
    while True:
        try:
            ready, _, _ = select.select([conn.fileno(), lifeline], [], [])
        except InterruptedError:
            continue
        if lifeline in ready:
            os._exit(0)
        data, fds, _, _ = socket.recv_fds(conn, 16, MAX_CGROUP_FDS)
        if not data:
            os._exit(0)
        return fds


def run_init(conn: socket.socket, null: int, seccomp_program: bytes | None, lifeline: int) -> None:
    """In the forked child, pid 1 of the new namespace: wait for a session, then serve it.
    Never returns."""
    try:
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        cgroup_fds = _wait_for_session(conn, lifeline)
        _isolate(cgroup_fds, null, lifeline)
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
    def start(cls, lifeline: int, root: str | None) -> InitFactory:
        """Fork the factory. `lifeline` is the read end of a pipe whose write end only the
        zygote holds; `root`: an empty directory, the mount point of the inits' empty root
        (None: the inits keep the zygote's mounts, only without a sandbox)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                _serve(theirs, lifeline, root)
            finally:
                os._exit(0)
        theirs.close()
        return cls(ours, pid)

    def spawn_init(self, cgroup_procs: list[str]) -> int:
        """Host pid of a new init, pid 1 of a fresh pid namespace, in the groups whose join
        files are `cgroup_procs`."""
        fds = [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in cgroup_procs]
        try:
            socket.send_fds(self.sock, [json.dumps({"cgroups": len(fds)}).encode()], fds)
        finally:
            for fd in fds:
                os.close(fd)
        reply = json.loads(self.sock.recv(MAX_PACKET) or b'{"error": "init factory exited"}')
        if "pid" not in reply:
            raise OSError(0, f"cannot create the session's init: {reply.get('error')}")
        return int(reply["pid"])


def _serve(sock: socket.socket, lifeline: int, root: str | None) -> None:
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # inits are reaped by the kernel
    _close_all_but({sock.fileno(), lifeline})
    program: bytes | None = None
    with contextlib.suppress(Exception):
        from . import seccomp

        if seccomp.supported()[0]:
            program = seccomp.build_program(seccomp.SeccompProfile())
    # What the factory and its inits need from the file system, taken before it goes away.
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    linux.last_capability()  # cached for drop_bounding_set
    problem = ""
    if root is not None:
        try:
            _empty_root(root)
        except OSError as exc:
            problem = f"cannot make the inits' empty root: {exc}"
    own_pid = os.getpid()

    def make_init() -> tuple[int, socket.socket]:
        """A new init, pid 1 of a new pid namespace, waiting for its session."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            linux.unshare(linux.CLONE_NEWPID)
            try:
                pid = os.fork()
            finally:
                if os.getpid() == own_pid:
                    linux.setns(own_pidns, linux.CLONE_NEWPID)
            if pid == 0:
                sock.close()
                ours.close()
                run_init(theirs, null, program, lifeline)
        finally:
            theirs.close()  # the parent's copy (the child never gets here)
        return pid, ours

    # The next session's init is made as soon as the last one is handed out (see the module
    # docstring), so that a spawn request waits for a hand-over, not for a fork.
    spare: tuple[int, socket.socket] | None = None
    while True:
        if spare is None and not problem and root is not None:  # none ahead without a sandbox
            with contextlib.suppress(Exception):
                spare = make_init()
        data, fds, _, _ = socket.recv_fds(sock, MAX_PACKET, MAX_CGROUP_FDS)
        if not data:
            return
        try:
            if problem:
                raise OSError(0, problem)
            for attempt in (1, 2):
                if spare is None:
                    spare = make_init()
                pid, conn = spare
                spare = None
                try:
                    socket.send_fds(conn, [b"go"], fds)
                    break
                except OSError:  # that init died while it waited: make another
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    if attempt == 2:
                        raise
                finally:
                    conn.close()
            sock.send(json.dumps({"pid": pid}).encode())
        except Exception as exc:
            sock.send(json.dumps({"error": str(exc)}).encode())
        finally:
            for fd in fds:
                os.close(fd)

"""The zygote: imports the sandbox's library set once, then forks one process per session.

Run as its own program (`python -m codeinterp.sandbox.zygote --control-fd N`) by the host with a
clean environment: sandboxed code can read the zygote's memory (its stack still holds the
environment it started with), so it must never hold secrets.

Control protocol (SOCK_SEQPACKET, one JSON object per packet):
  host -> zygote  {"op": "spawn", "id", "policy", "uid", "gid", "cgroup_procs", "workspace",
                   "unsafe"}, with a detached copy of the workspace's mount attached
                   (SCM_RIGHTS; none without a sandbox)
  zygote -> host  {"ev": "hello", "pid", "python", "environment_binds", "preload_ms", "seccomp",
                   "seccomp_profiles", "file_locks" (whether record locks are counted)}
                  {"ev": "spawned", "id", "pid", "init_pid"} (the REPL and its namespace's init)
                    with the session's socket and its stdout and stderr pipes attached
                    (SCM_RIGHTS); or {"ev": "spawn_failed", "id", "error"}
                  {"ev": "exited", "pid", "status"} when a session's REPL has died (its wait
                    status); the zygote has then killed the init, ending the namespace
  host -> zygote  {"op": "jail", "id", "policy", "cgroup_procs", "new_root"}: make a task jail
                    (jail.JAIL_BUILD_STEPS) and hold its namespaces open under "id"
  zygote -> host  {"ev": "jail_made", "id"} or {"ev": "jail_failed", "id", "error"}
  host -> zygote  {"op": "drop_jail", "jail"}: let the jail's namespaces go
                  A "spawn" naming a "jail" forks a task's process into it (jail.TASK_STEPS).

`--light` leaves the library set out (sessions import what they use): the task zygote, whose
forks cost a fraction of the full one's (its memory is ~34 MB instead of ~270).

With a sandbox, the zygote lives in a mount namespace of its own, made private at start-up
(`--private-mounts`): the workspaces the host mounts later never appear in it. Every session's
jail (and init) copies the zygote's namespace when it unshares its own and tears the copy down
at pivot_root, so a host namespace holding every live session's workspace made each new session
cost O(live sessions) in mount copies. The workspace reaches the jail as a descriptor instead
(`linux.clone_mount` on the host, `linux.attach_mount` in the jail).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import gc
import importlib
import json
import os
import resource
import select
import signal
import site
import socket
import sys
import sysconfig
import time
import traceback
from typing import Any

from . import linux
from .file_locks import LockSupervisor
from .init import InitFactory
from .preload import PRELOAD

MAX_PACKET = 1 << 20
MAX_FDS = 4  # descriptors accepted with one request (a spawn sends up to two)


def _preload(light: bool = False, packages: str | None = None, extra: tuple[str, ...] = ()) -> Any:
    """Import the library set (none if `light`), then an environment's modules (`extra`, from
    its site-packages `packages`, after the default set on the path): what every session
    forked from here finds already imported."""
    if packages is not None:
        site.addsitedir(packages)
    for name in () if light else (*PRELOAD, *extra):
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a custom environment may lack some; sessions still work
            print(f"zygote: cannot preload {name}: {exc}", file=sys.stderr)
    from .kernel import build_shell

    shell = build_shell(matplotlib=not light)
    _warm_up(shell)
    _rehearse(shell)
    return shell


def _rehearse(shell: Any) -> None:
    """Run a few typical cells through the kernel's own path (see kernel.rehearse)."""
    from .kernel import rehearse

    cells = ["print(1 + 1)\n1 + 1"]
    if "pandas" in sys.modules:
        cells.append("import pandas as pd\npd.DataFrame({'x': [1, 2], 'y': [0.5, 1.0]}).head()")
    if "matplotlib.pyplot" in sys.modules:
        cells.append("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])")
    cells.append("1 / 0")  # the traceback path
    try:
        rehearse(shell, cells)
    except Exception as exc:  # a custom environment may break one; sessions still work
        print(f"zygote: rehearsal failed: {exc}", file=sys.stderr)


def _warm_up(shell: Any) -> None:
    """Touch the lazy paths once (fonts, Agg, BLAS, HTML, tracebacks) so sessions do not pay."""
    import io

    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        etype, value, tb = sys.exc_info()
        shell.InteractiveTB.structured_traceback(etype, value, tb)

    if "pandas" not in sys.modules or "matplotlib.pyplot" not in sys.modules:
        return  # the light zygote: nothing to warm, and nothing to import here
    try:
        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd

        np.dot(np.ones((8, 8)), np.ones((8, 8)))
        pd.DataFrame({"a": [1, 2]}).to_html()
        fig = plt.figure()
        plt.plot([1, 2, 3])
        fig.savefig(io.BytesIO(), format="png")
        plt.close("all")
    except ImportError:
        pass


def environment_binds() -> list[str]:
    """Host paths that make up this interpreter's environment, bound read-only at their paths."""
    import codeinterp

    candidates = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.dirname(os.path.abspath(codeinterp.__file__))),
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    }
    real = {os.path.realpath(p) for p in candidates} | candidates
    # Keep only the outermost paths: a bind of a parent already shows its children.
    ordered = sorted(real, key=len)
    chosen: list[str] = []
    for path in ordered:
        if not os.path.exists(path) or any(path.startswith(c.rstrip("/") + "/") for c in chosen):
            continue
        if path in ("/", "/usr") or path.startswith("/usr/"):
            continue  # the system bind covers it
        chosen.append(path)
    return chosen


def _single_threaded() -> bool:
    return len(os.listdir("/proc/self/task")) == 1


class Zygote:
    def __init__(
        self, control: socket.socket, shell: Any, preload_ms: float, inits: InitFactory
    ) -> None:
        self.control = control
        self.inits = inits
        self.init_of: dict[int, int] = {}  # REPL pid -> its namespace's init pid
        self.shell = shell
        self.preload_ms = preload_ms
        self.binds = environment_binds()
        # One program per named profile ("deny", "allow"), built once; each spawn picks its own.
        self.seccomp_programs: dict[str, bytes] = {}
        self.seccomp_error = ""
        try:
            from . import seccomp

            ok, why = seccomp.supported()
            if ok:
                self.seccomp_programs = {
                    name: seccomp.build_program(seccomp.profile(name)) for name in seccomp.PROFILES
                }
            else:
                self.seccomp_error = why
        except Exception as exc:  # reported to the host, which decides whether to refuse
            self.seccomp_error = str(exc)
        # Record locks: each session sends us its lock filter's listener (see file_locks).
        self.lock_program: bytes | None = None
        self.locks_error = ""
        if self.seccomp_programs:
            from . import seccomp

            ok, self.locks_error = seccomp.lock_supervision_supported()
            if ok:
                self.lock_program = seccomp.build_lock_supervision_program()
                self.locks_error = ""
        self.locks = LockSupervisor()
        self.handoffs: dict[int, tuple[socket.socket, str, int]] = {}
        # epoll, not poll: the zygote watches one listener per live session, and poll() walks
        # all of them on every wake-up (every spawn request), a cost that grows with sessions.
        self.poller = select.epoll()
        self.locks.on_forget = self._unwatch
        self.jails: dict[str, dict[int, int]] = {}  # task jail -> its namespaces' descriptors
        self.pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.pid = os.getpid()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            self.control.sendmsg([data], ancillary)
        else:
            self.control.send(data)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self._wake_w)
        # Everything allocated so far is shared with every session: move it out of the
        # collector's reach, or the first collection in a session copies ~50 MB of it.
        gc.collect()
        gc.freeze()
        # Fewer page-table entries to copy: the zygote's fork goes from ~5.5 to ~2.7 ms here,
        # with the same memory per session (a write in a child still copies 4 KiB, not 2 MiB).
        linux.collapse_anonymous_memory()
        self.send(
            {
                "ev": "hello",
                "pid": os.getpid(),
                "python": sys.executable,
                "version": sys.version.split()[0],
                "environment_binds": self.binds,
                "preload_ms": self.preload_ms,
                "seccomp": bool(self.seccomp_programs),
                "seccomp_profiles": sorted(self.seccomp_programs),
                "seccomp_error": self.seccomp_error,
                "file_locks": self.lock_program is not None,
                "file_locks_error": self.locks_error,
            }
        )
        self.poller.register(self.control.fileno(), select.POLLIN)
        self.poller.register(self._wake_r, select.POLLIN)
        while True:
            timeout = self.locks.timeout()
            try:
                ready = self.poller.poll(-1 if timeout is None else timeout + 0.001)
            except InterruptedError:
                continue
            for fd, events in ready:
                if fd == self._wake_r:
                    self._drain_wakeups()
                    self._reap()
                elif fd == self.control.fileno():
                    data, fds, _, _ = socket.recv_fds(self.control, MAX_PACKET, MAX_FDS)
                    if not data:
                        return  # the host is gone
                    try:
                        message = json.loads(data)
                        op = message.get("op")
                        if op == "spawn":
                            # Descriptors come in the order the request names them.
                            named = dict(zip(message.get("fds") or (), fds, strict=False))
                            self.spawn(
                                message, named.get("workspace", -1), named.get("restore", -1)
                            )
                        elif op == "jail":
                            self.make_jail(message)
                        elif op == "drop_jail":
                            for fd in self.jails.pop(str(message.get("jail")), {}).values():
                                os.close(fd)
                    finally:
                        for received in fds:
                            os.close(received)
                elif fd in self.handoffs:
                    self._take_listener(fd)
                elif fd in self.locks.sessions:
                    self.locks.on_event(fd, events)
            self.locks.run_due()

    def _unwatch(self, fd: int) -> None:
        """Stop watching `fd` before it is closed (epoll would keep reporting a descriptor
        whose file a just-forked child still holds)."""
        with contextlib.suppress(OSError, ValueError):
            self.poller.unregister(fd)

    def _take_listener(self, fd: int) -> None:
        """A session's jail sent its lock filter's listener (or died before it could)."""
        sock, procs_path, budget = self.handoffs.pop(fd)
        self.poller.unregister(fd)
        try:
            _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        except OSError:
            fds = []
        finally:
            sock.close()
        if fds:
            os.set_inheritable(fds[0], False)
            self.locks.watch(fds[0], procs_path, budget)
            self.poller.register(fds[0], select.POLLIN)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            init_pid = self.init_of.pop(pid, 0)
            if init_pid:  # the REPL is gone: end its namespace and everything left in it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init_pid, signal.SIGKILL)
            self.send({"ev": "exited", "pid": pid, "status": status})

    def spawn(self, request: dict[str, Any], workspace_fd: int = -1, restore_fd: int = -1) -> None:
        """Fork one session. `workspace_fd`: a detached mount of its workspace (from the host),
        which the jail attaches at /mnt/data; `restore_fd`: a snapshot to restore before it
        serves. The caller closes both afterwards."""
        from .jail import JAIL_STEPS, TASK_STEPS, UNSAFE_STEPS, JailContext
        from .policy import SandboxPolicy

        unsafe = bool(request.get("unsafe"))
        jail = request.get("jail")
        init_pid = 0
        handoff: socket.socket | None = None  # our end of the lock listener's way out
        handoff_child: socket.socket | None = None
        try:
            if jail is not None and str(jail) not in self.jails:
                raise RuntimeError(f"there is no task jail {jail}")
            jail_fds = {} if jail is None else dict(self.jails[str(jail)])
            policy = SandboxPolicy.from_dict(request["policy"])
            seccomp_program = (
                None
                if unsafe or not policy.seccomp or not self.seccomp_programs
                else self.seccomp_programs[policy.seccomp_profile or "deny"]
            )
            if seccomp_program is not None and self.lock_program is not None:
                handoff, handoff_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            ctx = JailContext(
                policy=policy,
                uid=int(request["uid"]),
                gid=int(request["gid"]),
                cgroup_procs=list(request["cgroup_procs"]),
                workspace=str(request["workspace"]),
                workspace_fd=workspace_fd,
                new_root=str(request["new_root"]),
                environment_binds=self.binds,
                seccomp_program=seccomp_program,
                lock_program=self.lock_program if handoff_child else None,
                lock_listener_to=handoff_child.fileno() if handoff_child else -1,
                channel_fd=child_end.fileno(),
                stdout_fd=out_w,
                stderr_fd=err_w,
                jail_fds=jail_fds,
                restore_fd=restore_fd,
            )
            if not _single_threaded():
                raise RuntimeError("zygote is not single-threaded; refusing to fork")
            started = time.perf_counter()
            if jail is not None:
                # A task's REPL is pid 1 of a pid namespace of its own: when it exits, the
                # kernel kills every process the task left. An init as well (what a session
                # has, so that orphans are reaped while it lives on) cost a task ~3.5 ms of
                # CPU, a third of the whole; a task ends too soon to gather many zombies.
                linux.unshare(linux.CLONE_NEWPID)
            elif not unsafe:
                init_pid = self.inits.spawn_init(ctx.cgroup_procs)
                ctx.timings["zygote_init"] = (time.perf_counter() - started) * 1000
                pidns = os.open(f"/proc/{init_pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    linux.setns(pidns, linux.CLONE_NEWPID)  # our next child is its pid 2
                finally:
                    os.close(pidns)
            forking = time.perf_counter()
            try:
                pid = os.fork()
            finally:
                # Back to our own namespace for the next fork (only the parent; the child's
                # children belong in the session's namespace).
                if not unsafe and os.getpid() == self.pid:
                    linux.setns(self.pidns, linux.CLONE_NEWPID)
        except Exception as exc:
            if init_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init_pid, signal.SIGKILL)
            for end in (handoff, handoff_child):
                if end is not None:
                    end.close()
            self.send({"ev": "spawn_failed", "id": request.get("id"), "error": str(exc)})
            return
        if pid == 0:
            steps = UNSAFE_STEPS if unsafe else TASK_STEPS if jail is not None else JAIL_STEPS
            self._run_child(ctx, steps, child_end, unsafe)
        ctx.timings["zygote_fork"] = (time.perf_counter() - forking) * 1000
        if init_pid:
            self.init_of[pid] = init_pid
        if handoff is not None and handoff_child is not None:
            handoff_child.close()
            # cgroup.procs rather than the v1 "tasks" the jail joins by: one pid per process,
            # since the threads of a process share its open files.
            procs = os.path.join(os.path.dirname(ctx.cgroup_procs[0]), "cgroup.procs")
            self.handoffs[handoff.fileno()] = (handoff, procs, policy.limits.file_locks)
            self.poller.register(handoff.fileno(), select.POLLIN)
        child_end.close()
        os.close(out_w)
        os.close(err_w)
        timings = {
            name: ctx.timings[name]
            for name in ("zygote_init", "zygote_fork")
            if name in ctx.timings
        }
        self.send(
            {
                "ev": "spawned",
                "id": request["id"],
                "pid": pid,
                "init_pid": init_pid,
                "timings": timings,
            },
            [host_end.fileno(), out_r, err_r],
        )
        host_end.close()
        os.close(out_r)
        os.close(err_r)

    def make_jail(self, request: dict[str, Any]) -> None:
        """Make a task jail: a short-lived child builds its namespaces, which we open (that
        keeps them alive once it is gone) before killing it. Blocks for the build (~5 ms)."""
        from .jail import JAIL_BUILD_STEPS, JailContext, JailError, enter_jail
        from .policy import SandboxPolicy

        jail_id = str(request["id"])
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
        pid = 0
        try:
            if not _single_threaded():
                raise RuntimeError("zygote is not single-threaded; refusing to fork")
            ctx = JailContext(
                policy=SandboxPolicy.from_dict(request["policy"]),
                uid=0,
                gid=0,
                cgroup_procs=list(request["cgroup_procs"]),
                workspace="",
                workspace_fd=-1,
                new_root=str(request["new_root"]),
                environment_binds=self.binds,
                seccomp_program=None,
                lock_program=None,
                lock_listener_to=-1,
                channel_fd=theirs.fileno(),
                stdout_fd=null,
                stderr_fd=null,
            )
            pid = os.fork()
            if pid == 0:
                answer: dict[str, Any] = {"ok": True}
                try:
                    enter_jail(ctx, JAIL_BUILD_STEPS)
                except JailError as exc:
                    answer = {"error": str(exc)}
                with contextlib.suppress(OSError):
                    theirs.send(json.dumps(answer).encode())
                    theirs.recv(1)  # until we are killed
                os._exit(0)
            theirs.close()
            ready, _, _ = select.select([ours], [], [], 30)
            answer = json.loads(ours.recv(MAX_PACKET) or b'{"error": "exited"}') if ready else {}
            if not answer.get("ok"):
                raise RuntimeError(answer.get("error") or "timed out")
            names = {
                linux.CLONE_NEWCGROUP: "cgroup",
                linux.CLONE_NEWNET: "net",
                linux.CLONE_NEWUTS: "uts",
                linux.CLONE_NEWNS: "mnt",
            }
            self.jails[jail_id] = {
                nstype: os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                for nstype, name in names.items()
            }
        except Exception as exc:
            self.send({"ev": "jail_failed", "id": request.get("id"), "error": str(exc)})
        else:
            self.send({"ev": "jail_made", "id": request.get("id")})
        finally:
            ours.close()
            theirs.close()
            os.close(null)
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def _run_child(self, ctx: Any, steps: Any, channel: socket.socket, unsafe: bool) -> None:
        """In the forked child: jail, then serve the session. Never returns."""
        from .channel import send_message
        from .jail import JailError, enter_jail
        from .kernel import ChannelStream, Kernel

        code = 0
        try:
            enter_jail(ctx, steps)
            # The __std*__ originals too: some libraries write to those directly.
            sys.stdout = sys.__stdout__ = ChannelStream("stdout", 1)  # type: ignore[assignment,misc]
            sys.stderr = sys.__stderr__ = ChannelStream("stderr", 2)  # type: ignore[assignment,misc]
            sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
            started = time.perf_counter()
            _reseed()
            ctx.timings["reseed"] = (time.perf_counter() - started) * 1000
            workspace = ctx.workspace if unsafe else "/mnt/data"
            restored = None
            if ctx.restore_fd >= 0:
                started = time.perf_counter()
                restored = _restore(self.shell, ctx.restore_fd, workspace)
                ctx.timings["restore"] = (time.perf_counter() - started) * 1000
            Kernel(self.shell, channel, workspace=workspace).serve(ctx.timings, restored)
        except JailError as exc:
            with contextlib.suppress(OSError):
                send_message(channel, {"ev": "failed", "step": exc.step, "error": str(exc)})
            code = 70
        except BaseException:
            with contextlib.suppress(OSError):
                send_message(
                    channel, {"ev": "failed", "step": "kernel", "error": traceback.format_exc()}
                )
            code = 70
        finally:
            os._exit(code)


def _restore(shell: Any, fd: int, workspace: str) -> dict[str, Any]:
    """Restore a snapshot into this fresh session, inside its jail (see snapshot.py); what
    it prints goes nowhere (the channel speaks only once the session is ready)."""
    import io

    from .snapshot import restore_archive, session_home

    with (
        os.fdopen(fd, "rb", buffering=1 << 20) as source,
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        return restore_archive(shell, source, workspace, session_home(workspace))


def _reseed() -> None:
    """Fork copies every random generator's state; give each session its own streams."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _unescape_mountinfo(field: str) -> str:
    """/proc/self/mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def private_mount_namespace(hidden: list[str]) -> None:
    """Move this process into a mount namespace of its own, copied from the current one, that
    receives nothing the host mounts afterwards; detach the mounts already below `hidden`
    (the workspaces of live sessions when a zygote is started again)."""
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    prefixes = [d.rstrip("/") + "/" for d in hidden]
    with open("/proc/self/mountinfo") as f:
        points = [_unescape_mountinfo(line.split()[4]) for line in f]
    # Deepest first; a detached parent takes its children with it, hence the suppress.
    for point in sorted((p for p in points if p.startswith(tuple(prefixes))), reverse=True):
        with contextlib.suppress(OSError):
            linux.umount2(point, linux.MNT_DETACH)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="codeinterp-zygote",
        description=(
            "Its settings come as the first message on the control socket, a JSON object "
            "(see ZygoteClient.start): every session forked from it reads this process's "
            "command line as its own /proc/1/cmdline, which must name nothing of the host."
        ),
    )
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the host
    control = socket.socket(fileno=args.control_fd)
    control.set_inheritable(False)
    settings = json.loads(control.recv(1 << 16))
    if os.getppid() != settings["parent_pid"]:
        sys.exit(1)  # the host died before the death signal took effect
    # Sessions close every descriptor below linux.FD_CEILING they do not keep (jail, init): the
    # zygote must never hold one above it, whatever limit it inherited.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = linux.FD_CEILING if hard == resource.RLIM_INFINITY else min(hard, linux.FD_CEILING)
    resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    if settings["private_mounts"]:
        # Before the init factory forks: it and every init share this namespace's copy.
        private_mount_namespace(settings["hide_mounts"])
    # Before the heavy imports, so that the factory's forks stay cheap. The lifeline's write end
    # stays here (every session closes its copy); its read end goes to every init.
    lifeline_r, _lifeline_w = os.pipe()
    inits = InitFactory.start(lifeline_r, settings["init_root"])
    os.close(lifeline_r)
    started = time.perf_counter()
    shell = _preload(
        light=settings["light"], packages=settings["packages"], extra=tuple(settings["preload"])
    )
    preload_ms = (time.perf_counter() - started) * 1000
    Zygote(control, shell, preload_ms, inits).serve()


if __name__ == "__main__":
    main()

"""The jail: applied in a freshly forked session process, one named step at a time.

`enter_jail` is the whole sequence. It runs in the session's REPL process, which the zygote
forked into the session's new pid namespace (as pid 2; pid 1 is the reaper from `init.py`), as
root and single-threaded. Order matters and is fixed:

    reset_signals → close_inherited_fds → join_cgroups → unshare_namespaces → build_root
    → switch_root → set_up_network → set_rlimits → drop_privileges
    → install_seccomp (last: it also blocks what came before) → enter_session_environment

A one-shot task runs in a *task jail* instead, made once and used by one task after another
(see task_jails.py): `JAIL_BUILD_STEPS` make its namespaces (mount with the shared read-only
root, network, uts, cgroup), which the zygote then holds open; each task's process joins them
(`enter_task_jail`) and gets private copies of everything a task can write or see: a mount
namespace with fresh /tmp, home, /dev/shm, identity files, workspace and /proc, an IPC namespace,
and a pid namespace (made by the zygote: the task's REPL is its pid 1). Only read-only files, the
loopback interface and the cgroup are shared between one task and the next, never at once.

A failing step raises JailError naming itself; the zygote's child reports it to the host.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import site
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import linux
from .policy import SESSION_PACKAGES, SandboxPolicy

WORKSPACE = "/mnt/data"
HOME = "/home/sandbox"
TMPFS_INODES = 100_000  # files per writable tmpfs: each costs kernel memory


class JailError(Exception):
    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"jail step {step} failed: {error}")
        self.step = step


@dataclass
class JailContext:
    """What one session's jail needs; host paths stay on this side of the jail."""

    policy: SandboxPolicy
    uid: int
    gid: int
    cgroup_procs: list[str]
    workspace: str  # host directory mounted at /mnt/data (without a sandbox: used as is)
    # A detached copy of the workspace's mount (linux.clone_mount), attached at /mnt/data; -1:
    # bind `workspace` by path instead (visible only if the zygote shares the host's mounts).
    workspace_fd: int
    new_root: str  # empty host directory used as the mount point of the new root
    environment_binds: list[str]  # the Python environment, bound read-only at its own path
    seccomp_program: bytes | None
    lock_program: bytes | None  # the record-lock filter (file_locks), loaded before the profile
    lock_listener_to: int  # socket that takes the lock filter's listener to the zygote, or -1
    channel_fd: int
    stdout_fd: int
    stderr_fd: int
    # A task jail's namespaces (CLONE_NEW* type -> descriptor), joined by enter_task_jail.
    jail_fds: dict[int, int] = field(default_factory=dict)
    restore_fd: int = -1  # a snapshot to restore before serving (see snapshot.py), or -1
    timings: dict[str, float] = field(default_factory=dict)  # step -> milliseconds


Step = Callable[[JailContext], None]


def reset_signals(ctx: JailContext) -> None:
    """Undo the zygote's signal setup: an inherited SIG_IGN for SIGCHLD breaks subprocess."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as CPython sets it at start-up
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the zygote
    os.umask(0o022)


def close_inherited_fds(ctx: JailContext) -> None:
    """Keep only the session channel and the output pipes; 0/1/2 become /dev/null and pipes."""
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(ctx.stdout_fd, 1)
    os.dup2(ctx.stderr_fd, 2)
    keep = sorted(
        {
            0,
            1,
            2,
            ctx.channel_fd,
            ctx.lock_listener_to,
            ctx.workspace_fd,
            ctx.restore_fd,
            *ctx.jail_fds.values(),
        }
        - {-1}
    )
    for low, high in zip(keep, [*keep[1:], linux.FD_CEILING], strict=True):
        os.closerange(low + 1, high)
    os.set_inheritable(ctx.channel_fd, False)
    ctx.stdout_fd, ctx.stderr_fd = 1, 2


def join_cgroups(ctx: JailContext) -> None:
    """Enter the session's groups while single-threaded, before any other process exists."""
    for path in ctx.cgroup_procs:
        with open(path, "w") as f:
            f.write("0")


def unshare_namespaces(ctx: JailContext) -> None:
    # The pid namespace was made by the zygote (we are its pid 1); the rest is ours.
    linux.unshare(
        linux.CLONE_NEWNS
        | linux.CLONE_NEWNET
        | linux.CLONE_NEWIPC
        | linux.CLONE_NEWUTS
        | linux.CLONE_NEWCGROUP
    )


def _bind(source: str, target: str, *, readonly: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if not os.path.exists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    if readonly:
        linux.make_tree_readonly(target)  # submounts too, not only the top of the tree
    else:
        flags = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_NOSUID | linux.MS_NODEV
        linux.mount(None, target, None, flags)


def _write_file(path: str, text: str, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _user_files(ctx: JailContext, etc: str) -> None:
    """passwd and group naming the session's own uid: nothing of the host's user list shows."""
    _write_file(
        f"{etc}/passwd",
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"sandbox:x:{ctx.uid}:{ctx.gid}:sandbox:{HOME}:/bin/bash\n",
    )
    _write_file(f"{etc}/group", f"root:x:0:\nsandbox:x:{ctx.gid}:\n")


def _host_files(ctx: JailContext, etc: str) -> None:
    _write_file(
        f"{etc}/hosts",
        f"127.0.0.1\tlocalhost {ctx.policy.hostname}\n::1\tlocalhost ip6-localhost\n",
    )
    _write_file(f"{etc}/hostname", ctx.policy.hostname + "\n")


def _shared_memory(target: str) -> None:
    linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=64m,mode=1777")


def _minimal_dev(root: str, *, shm: bool = True) -> None:
    dev = f"{root}/dev"
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC, "size=64k,mode=755")
    for name in ("null", "zero", "full", "random", "urandom"):
        os.close(os.open(f"{dev}/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
        linux.mount(f"/dev/{name}", f"{dev}/{name}", None, linux.MS_BIND)
    os.mkdir(f"{dev}/shm", 0o1777)
    if shm:
        _shared_memory(f"{dev}/shm")
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")


# Host kernel files a fresh /proc still shows: /dev/null is bound over them (as runc does for
# Docker's masked paths), so they read as empty. Boot arguments, kernel symbols and config,
# loaded modules, keys, timers, the scheduler's and the interrupt counters (a side channel).
_PROC_MASKED = (
    "cmdline",
    "kallsyms",
    "config.gz",
    "modules",
    "bootconfig",
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "interrupts",
    "sysrq-trigger",
)
# Host device directories: an empty read-only tmpfs over each.
_PROC_EMPTY = ("acpi", "asound", "scsi", "driver", "dynamic_debug")
_PROC_READONLY = ("sys", "bus", "fs", "irq")


def _fresh_proc(root: str) -> None:
    """A /proc of the session's own pid namespace, with the kernel's sensitive files masked."""
    proc = f"{root}/proc"
    linux.mount("proc", proc, "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    for name in _PROC_MASKED:
        if os.path.exists(f"{proc}/{name}"):
            linux.mount(f"{root}/dev/null", f"{proc}/{name}", None, linux.MS_BIND)
    empty = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    for name in _PROC_EMPTY:
        if os.path.isdir(f"{proc}/{name}"):
            linux.mount("tmpfs", f"{proc}/{name}", "tmpfs", empty, "size=4k,nr_inodes=1,mode=555")
    for name in _PROC_READONLY:
        if os.path.isdir(f"{proc}/{name}"):
            _bind(f"{proc}/{name}", f"{proc}/{name}", readonly=True)


def _attach_workspace(ctx: JailContext, target: str) -> None:
    if ctx.workspace_fd < 0:
        _bind(ctx.workspace, target, readonly=False)
        return
    linux.attach_mount(ctx.workspace_fd, target)
    os.close(ctx.workspace_fd)
    ctx.workspace_fd = -1
    flags = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_NOSUID | linux.MS_NODEV
    linux.mount(None, target, None, flags)


def _system_tree(ctx: JailContext, root: str) -> None:
    """The root's directories and the system's symbolic links."""
    for name in ("etc", "tmp", "mnt/data", "dev", "proc", "home/sandbox", "root"):
        os.makedirs(f"{root}/{name}", mode=0o755, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = f"/{link}"
        if os.path.islink(target):
            os.symlink(os.readlink(target), f"{root}/{link}")
        elif os.path.isdir(target) and target not in ctx.policy.readonly_binds:
            _bind(target, f"{root}/{link}", readonly=True)


def _empty_root(ctx: JailContext) -> str:
    """A tmpfs at the new root's mount point, with the system's directories and links; in a
    mount namespace whose mounts no longer propagate back to the host's."""
    root = ctx.new_root
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=4m,mode=755")
    _system_tree(ctx, root)
    return root


def _readonly_binds(ctx: JailContext, root: str) -> None:
    for path in (*ctx.policy.readonly_binds, *ctx.environment_binds):
        if os.path.exists(path):
            _bind(path, f"{root}{path}", readonly=True)
    if ctx.policy.packages is not None:  # asked for: missing is an error, not a quiet skip
        _bind(ctx.policy.packages, f"{root}{ctx.policy.packages}", readonly=True)


def _python_binds(ctx: JailContext) -> list[str]:
    """What the session's Python needs to see: its environment and any packages on top."""
    return [*ctx.environment_binds, *([ctx.policy.packages] if ctx.policy.packages else [])]


def _scratch_areas(ctx: JailContext, root: str) -> None:
    """The writable /tmp and home, each a tmpfs of the policy's size."""
    lim = ctx.policy.limits
    ids = f"uid={ctx.uid},gid={ctx.gid}"
    flags = linux.MS_NOSUID | linux.MS_NODEV
    inodes = f"nr_inodes={TMPFS_INODES}"
    linux.mount("tmpfs", f"{root}/tmp", "tmpfs", flags, f"size={lim.tmp},mode=1777,{inodes}")
    linux.mount("tmpfs", f"{root}{HOME}", "tmpfs", flags, f"size={lim.tmp},mode=700,{ids},{inodes}")


def build_root(ctx: JailContext) -> None:
    """A tmpfs root holding only what the policy names, plus the session's writable areas."""
    root = _empty_root(ctx)
    # The writable tmpfs mounts come before the binds: a Python environment that lives under
    # /tmp on the host (a CI checkout, say) must stay visible, not be covered by the new /tmp.
    _scratch_areas(ctx, root)
    _readonly_binds(ctx, root)
    _user_files(ctx, f"{root}/etc")
    _host_files(ctx, f"{root}/etc")
    _attach_workspace(ctx, f"{root}{WORKSPACE}")
    _minimal_dev(root)
    _fresh_proc(root)


def build_shared_root(ctx: JailContext) -> None:
    """A task jail's root: `build_root` without anything a task could write or that names one
    task (each task's own come with `enter_task_jail`). passwd and group are empty files here,
    mount points for each task's own."""
    root = _empty_root(ctx)
    _readonly_binds(ctx, root)
    _host_files(ctx, f"{root}/etc")
    for name in ("passwd", "group"):
        _write_file(f"{root}/etc/{name}", "")
    _minimal_dev(root, shm=False)


def _keep_visible(paths: list[str], under: str) -> list[tuple[str, int]]:
    """Detached copies of the mounts of `paths` below `under`, which a new mount over `under`
    would cover (a Python environment under /tmp on the host): attach them again after it."""
    return [
        (path, linux.clone_mount(path, recursive=True))
        for path in paths
        if path.startswith(under.rstrip("/") + "/") and os.path.exists(path)
    ]


def _task_user_files(ctx: JailContext) -> None:
    """This task's passwd and group, written in a tmpfs of their own (mounted for a moment at
    /mnt/data, before the workspace) and bound read-only over the shared root's empty files."""
    linux.mount("tmpfs", WORKSPACE, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=16k,mode=755")
    _user_files(ctx, WORKSPACE)
    for name in ("passwd", "group"):
        linux.mount(f"{WORKSPACE}/{name}", f"/etc/{name}", None, linux.MS_BIND)
        flags = (
            linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
        )
        linux.mount(None, f"/etc/{name}", None, flags)
    linux.umount2(WORKSPACE, linux.MNT_DETACH)  # the binds keep the files


def enter_task_jail(ctx: JailContext) -> None:
    """Join a task jail's namespaces (root, network, hostname, cgroup), then take private
    copies of the mount and IPC namespaces and mount this task's own writable areas, identity
    files, workspace and /proc (of the pid namespace we are pid 1 of, new per task)."""
    for nstype in (
        linux.CLONE_NEWCGROUP,
        linux.CLONE_NEWNET,
        linux.CLONE_NEWUTS,
        linux.CLONE_NEWNS,
    ):
        fd = ctx.jail_fds.pop(nstype)
        linux.setns(fd, nstype)  # the mount namespace last: it moves us into the jail's root
        os.close(fd)
    os.chdir("/")
    linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWIPC)
    covered = _keep_visible(_python_binds(ctx), "/tmp")
    _scratch_areas(ctx, "")
    for path, fd in covered:
        os.makedirs(path, mode=0o755, exist_ok=True)
        linux.attach_mount(fd, path)
        os.close(fd)
    _shared_memory("/dev/shm")
    _task_user_files(ctx)
    _attach_workspace(ctx, WORKSPACE)
    _fresh_proc("")


def switch_root(ctx: JailContext) -> None:
    os.chdir(ctx.new_root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)  # the old root, stacked under the new one
    os.chdir("/")
    flags = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
    linux.mount(None, "/", None, flags)


def set_up_network(ctx: JailContext) -> None:
    """The new network namespace has only `lo`, down: bring it up; there is no route out."""
    socket.sethostname(ctx.policy.hostname)
    linux.bring_up_loopback()


def set_rlimits(ctx: JailContext) -> None:
    """The zygote runs with whatever limits the operator's shell or service manager gave it;
    these are set here instead. Besides files, sizes and processes they bound kernel objects that
    are counted per user rather than per cgroup (locked memory, message queue bytes, queued
    signals, which also bound POSIX timers), and refuse real-time priority and negative nice
    values: the CPU quota does not hold back a SCHED_FIFO thread."""
    lim = ctx.policy.limits
    for which, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, lim.open_files),
        (resource.RLIMIT_FSIZE, max(lim.workspace, lim.tmp)),
        (resource.RLIMIT_AS, lim.address_space),
        (resource.RLIMIT_NPROC, lim.processes),
        (resource.RLIMIT_MEMLOCK, lim.locked_memory),
        (resource.RLIMIT_MSGQUEUE, lim.message_queues),
        (resource.RLIMIT_SIGPENDING, lim.pending_signals),
        (resource.RLIMIT_RTPRIO, 0),
        (resource.RLIMIT_NICE, 0),
    ):
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def drop_privileges(ctx: JailContext) -> None:
    # Bounding set first: dropping it needs CAP_SETPCAP, which setuid takes away.
    linux.drop_bounding_set()
    os.setgroups([])
    os.setresgid(ctx.gid, ctx.gid, ctx.gid)
    os.setresuid(ctx.uid, ctx.uid, ctx.uid)  # from root to non-root: the kernel clears caps
    linux.clear_capabilities()  # and we say so explicitly
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    # setuid made us non-dumpable, which hides our own /proc/self/fd from us; we hold no secrets.
    linux.prctl(linux.PR_SET_DUMPABLE, 1)
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # the credential change cleared it


def install_seccomp(ctx: JailContext) -> None:
    from . import seccomp

    if ctx.lock_program is not None:
        # First, while sendmsg is still allowed (the allow-list profile has none): the listener
        # goes to the zygote, and no process of the session keeps it.
        listener = seccomp.install(ctx.lock_program, listener=True)
        with socket.socket(fileno=ctx.lock_listener_to) as way_out:
            socket.send_fds(way_out, [b"L"], [listener])
        os.close(listener)
        ctx.lock_listener_to = -1
    if ctx.seccomp_program is not None:
        seccomp.install(ctx.seccomp_program)


def enter_session_environment(ctx: JailContext) -> None:
    threads = str(max(1, math.ceil(ctx.policy.limits.cpus)))
    os.environ.clear()
    os.environ.update(dict(ctx.policy.env))
    _add_packages(ctx)
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "LOKY_MAX_CPU_COUNT",
    ):
        os.environ[name] = threads
    os.chdir(WORKSPACE)


JAIL_STEPS: tuple[Step, ...] = (
    reset_signals,
    close_inherited_fds,
    join_cgroups,
    unshare_namespaces,
    build_root,
    switch_root,
    set_up_network,
    set_rlimits,
    drop_privileges,
    install_seccomp,
    enter_session_environment,
)


# A task jail is made once by a short-lived process (the zygote then holds its namespaces)...
JAIL_BUILD_STEPS: tuple[Step, ...] = (
    reset_signals,
    close_inherited_fds,
    join_cgroups,
    unshare_namespaces,
    build_shared_root,
    switch_root,
    set_up_network,
)

# ...and each task's process enters it; the rest is a session's jail.
TASK_STEPS: tuple[Step, ...] = (
    reset_signals,
    close_inherited_fds,
    join_cgroups,
    enter_task_jail,
    set_rlimits,
    drop_privileges,
    install_seccomp,
    enter_session_environment,
)


def _add_packages(ctx: JailContext) -> None:
    """An environment's packages on the import path, after the default set (which they cannot
    shadow: environments.py builds them under its constraints), then, where pip can reach an
    index, the session's own (SESSION_PACKAGES), for this process and for the Python processes
    it starts."""
    paths = [ctx.policy.packages] if ctx.policy.packages else []
    if ctx.policy.network == "proxy":
        paths.append(SESSION_PACKAGES)
    for path in paths:
        site.addsitedir(path)  # its .pth files run here, as the session's user
    if paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)


def enter_host_workspace(ctx: JailContext) -> None:
    """Without a jail there is no /mnt/data: work in the workspace's host directory."""
    _add_packages(ctx)
    os.chdir(ctx.workspace)


# Without isolation (only when the caller asked for it explicitly): the same process layout,
# none of the protections.
UNSAFE_STEPS: tuple[Step, ...] = (reset_signals, close_inherited_fds, enter_host_workspace)


def enter_jail(ctx: JailContext, steps: tuple[Step, ...] = JAIL_STEPS) -> None:
    for step in steps:
        started = time.perf_counter()
        try:
            step(ctx)
        except Exception as exc:
            raise JailError(step.__name__, exc) from exc
        ctx.timings[step.__name__] = (time.perf_counter() - started) * 1000

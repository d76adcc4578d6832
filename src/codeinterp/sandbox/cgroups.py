"""Per-session control groups: memory, process and CPU limits, and the counters read back.

Both layouts are supported: cgroup v1 (one hierarchy per controller, as on this project's build
machines, where v2 holds no controllers) and the unified v2 hierarchy. Session groups live under
the creating process's own group, in `codeinterp-<instance>/<session>`, so an operator's limits on
the server still cover its sessions.

The session's first process joins by writing "0" to each path in `join_paths`, while it is still
single-threaded and before it creates any other process. On v1 that path is `tasks`, not
`cgroup.procs`: moving only the calling thread skips the kernel's threadgroup lock, whose write
side waits for an RCU grace period (measured here: 0.55 ms instead of 6.2 ms per join).

Teardown kills the session's pid-namespace init (the kernel then kills everything in that
namespace) and removes the groups, retrying while they drain.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from dataclasses import dataclass

from codeinterp.errors import IsolationUnavailable

from .policy import Limits

ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
REQUIRED = ("memory", "pids", "cpu")
TCP_LIMIT = "memory.kmem.tcp.limit_in_bytes"  # v1: socket buffer memory of a group


def _read(path: str) -> str:
    # os.open and os.read, not open(): a text file object costs ~4x as much, and an execution's
    # span reads the session's memory peak every time.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _current_paths() -> dict[str, str]:
    """Controller name ("" for v2) -> this process's group path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(","):
            paths[name] = path
    return paths


def _v1_mounts() -> dict[str, str]:
    """Controller -> mount point of its v1 hierarchy."""
    mounts: dict[str, str] = {}
    for line in _read("/proc/self/mountinfo").splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        mountpoint = left.split()[4]
        for option in fields[2].split(","):
            if option in V1_CONTROLLERS:
                mounts[option] = mountpoint
    return mounts


def _is_v2_with_controllers() -> bool:
    try:
        return "memory" in _read(os.path.join(ROOT, "cgroup.controllers")).split()
    except OSError:
        return False


@dataclass
class SessionCgroup:
    """The groups of one session, one per controller directory."""

    version: int
    dirs: dict[str, str]  # controller (v1) or "unified" (v2) -> directory

    @property
    def join_paths(self) -> list[str]:
        name = "cgroup.procs" if self.version == 2 else "tasks"
        return [os.path.join(d, name) for d in dict.fromkeys(self.dirs.values())]

    def add_process(self, pid: int) -> None:
        """Move process `pid`, every thread of it, into the groups: for a process that was
        not made to join them itself (what it was charged before stays where it was)."""
        for directory in dict.fromkeys(self.dirs.values()):
            _write(os.path.join(directory, "cgroup.procs"), str(pid))

    def _file(self, controller: str, name: str) -> str:
        return os.path.join(self.dirs["unified" if self.version == 2 else controller], name)

    def oom_kills(self) -> int:
        """How many processes the memory limit has killed in this group so far."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = _read(self._file("memory", name))
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak_memory(self) -> int:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int(_read(self._file("memory", name)))
        except (OSError, ValueError):
            return 0

    def reset_peak_memory(self) -> None:
        """Start `peak_memory` again from the current use (a task jail's next task); best
        effort: cgroup v2 kernels before 6.12 cannot reset it."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError):
            _write(self._file("memory", name), "0")

    def current_memory(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        try:
            return int(_read(self._file("memory", name)))
        except (OSError, ValueError):
            return 0

    def cpu_time(self) -> float:
        """CPU seconds used by every process of the session so far."""
        try:
            if self.version == 2:
                for line in _read(self._file("cpu", "cpu.stat")).splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return 0.0
            return int(_read(self._file("cpuacct", "cpuacct.usage"))) / 1e9
        except (OSError, ValueError, KeyError):
            return 0.0

    def process_count(self) -> int:
        name = "pids.current"
        try:
            return int(_read(self._file("pids", name)))
        except (OSError, ValueError):
            return 0

    def remove(self, timeout: float) -> None:
        """Remove the groups once empty, killing stragglers, for at most `timeout` seconds from
        now (from when this runs: a removal queued behind others gets its full time); raise
        the first error once every group was tried."""
        deadline = time.monotonic() + timeout
        first: OSError | None = None
        for directory in dict.fromkeys(self.dirs.values()):
            while True:
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        first = first or exc
                        break
                    _kill_members(directory)
                    time.sleep(0.002)
        if first is not None:
            raise first


def _kill_members(directory: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.exists(os.path.join(directory, "cgroup.kill")):
            _write(os.path.join(directory, "cgroup.kill"), "1")
            return
        for pid in _read(os.path.join(directory, "cgroup.procs")).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)


class CgroupManager:
    """Creates and removes session groups under `codeinterp-<instance>` in our own group."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.version, self._bases = self._make_bases(f"codeinterp-{instance}")
        self._deferred: list[SessionCgroup] = []
        self._deferred_lock = threading.Lock()  # removals run in worker threads

    @staticmethod
    def probe() -> tuple[bool, str]:
        """Whether session limits can be enforced here, and how (for `doctor`)."""
        if _is_v2_with_controllers():
            return True, "cgroup v2 (memory, pids, cpu; socket buffers count as memory)"
        mounts = _v1_mounts()
        missing = [c for c in REQUIRED if c not in mounts]
        if missing:
            return False, f"no cgroup controller for {', '.join(missing)}: mount cgroups v1 or v2"
        if not os.access(mounts["memory"], os.W_OK):
            return False, "cgroup hierarchy is not writable: run as root"
        sockets = (
            "socket buffers capped"
            if os.path.exists(os.path.join(mounts["memory"], TCP_LIMIT))
            else f"socket buffers NOT capped (no {TCP_LIMIT})"
        )
        controllers = ", ".join(c for c in V1_CONTROLLERS if c in mounts)
        return True, f"cgroup v1 ({controllers}; {sockets})"

    def _make_bases(self, name: str) -> tuple[int, dict[str, str]]:
        ok, why = self.probe()
        if not ok:
            raise IsolationUnavailable(why)
        current = _current_paths()
        if _is_v2_with_controllers():
            base = os.path.join(ROOT + current.get("", "/"), name)
            os.makedirs(base, exist_ok=True)
            try:
                _write(os.path.join(base, "cgroup.subtree_control"), "+memory +pids +cpu")
            except OSError as exc:
                raise IsolationUnavailable(
                    f"cannot delegate cgroup v2 controllers to {base} ({exc.strerror}): "
                    "run the server in its own cgroup with memory, pids and cpu delegated"
                ) from exc
            return 2, {"unified": base}
        bases: dict[str, str] = {}
        for controller, mountpoint in _v1_mounts().items():
            base = os.path.join(mountpoint + current.get(controller, "/").rstrip("/"), name)
            os.makedirs(base, exist_ok=True)
            bases[controller] = base
        return 1, bases

    def create(self, session: str, limits: Limits) -> SessionCgroup:
        dirs = {c: os.path.join(b, session) for c, b in self._bases.items()}
        for directory in dict.fromkeys(dirs.values()):
            os.mkdir(directory)
        group = SessionCgroup(self.version, dirs)
        try:
            self._apply_limits(group, limits)
        except OSError:
            group.remove(1)
            raise
        return group

    def _apply_limits(self, group: SessionCgroup, limits: Limits) -> None:
        quota = max(1000, int(limits.cpus * 100_000))
        if group.version == 2:
            d = group.dirs["unified"]
            _write(os.path.join(d, "memory.max"), str(limits.memory))
            with contextlib.suppress(FileNotFoundError):
                _write(os.path.join(d, "memory.swap.max"), "0")
            _write(os.path.join(d, "memory.oom.group"), "1")
            _write(os.path.join(d, "pids.max"), str(limits.processes))
            _write(os.path.join(d, "cpu.max"), f"{quota} 100000")
            return
        memory = group.dirs["memory"]
        _write(os.path.join(memory, "memory.limit_in_bytes"), str(limits.memory))
        with contextlib.suppress(FileNotFoundError):  # present only with swap accounting
            _write(os.path.join(memory, "memory.memsw.limit_in_bytes"), str(limits.memory))
        # Socket buffers are outside memory.limit_in_bytes on v1 (v2 counts them in memory.max)
        # and come from the host-wide net.ipv4.tcp_mem/udp_mem. This counter charges TCP and UDP
        # buffers to the session and caps them. It covers only sockets made after it is set:
        # here, before any process joins. Sends then get EAGAIN or wait, receives are dropped.
        with contextlib.suppress(FileNotFoundError):  # a kernel without v1 kmem accounting
            _write(os.path.join(memory, TCP_LIMIT), str(limits.socket_buffers))
        _write(os.path.join(group.dirs["pids"], "pids.max"), str(limits.processes))
        _write(os.path.join(group.dirs["cpu"], "cpu.cfs_period_us"), "100000")
        _write(os.path.join(group.dirs["cpu"], "cpu.cfs_quota_us"), str(quota))

    def defer_removal(self, group: SessionCgroup) -> None:
        """A group that could not be removed yet (its processes were still exiting: many
        sessions closed at once take seconds to exit). Tried again by `retry_deferred` and
        `close`, so that none is left behind."""
        with self._deferred_lock:
            self._deferred.append(group)

    @property
    def has_deferred(self) -> bool:
        return bool(self._deferred)

    def retry_deferred(self, at_most: int = 16) -> None:
        """One more try, without waiting, for the `at_most` oldest deferred groups (bounded:
        when a thousand sessions close at once, each release must not try them all)."""
        with self._deferred_lock:
            pending, self._deferred = self._deferred[:at_most], self._deferred[at_most:]
        for group in pending:
            try:
                group.remove(0)
            except OSError:
                self.defer_removal(group)

    def close(self, timeout: float = 10.0) -> None:
        """Remove the deferred groups (for at most `timeout` seconds), then the bases."""
        deadline = time.monotonic() + timeout
        with self._deferred_lock:
            pending, self._deferred = self._deferred, []
        for group in pending:
            with contextlib.suppress(OSError):
                group.remove(max(0.0, deadline - time.monotonic()))
        for base in dict.fromkeys(self._bases.values()):
            with contextlib.suppress(OSError):
                os.rmdir(base)

    @property
    def base_directories(self) -> list[str]:
        return list(dict.fromkeys(self._bases.values()))

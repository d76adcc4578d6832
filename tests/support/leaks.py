"""What a server leaves on the machine, and a check that it is all gone after the server stops.

`ServerFootprint.take(pid)` notes the server's descendant processes (the zygote, every session's
init and interpreter) and their cgroup directories, whose names (`codeinterp-<instance>`) give
the sandbox's runtime directory, /run/codeinterp/<instance>, and so its mounts. `assert_gone()`
fails naming whatever is still there: a process alive (not a zombie), a cgroup directory, the
runtime directory, a mount under it. Other servers on the machine are not looked at.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

RUNTIME_ROOT = "/run/codeinterp"
CGROUP_ROOT = "/sys/fs/cgroup"


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(parent, []).append(int(name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cgroup_dirs(pid: int) -> set[str]:
    dirs: set[str] = set()
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "codeinterp" not in path:
            continue
        for controller in controllers.split(",") if controllers else ["unified"]:
            candidate = f"{CGROUP_ROOT}/{controller}{path}"
            if os.path.isdir(candidate):
                dirs.add(candidate)
    return dirs


def _mounts_under(directory: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == directory or p.startswith(directory + "/")]


@dataclass
class ServerFootprint:
    processes: set[int] = field(default_factory=set)
    cgroups: set[str] = field(default_factory=set)
    runtime_dirs: set[str] = field(default_factory=set)

    def take(self, server_pid: int) -> None:
        """Note the server's processes and their cgroups now (call it while sessions live)."""
        self.processes |= descendants(server_pid)
        for pid in self.processes:
            self.cgroups |= _cgroup_dirs(pid)
        for directory in self.cgroups:
            found = re.search(r"/codeinterp-([0-9a-f]+)(/|$)", directory)
            if found:
                self.runtime_dirs.add(f"{RUNTIME_ROOT}/{found.group(1)}")

    def leftovers(self) -> list[str]:
        found = [f"process {pid}" for pid in sorted(self.processes) if _alive(pid)]
        found += [f"cgroup {d}" for d in sorted(self.cgroups) if os.path.isdir(d)]
        for directory in sorted(self.runtime_dirs):
            found += [f"mount {m}" for m in _mounts_under(directory)]
            if os.path.exists(directory):
                found.append(f"runtime dir {directory}")
        return found

    def assert_gone(self, within: float = 5.0) -> None:
        """Everything noted is gone (the kernel may take a moment to tear down a cgroup)."""
        deadline = time.monotonic() + within
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"left behind: {left[:20]} ({len(left)} in all)"

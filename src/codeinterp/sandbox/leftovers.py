"""What a Sandbox whose process died without `close()` leaves behind, and its removal.

Each Sandbox writes its pid and the pid's start time into `<runtime_dir>/owner`, and where its
cgroups are into `<runtime_dir>/cgroups`. At start, a Sandbox using the default runtime root
(/run/codeinterp) removes sibling instance directories whose owner is gone: their cgroups, their
workspace mounts, then the directories. It touches nothing without an owner file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time

from . import linux
from .cgroups import SessionCgroup

log = logging.getLogger("codeinterp.sandbox")
OWNER_FILE = "owner"
CGROUPS_FILE = "cgroups"
INSTANCE_NAME = re.compile(r"[0-9a-f]{8}")


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def write_owner(runtime_dir: str) -> None:
    pid = os.getpid()
    with open(os.path.join(runtime_dir, OWNER_FILE), "w") as f:
        f.write(f"{pid} {_start_time(pid)}\n")


def owner_dead(runtime_dir: str) -> bool:
    """True only for a directory that a Sandbox owned (it has our owner file) whose process is
    gone. Anything else, including a directory without an owner file, is never ours to remove."""
    try:
        with open(os.path.join(runtime_dir, OWNER_FILE)) as f:
            pid_text, start = f.read().split()
        return _start_time(int(pid_text)) != start
    except (OSError, ValueError):
        return False


def write_cgroups(runtime_dir: str, directories: list[str]) -> None:
    """Record where this instance's cgroups are, for whoever cleans up after a crash."""
    with open(os.path.join(runtime_dir, CGROUPS_FILE), "w") as f:
        f.write("".join(f"{d}\n" for d in directories))


def remove_cgroups(runtime_dir: str) -> None:
    """Remove the cgroups recorded by a dead instance: session groups first, then the bases."""
    try:
        with open(os.path.join(runtime_dir, CGROUPS_FILE)) as f:
            bases = [line.strip() for line in f if line.strip().startswith("/sys/fs/cgroup/")]
    except OSError:
        return
    deadline = time.monotonic() + 5
    for base in bases:
        with contextlib.suppress(OSError):
            for name in os.listdir(base):
                child = os.path.join(base, name)
                if os.path.isdir(child):
                    SessionCgroup(0, {"group": child}).remove(deadline)
            os.rmdir(base)


def remove_runtime_dir(runtime_dir: str) -> None:
    remove_cgroups(runtime_dir)
    sessions = os.path.join(runtime_dir, "sessions")
    with contextlib.suppress(OSError):
        for name in os.listdir(sessions):
            path = os.path.join(sessions, name)
            with contextlib.suppress(OSError):
                linux.umount2(path, linux.MNT_DETACH)
    shutil.rmtree(runtime_dir, ignore_errors=True)


def stale_instances(root: str, own: str) -> list[str]:
    """Names of instance directories under `root` (8 hex digits) whose owner process is gone."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return [
        name
        for name in names
        if name != own and INSTANCE_NAME.fullmatch(name) and owner_dead(os.path.join(root, name))
    ]

"""What a Sandbox whose process died without `close()` leaves behind, and its removal.

Each Sandbox writes its pid and the pid's start time into `<runtime_dir>/owner`. At start, a new
Sandbox removes sibling runtime directories whose owner is gone (unmounting their workspaces) and
their cgroups, so a crashed server does not leak mounts, memory or cgroups across restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil

from . import linux

log = logging.getLogger("codeinterp.sandbox")
OWNER_FILE = "owner"


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


def owner_alive(runtime_dir: str) -> bool:
    try:
        with open(os.path.join(runtime_dir, OWNER_FILE)) as f:
            pid_text, start = f.read().split()
        return _start_time(int(pid_text)) == start
    except (OSError, ValueError):
        # No owner file yet: a Sandbox that is starting right now, or an unreadable leftover.
        # Only the latter is old; leave anything touched in the last minute alone.
        try:
            import time

            return time.time() - os.stat(runtime_dir).st_mtime < 60
        except OSError:
            return False


def remove_runtime_dir(runtime_dir: str) -> None:
    sessions = os.path.join(runtime_dir, "sessions")
    with contextlib.suppress(OSError):
        for name in os.listdir(sessions):
            path = os.path.join(sessions, name)
            with contextlib.suppress(OSError):
                linux.umount2(path, linux.MNT_DETACH)
    shutil.rmtree(runtime_dir, ignore_errors=True)


def stale_instances(root: str, own: str) -> list[str]:
    """Names of runtime directories under `root` whose owner process is gone."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return [
        name
        for name in names
        if name != own
        and os.path.isdir(os.path.join(root, name))
        and not owner_alive(os.path.join(root, name))
    ]

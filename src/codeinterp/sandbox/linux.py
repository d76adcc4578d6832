"""Thin ctypes wrappers for the Linux system calls the jail needs and Python 3.11 lacks.

Each wrapper raises OSError with the errno and the call's name, so a failing jail step reports
which system call failed and why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import functools
import os
import platform
import socket
import struct

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]

# Descriptors a session's processes close on start are those below this; the zygote keeps its
# open files limit at or below it, so that it never holds one above.
FD_CEILING = 65536

# Namespace flags (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# Mount flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

# prctl options (linux/prctl.h)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSCALLS = {
    "x86_64": {
        "pivot_root": 155,
        "capset": 126,
        "open_tree": 428,
        "move_mount": 429,
        "mount_setattr": 442,
    },
    "aarch64": {
        "pivot_root": 41,
        "capset": 91,
        "open_tree": 428,
        "move_mount": 429,
        "mount_setattr": 442,
    },
}


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _syscall_number(name: str) -> int:
    machine = platform.machine()
    try:
        return _SYSCALLS[machine][name]
    except KeyError:
        raise OSError(0, f"{name}: unsupported architecture {machine}") from None


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4


def make_tree_readonly(target: str) -> None:
    """Read-only, nosuid, nodev for the mount at `target` and every mount beneath it.

    A bind with MS_REC brings submounts along, and a plain remount changes only the top one;
    mount_setattr(AT_RECURSIVE) (Linux 5.12+) changes them all. Older kernels: each submount
    listed in /proc/self/mountinfo is remounted in turn.
    """
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    result = _libc.syscall(
        _syscall_number("mount_setattr"),
        _AT_FDCWD,
        target.encode(),
        _AT_RECURSIVE,
        ctypes.byref(attr),
        ctypes.sizeof(attr),
    )
    if result == 0:
        return
    if ctypes.get_errno() != 38:  # ENOSYS
        _check(result, f"mount_setattr {target}")
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in points:
        if point == target or point.startswith(target.rstrip("/") + "/"):
            mount(None, point, None, flags)


OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4


def clone_mount(path: str, *, recursive: bool = False) -> int:
    """A descriptor of a detached copy of the mount at `path` (open_tree, Linux 5.2+), with
    the mounts beneath it if `recursive`.

    The copy belongs to no mount namespace until `attach_mount` places it, in whichever
    namespace the caller of that is in; the files are the original mount's (same superblock).
    The copy goes away with the last descriptor if it was never attached.
    """
    return _check(
        _libc.syscall(
            _syscall_number("open_tree"),
            _AT_FDCWD,
            path.encode(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (_AT_RECURSIVE if recursive else 0),
        ),
        f"open_tree {path}",
    )


def attach_mount(fd: int, target: str) -> None:
    """Attach the detached mount `fd` (from `clone_mount`) at `target` (move_mount)."""
    _check(
        _libc.syscall(
            _syscall_number("move_mount"),
            fd,
            b"",
            _AT_FDCWD,
            target.encode(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ),
        f"move_mount {target}",
    )


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(
        _libc.syscall(_syscall_number("pivot_root"), new_root.encode(), put_old.encode()),
        "pivot_root",
    )


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def clear_capabilities() -> None:
    """Set the effective, permitted and inheritable sets of this thread to empty."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(
        _libc.syscall(_syscall_number("capset"), ctypes.byref(header), ctypes.byref(data)),
        "capset",
    )


@functools.cache
def last_capability() -> int:
    """The highest capability this kernel knows (cached: a process whose /proc is gone, such as
    the init factory in its empty root, asks for it)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_bounding_set() -> None:
    """Remove every capability from the bounding set (needs CAP_SETPCAP, so do it before setuid)."""
    for cap in range(last_capability() + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: the kernel does not know this capability
                raise
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


MADV_COLLAPSE = 25
HUGE_PAGE = 2 * 1024 * 1024


def collapse_anonymous_memory() -> int:
    """Back this process's large anonymous mappings with huge pages (Linux 6.1+, best effort).

    fork() copies one page-table entry per 4 KiB page; after the collapse it copies one per
    2 MiB for most of the heap. Returns the number of bytes collapsed. The mappings do not get
    MADV_HUGEPAGE, so later faults (in this process or its forks) still take small pages.
    """
    collapsed = 0
    with open("/proc/self/maps") as maps:
        lines = maps.readlines()
    for line in lines:
        fields = line.split()
        path = fields[5] if len(fields) > 5 else ""
        if fields[1] != "rw-p" or path not in ("", "[heap]"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        start = -(-start // HUGE_PAGE) * HUGE_PAGE
        end = end // HUGE_PAGE * HUGE_PAGE
        if end - start >= HUGE_PAGE and _libc.madvise(start, end - start, MADV_COLLAPSE) == 0:
            collapsed += end - start
    return collapsed


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def bring_up_loopback() -> None:
    """Set `lo` up in the current network namespace (a new one starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))

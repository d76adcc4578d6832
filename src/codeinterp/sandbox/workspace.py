"""A session's /mnt/data on the host: a size-limited tmpfs, and file access that never follows
a symbolic link.

Sandboxed code owns everything inside the workspace, so every host-side path is resolved one
component at a time relative to a directory descriptor with O_NOFOLLOW: a link planted by the
sandbox (`/mnt/data/x -> /etc/shadow`) is refused, never read or written through.

Which files an execution created, modified or deleted is the host's own account too: a snapshot
of the workspace before and after (`snapshot`, `diff_workspace`), never a list from the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from codeinterp.errors import Conflict, InvalidRequest, NotFound, QuotaExceeded

from . import linux
from .policy import MiB

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_INODES = 100_000  # files and directories in one workspace
MAX_TRACKED_FILES = 10_000  # files in a snapshot; the rest of a larger workspace is not tracked
WORKSPACE = "/mnt/data"  # where sandboxed code sees the workspace

# A snapshot of the workspace: relative path -> (size, mtime_ns, inode) of each regular file
Snapshot = dict[str, tuple[int, int, int]]
READ_CHUNK = 1 << 20  # bytes per read when a file leaves the workspace


@dataclass(frozen=True)
class WorkspaceFile:
    name: str  # relative to the workspace, "/"-separated
    size: int
    modified: float  # seconds since the epoch


def clean_relative_path(name: str) -> list[str]:
    """Split a caller's file name into safe components, or raise InvalidRequest.

    Accepts "a.csv", "dir/a.csv" and "/mnt/data/dir/a.csv"; refuses empty names, "..", NUL
    and anything that would leave the workspace.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidRequest("file name must be a non-empty string without NUL characters")
    if name.startswith("/mnt/data/"):
        name = name[len("/mnt/data/") :]
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or name.startswith("/") or any(p == ".." for p in parts):
        raise InvalidRequest(f"invalid file name {name!r}: use a path relative to /mnt/data")
    if any(len(p.encode()) > 255 for p in parts):
        raise InvalidRequest(f"invalid file name {name!r}: a path component is over 255 bytes")
    return parts


class FileReader:
    """A regular file of the workspace, open for reading, read in chunks.

    Sizes are apparent sizes (st_size), never blocks: a sparse file or a hard link takes no room
    in the workspace but reads as its full size. Reading stops at the size the file had when it
    was opened, so a file that grows meanwhile cannot pass a limit checked then; one that shrinks
    is an error, never passed off as whole.
    """

    def __init__(self, fd: int, name: str, size: int) -> None:
        self.name = name  # relative to the workspace
        self.size = size  # bytes it will give, at most
        self._fd = fd
        self._left = size
        # A read runs in a worker thread; closing waits for it, so the descriptor's number is
        # never reused under a read still to start.
        self._lock = threading.Lock()

    def read(self, limit: int = READ_CHUNK) -> bytes:
        """The next chunk of at most `limit` bytes; b"" at the end. Blocking."""
        with self._lock:
            if self._left <= 0 or self._fd < 0:
                return b""
            data = os.read(self._fd, min(limit, self._left))
            if not data:
                raise Conflict(f"{self.name} shrank while it was read: read it again")
            self._left -= len(data)
            return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """Every chunk, each read off the event loop; the file is closed at the end (or when
        the iteration is abandoned)."""
        try:
            while chunk := await asyncio.to_thread(self.read):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __del__(self) -> None:
        self.close()  # a reader dropped unread (a response never sent) still lets its file go

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def too_large(name: str, size: int, max_bytes: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"{name} is {size} bytes (its apparent size), over the limit of {max_bytes} bytes for a "
        "file leaving the sandbox"
    )


def diff_workspace(
    before: Snapshot, after: Snapshot, root: str = WORKSPACE
) -> list[dict[str, Any]]:
    """Files created, modified or deleted between two snapshots, sorted by path."""
    changes: list[dict[str, Any]] = []
    for name, meta in after.items():
        if name not in before:
            change = "created"
        elif before[name] != meta:
            change = "modified"
        else:
            continue
        changes.append({"path": f"{root}/{name}", "name": name, "size": meta[0], "change": change})
    for name in before.keys() - after.keys():
        changes.append({"path": f"{root}/{name}", "name": name, "size": 0, "change": "deleted"})
    changes.sort(key=lambda c: str(c["path"]))
    return changes


class Workspace:
    """The host side of one session's /mnt/data."""

    def __init__(self, path: str, quota: int, uid: int, gid: int) -> None:
        self.path = path
        self.quota = quota
        self.uid = uid
        self.gid = gid
        self.mounted = False  # a tmpfs of its own (sandboxed) or a plain directory (unsafe)

    # -- life cycle ---------------------------------------------------------------------------

    def create(self, *, mount_tmpfs: bool = True) -> None:
        os.mkdir(self.path, 0o700)
        if mount_tmpfs:
            linux.mount(
                "tmpfs",
                self.path,
                "tmpfs",
                linux.MS_NOSUID | linux.MS_NODEV,
                f"size={self.quota},mode=700,uid={self.uid},gid={self.gid},nr_inodes={MAX_INODES}",
            )
            self.mounted = True
        else:
            os.chown(self.path, self.uid, self.gid)

    def destroy(self) -> None:
        if self.mounted:
            with contextlib.suppress(OSError):
                linux.umount2(self.path, linux.MNT_DETACH)
        else:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(self.path)

    # -- safe path walking --------------------------------------------------------------------

    @contextlib.contextmanager
    def _parent_dir(self, parts: list[str], *, create: bool) -> Iterator[int]:
        """A descriptor of the directory holding parts[-1], opened without following links."""
        fd = os.open(self.path, _DIR_FLAGS)
        try:
            for part in parts[:-1]:
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                        os.chown(part, self.uid, self.gid, dir_fd=fd, follow_symlinks=False)
                    except FileExistsError:
                        pass
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    raise NotFound(f"no such file: {'/'.join(parts)}") from None
                except OSError as exc:
                    raise self._refused("/".join(parts), exc) from None
                os.close(fd)
                fd = next_fd
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _refused(name: str, exc: OSError) -> InvalidRequest | NotFound:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return InvalidRequest(f"{name} is or passes through a symbolic link: not followed")
        if exc.errno == errno.ENOENT:
            return NotFound(f"no such file: {name}")
        return InvalidRequest(f"cannot access {name}: {exc.strerror}")

    def _quota_error(self, name: str, size: int | None = None) -> QuotaExceeded:
        detail = f" ({size} bytes)" if size is not None else ""
        return QuotaExceeded(
            f"cannot write {name}{detail}: the workspace quota of {self.quota // MiB} MiB is "
            "full; delete files or create the session with a larger workspace limit"
        )

    # -- operations ---------------------------------------------------------------------------

    def write(self, name: str, data: bytes) -> str:
        """Create or replace a file; returns its path as sandboxed code sees it."""
        parts = clean_relative_path(name)
        relative = "/".join(parts)
        if len(data) > self.free_bytes():
            raise self._quota_error(relative, len(data))
        with self._parent_dir(parts, create=True) as parent:
            # O_NONBLOCK: a FIFO planted by the sandbox must not hang the host (it gives ENXIO);
            # no O_TRUNC until we know it is a regular file.
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(parts[-1], flags, 0o644, dir_fd=parent)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    raise InvalidRequest(f"{relative} is not a regular file") from None
                raise self._refused(relative, exc) from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise InvalidRequest(f"{relative} is not a regular file")
                os.set_blocking(fd, True)
                os.ftruncate(fd, 0)
                os.fchown(fd, self.uid, self.gid)
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    raise self._quota_error(relative, len(data)) from None
                raise
            finally:
                os.close(fd)
        return f"/mnt/data/{relative}"

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        """The whole file, for files known to be small: QuotaExceeded past `max_bytes`."""
        with self.open_reader(name, max_bytes) as reader:
            return b"".join(iter(reader.read, b""))

    def open_reader(self, name: str, max_bytes: int | None = None) -> FileReader:
        """Open a regular file for reading in chunks; QuotaExceeded if its apparent size is over
        `max_bytes` (nothing is read then). The caller closes it."""
        parts = clean_relative_path(name)
        relative = "/".join(parts)
        with self._parent_dir(parts, create=False) as parent:
            # O_NONBLOCK: a FIFO planted by the sandbox must not hang the host.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(parts[-1], flags, dir_fd=parent)
            except OSError as exc:
                raise self._refused(relative, exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidRequest(f"{relative} is not a regular file")
            if max_bytes is not None and st.st_size > max_bytes:
                raise too_large(relative, st.st_size, max_bytes)
        except BaseException:
            os.close(fd)
            raise
        return FileReader(fd, relative, st.st_size)

    def delete(self, name: str) -> None:
        parts = clean_relative_path(name)
        relative = "/".join(parts)
        with self._parent_dir(parts, create=False) as parent:
            try:
                st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise InvalidRequest(f"{relative} is a directory")
                os.unlink(parts[-1], dir_fd=parent)  # removes a link itself, never its target
            except OSError as exc:
                raise self._refused(relative, exc) from None

    def list_files(self, max_files: int = 100_000, max_depth: int = 64) -> list[WorkspaceFile]:
        """Every regular file, walking by descriptor; links are skipped, not followed.

        Iterative, with bounds: sandboxed code can build trees thousands of levels deep or with
        millions of entries. Deeper levels and further files are left out of the listing.
        """
        files = [
            WorkspaceFile(relative, st.st_size, st.st_mtime)
            for relative, st in self._walk(max_files, max_depth)
        ]
        files.sort(key=lambda f: f.name)
        return files

    def snapshot(self, max_files: int = MAX_TRACKED_FILES, max_depth: int = 64) -> Snapshot:
        """Size, modification time and inode of every regular file (at most `max_files`), to
        tell which files an execution changed; links are skipped, not followed."""
        return {
            relative: (st.st_size, st.st_mtime_ns, st.st_ino)
            for relative, st in self._walk(max_files, max_depth)
        }

    def _walk(self, max_files: int, max_depth: int) -> Iterator[tuple[str, os.stat_result]]:
        """(relative path, lstat) of regular files, at most `max_files` of them."""
        found = 0
        pending = [""]  # directories still to read, relative to the workspace
        visited = 0
        while pending and found < max_files and visited < max_files:
            visited += 1
            prefix = pending.pop()
            try:
                fd = self._open_directory(prefix.split("/") if prefix else [])
            except OSError:
                continue  # replaced by a link or removed since it was listed
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        relative = f"{prefix}/{entry.name}" if prefix else entry.name
                        if entry.is_dir(follow_symlinks=False):
                            if relative.count("/") < max_depth:
                                pending.append(relative)
                        elif entry.is_file(follow_symlinks=False) and found < max_files:
                            try:
                                st = entry.stat(follow_symlinks=False)
                            except OSError:
                                continue
                            found += 1
                            yield relative, st
            finally:
                os.close(fd)

    @property
    def visible_path(self) -> str:
        """Where sandboxed code sees the workspace (its own path when there is no jail)."""
        return WORKSPACE if self.mounted else self.path

    def used_inodes(self) -> int:
        """Files and directories in the workspace, the root included (for a tmpfs of its own;
        otherwise the count of the file system that holds it)."""
        st = os.statvfs(self.path)
        return st.f_files - st.f_ffree

    def _open_directory(self, parts: list[str]) -> int:
        fd = os.open(self.path, _DIR_FLAGS)
        try:
            for part in parts:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def used_bytes(self) -> int:
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

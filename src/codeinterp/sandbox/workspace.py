"""A session's /mnt/data on the host: a size-limited tmpfs, and file access that never follows
a symbolic link.

Sandboxed code owns everything inside the workspace, so every host-side path is resolved one
component at a time relative to a directory descriptor with O_NOFOLLOW: a link planted by the
sandbox (`/mnt/data/x -> /etc/shadow`) is refused, never read or written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from codeinterp.errors import InvalidRequest, NotFound, QuotaExceeded

from . import linux
from .policy import MiB

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_INODES = 100_000  # files and directories in one workspace


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
                    raise QuotaExceeded(f"{relative} is {st.st_size} bytes, over {max_bytes}")
                chunks = []
                total = 0
                while chunk := os.read(fd, 1 << 20):
                    total += len(chunk)
                    if max_bytes is not None and total > max_bytes:  # it grew while we read
                        raise QuotaExceeded(f"{relative} is over {max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)

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
        files: list[WorkspaceFile] = []
        pending = [""]  # directories still to read, relative to the workspace
        visited = 0
        while pending and len(files) < max_files and visited < max_files:
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
                        elif entry.is_file(follow_symlinks=False) and len(files) < max_files:
                            with contextlib.suppress(OSError):
                                st = entry.stat(follow_symlinks=False)
                                files.append(WorkspaceFile(relative, st.st_size, st.st_mtime))
            finally:
                os.close(fd)
        files.sort(key=lambda f: f.name)
        return files

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

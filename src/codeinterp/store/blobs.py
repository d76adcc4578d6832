"""File bytes on disk: one file per upload, under an unguessable name, written atomically.

A blob is written to a temporary name in the blob directory, flushed to disk (fsync) and only then
renamed to its final name (`os.replace` is atomic), so nobody ever sees half a file under a final
name and a crash leaves at worst a temporary file or an unreferenced blob, which `sweep` removes at
the next start. Names come from `secrets`, never from the client's file name, so they reveal
nothing and cannot be steered into another path. Blocking calls run in a worker thread
(`asyncio.to_thread`) so that the event loop keeps serving other requests.

Blobs leave the last DATABASE_RESERVE bytes of the disk to the database: a blob that would
eat into them is refused (StorageFull), so that on a disk full of blobs the database can still
write, above all the deletes that make room again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import time
from collections.abc import AsyncIterable, Collection
from typing import BinaryIO

from codeinterp.errors import QuotaExceeded, StorageFull

TEMP_PREFIX = ".tmp-"
_WRITE_SIZE = 1 << 20  # gather small chunks into writes of about this size
DATABASE_RESERVE = 1 << 20  # free bytes blobs leave on the disk, for the database's writes


def _check_room(directory: str, more: int = 0) -> None:
    """ENOSPC if writing `more` bytes in `directory` would leave less than DATABASE_RESERVE
    bytes free for unprivileged writers (root may have more: its reserve is not ours)."""
    stat = os.statvfs(directory)
    if stat.f_bavail * stat.f_frsize - more < DATABASE_RESERVE:
        raise OSError(errno.ENOSPC, "the disk is full: the rest is the database's reserve")


def _open_private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


def _create(path: str) -> BinaryIO:
    return open(path, "xb", opener=_open_private)


def _publish(file: BinaryIO, temp: str, final: str, directory: str) -> None:
    """Make the bytes durable, then give them their final name, then make the name durable;
    ENOSPC if they ate into the database's reserve (the caller discards them)."""
    file.flush()
    os.fsync(file.fileno())
    file.close()
    _check_room(directory)
    os.replace(temp, final)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_path(temp: str, final: str, directory: str) -> int:
    with open(temp, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        _publish(file, temp, final, directory)
    return size


def _read_all(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _discard(file: BinaryIO, temp: str) -> None:
    file.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)


def too_large(max_bytes: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"the file is larger than the upload limit of {max_bytes} bytes; "
        "send a smaller file, or raise the server's max_upload_bytes setting"
    )


class BlobDir:
    """The directory that holds every blob, one file each."""

    def __init__(self, path: str) -> None:
        self.path = path

    def path_of(self, name: str) -> str:
        return os.path.join(self.path, name)

    async def write(self, data: AsyncIterable[bytes] | bytes, max_bytes: int) -> tuple[str, int]:
        """Store `data` as a new blob; return its name and size. Nothing is left behind on error.

        Raises QuotaExceeded as soon as more than `max_bytes` have arrived.
        """
        if isinstance(data, bytes) and len(data) > max_bytes:
            raise too_large(max_bytes)
        name = secrets.token_hex(16)
        temp = self.path_of(TEMP_PREFIX + name)
        try:
            _check_room(self.path, len(data) if isinstance(data, bytes) else 0)
            file = await asyncio.to_thread(_create, temp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull() from exc
            raise
        try:
            size = await _copy(data, file, max_bytes, self.path)
            await asyncio.to_thread(_publish, file, temp, self.path_of(name), self.path)
        except BaseException as exc:
            await asyncio.to_thread(_discard, file, temp)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull() from exc
            raise
        return name, size

    def temp_path(self) -> str:
        """A new temporary name in the blob directory, for a file someone else writes and
        `adopt` then publishes (a crash leaves it to `sweep`)."""
        return self.path_of(TEMP_PREFIX + secrets.token_hex(16))

    async def adopt(self, temp: str) -> tuple[str, int]:
        """Publish the finished file at `temp` (a `temp_path`) as a new blob, without copying
        it; its name and size. StorageFull if the disk is full (`temp` is then left to the
        caller)."""
        name = secrets.token_hex(16)
        try:
            size = await asyncio.to_thread(_publish_path, temp, self.path_of(name), self.path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull() from exc
            raise
        return name, size

    async def read(self, name: str) -> bytes:
        """The whole blob. Raises FileNotFoundError if it is gone."""
        return await asyncio.to_thread(_read_all, self.path_of(name))

    async def delete(self, name: str) -> None:
        """Remove a blob; a blob that is already gone is fine."""
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self.path_of(name))

    async def sweep(self, keep: Collection[str], older_than: float) -> list[str]:
        """Remove temporary files and blobs not in `keep` untouched for `older_than` seconds.

        Such files are what a crash leaves between writing a blob and inserting its row, or
        between deleting a row and its blob. The age limit spares uploads still in progress (in
        this or another server sharing the directory). Returns the names removed.
        """
        return await asyncio.to_thread(self._sweep, set(keep), time.time() - older_than)

    def _sweep(self, keep: set[str], cutoff: float) -> list[str]:
        removed = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.name in keep or not entry.is_file(follow_symlinks=False):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed.append(entry.name)
        return sorted(removed)


async def _copy(
    data: AsyncIterable[bytes] | bytes, file: BinaryIO, max_bytes: int, directory: str
) -> int:
    """Write `data` to `file` in large writes off the event loop; return the byte count. A
    write that would eat into the database's reserve raises ENOSPC instead."""
    if isinstance(data, bytes):
        await asyncio.to_thread(file.write, data)
        return len(data)

    def write(data: bytes) -> None:
        _check_room(directory, len(data))
        file.write(data)

    size = 0
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in data:
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= _WRITE_SIZE:
            await asyncio.to_thread(write, b"".join(pending))
            pending, pending_size = [], 0
    if pending:
        await asyncio.to_thread(write, b"".join(pending))
    return size

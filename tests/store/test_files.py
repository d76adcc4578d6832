"""Files: bytes on disk under random names, rows only for complete blobs, isolation by project."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from codeinterp.errors import InvalidRequest, NotFound, QuotaExceeded
from codeinterp.store import Store

from .helpers import blob_names, chunks_of


async def test_round_trip_from_bytes(store: Store) -> None:
    """Bytes given at once come back identical, with the metadata as given."""
    data = bytes(range(256)) * 10
    record = await store.create_file("p1", "data.bin", "assistants", data, 1 << 20, expires_at=99)
    assert (record.filename, record.purpose, record.bytes, record.expires_at) == (
        "data.bin",
        "assistants",
        len(data),
        99,
    )
    assert record.id.startswith("file-")
    assert await store.read_file("p1", record.id) == data
    assert await store.get_file("p1", record.id) == record


async def test_round_trip_from_stream(store: Store) -> None:
    """A stream of small chunks is stored whole and file_path points at exactly those bytes."""
    data = os.urandom(3 * (1 << 20) + 17)  # more than one gathered write
    record = await store.create_file(
        "p1", "big.bin", "assistants", chunks_of(data, 7000), len(data)
    )
    assert record.bytes == len(data)
    assert Path(await store.file_path("p1", record.id)).read_bytes() == data


async def test_blob_name_is_random_and_private(store: Store, tmp_path: Path) -> None:
    """The on-disk name is 32 random hex digits, unrelated to the client's name; mode 0600."""
    record = await store.create_file("p1", "../../etc/passwd", "assistants", b"x", 10)
    path = Path(await store.file_path("p1", record.id))
    assert path.parent == tmp_path / "data" / "blobs"
    assert re.fullmatch(r"[0-9a-f]{32}", path.name)
    assert path.stat().st_mode & 0o777 == 0o600
    assert record.filename == "../../etc/passwd"


async def test_size_cap_on_a_stream_leaves_nothing(store: Store, tmp_path: Path) -> None:
    """Passing max_bytes mid-stream raises QuotaExceeded and leaves no blob, temp file or row."""
    with pytest.raises(QuotaExceeded, match="upload limit of 1000 bytes"):
        await store.create_file("p1", "a", "assistants", chunks_of(b"x" * 1001, 100), 1000)
    assert blob_names(tmp_path) == []
    assert (await store.list_files("p1")).items == []


async def test_size_cap_on_bytes_leaves_nothing(store: Store, tmp_path: Path) -> None:
    """Bytes over the cap are refused before anything is written."""
    with pytest.raises(QuotaExceeded):
        await store.create_file("p1", "a", "assistants", b"x" * 11, 10)
    assert blob_names(tmp_path) == []


async def test_exactly_the_cap_is_accepted(store: Store) -> None:
    """A file of exactly max_bytes is stored."""
    record = await store.create_file("p1", "a", "assistants", chunks_of(b"x" * 1000, 64), 1000)
    assert record.bytes == 1000


async def test_failing_stream_leaves_nothing(store: Store, tmp_path: Path) -> None:
    """A stream that breaks (client gone) leaves no temp file and no row."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"abc"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.create_file("p1", "a", "assistants", broken(), 1000)
    assert blob_names(tmp_path) == []
    assert (await store.list_files("p1")).items == []


async def test_cancelled_upload_leaves_nothing(store: Store, tmp_path: Path) -> None:
    """Cancelling an upload while bytes still arrive removes its temporary file."""
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"abc"
        started.set()
        await asyncio.sleep(3600)
        yield b"never"

    task = asyncio.create_task(store.create_file("p1", "a", "assistants", slow(), 1000))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert blob_names(tmp_path) == []


async def test_delete_removes_row_and_blob(store: Store, tmp_path: Path) -> None:
    """After delete_file the file is NotFound everywhere and its blob is gone."""
    record = await store.create_file("p1", "a", "assistants", b"abc", 10)
    assert len(blob_names(tmp_path)) == 1
    await store.delete_file("p1", record.id)
    assert blob_names(tmp_path) == []
    for call in (store.get_file, store.read_file, store.file_path, store.delete_file):
        with pytest.raises(NotFound, match=record.id):
            await call("p1", record.id)


async def test_other_project_sees_nothing(store: Store, tmp_path: Path) -> None:
    """Another project's file is NotFound for every call, absent from lists, and not deleted."""
    record = await store.create_file("p1", "a", "assistants", b"abc", 10)
    for call in (store.get_file, store.read_file, store.file_path, store.delete_file):
        with pytest.raises(NotFound):
            await call("p2", record.id)
    assert (await store.list_files("p2")).items == []
    assert await store.read_file("p1", record.id) == b"abc"


async def test_list_files_filters_by_purpose_and_pages(store: Store) -> None:
    """list_files filters on purpose, orders newest first by default and pages with after."""
    ids = []
    for i in range(5):
        purpose = "assistants" if i % 2 == 0 else "user_data"
        ids.append((await store.create_file("p1", f"f{i}", purpose, b"x", 10)).id)
    assert [f.id for f in (await store.list_files("p1")).items] == ids[::-1]
    assistants = await store.list_files("p1", purpose="assistants", order="asc")
    assert [f.id for f in assistants.items] == [ids[0], ids[2], ids[4]]
    first = await store.list_files("p1", limit=2, order="asc")
    assert ([f.id for f in first.items], first.has_more) == (ids[:2], True)
    rest = await store.list_files("p1", after=first.last_id, order="asc")
    assert ([f.id for f in rest.items], rest.has_more) == (ids[2:], False)
    with pytest.raises(InvalidRequest):
        await store.list_files("p1", after="file-unknown")


async def test_body_is_kept(store: Store) -> None:
    """An extra body given at creation comes back as given."""
    body = {"status": "processed", "status_details": None}
    record = await store.create_file("p1", "a", "assistants", b"x", 10, body=body)
    assert (await store.get_file("p1", record.id)).body == body


async def test_orphans_are_swept_at_open(tmp_path: Path) -> None:
    """At open, old blobs without a row and old temp files go; young ones and real files stay."""
    data_dir = str(tmp_path / "data")
    store = await Store.open(data_dir)
    kept = Path(await store.file_path("p1", (await store.create_file("p1", "a", "f", b"a", 9)).id))
    await store.close()
    blobs = tmp_path / "data" / "blobs"
    for name in ("0" * 32, ".tmp-" + "1" * 32, "2" * 32):
        (blobs / name).write_bytes(b"left over")
    for path in (blobs / ("0" * 32), blobs / (".tmp-" + "1" * 32), kept):
        os.utime(path, (0, 0))  # as if written long ago
    await (await Store.open(data_dir)).close()
    assert blob_names(tmp_path) == sorted(["2" * 32, kept.name])


async def test_orphans_are_swept_while_open(tmp_path: Path) -> None:
    """A crash of an upload leaves a temp file; the running server's sweep removes it once old,
    and leaves what is young or has a row."""
    store = await Store.open(str(tmp_path / "data"))
    try:
        record = await store.create_file("p1", "a", "f", b"a", 9)
        kept = Path(await store.file_path("p1", record.id))
        blobs = tmp_path / "data" / "blobs"
        old_temp, young_temp = blobs / (".tmp-" + "1" * 32), blobs / (".tmp-" + "3" * 32)
        for path in (old_temp, young_temp):
            path.write_bytes(b"part of an upload")
        os.utime(old_temp, (0, 0))
        os.utime(kept, (0, 0))
        await store.sweep_blobs()
        assert blob_names(tmp_path) == sorted([young_temp.name, kept.name])
        assert await store.read_file("p1", record.id) == b"a"
    finally:
        await store.close()

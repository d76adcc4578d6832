"""Many coroutines at once: writers never hit "database is locked", readers see whole objects."""

from __future__ import annotations

import asyncio

from codeinterp.store import Store

from .helpers import run_body


async def test_concurrent_writers_and_readers(store: Store) -> None:
    """A run loop updating runs while clients poll and create never fails and loses no write."""
    runs = [f"r{i}" for i in range(6)]
    for run_id in runs:
        await store.create_object("run", "p1", run_id, run_body(run_id, "t1"))

    async def run_loop(run_id: str) -> None:
        for step in range(10):
            body = run_body(run_id, "t1", "in_progress", step=step)
            await store.update_object("run", "p1", run_id, body)

    async def poll(run_id: str) -> None:
        for _ in range(10):
            record = await store.get_object("run", "p1", run_id)
            assert record.status == record.body["status"]
            await store.list_objects("run", "p1", thread_id="t1")

    async def create(i: int) -> None:
        await store.create_object("thread", "p1", f"t-new{i}", {"i": i})

    await asyncio.gather(
        *(run_loop(r) for r in runs), *(poll(r) for r in runs), *(create(i) for i in range(30))
    )
    for run_id in runs:
        assert (await store.get_object("run", "p1", run_id)).body["step"] == 9
    assert len((await store.list_objects("thread", "p1", limit=100)).items) == 30


async def test_concurrent_uploads(store: Store) -> None:
    """Uploads running side by side each keep their own bytes."""
    datas = [bytes([i]) * (1000 + i) for i in range(20)]
    records = await asyncio.gather(
        *(store.create_file("p1", f"f{i}", "assistants", d, 10_000) for i, d in enumerate(datas))
    )
    for record, data in zip(records, datas, strict=True):
        assert await store.read_file("p1", record.id) == data

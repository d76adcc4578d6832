"""Cursor pagination: order, after/before, has_more, bad cursors; a walk sees everything once."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeinterp.errors import InvalidRequest
from codeinterp.store import ObjectRecord, Page, Store


async def make_assistants(store: Store, project: str, n: int) -> list[str]:
    ids = [f"asst_{project}_{i}" for i in range(n)]
    for obj_id in ids:
        await store.create_object("assistant", project, obj_id, {"id": obj_id})
    return ids


def ids_of(page: Page[ObjectRecord]) -> tuple[list[str], bool]:
    return [item.id for item in page.items], page.has_more


async def test_order_and_limit(store: Store) -> None:
    """desc lists newest first, asc oldest first; has_more is true only when more exist."""
    ids = await make_assistants(store, "p1", 5)
    assert ids_of(await store.list_objects("assistant", "p1")) == (ids[::-1], False)
    assert ids_of(await store.list_objects("assistant", "p1", order="asc")) == (ids, False)
    assert ids_of(await store.list_objects("assistant", "p1", limit=4)) == (ids[:0:-1], True)
    assert ids_of(await store.list_objects("assistant", "p1", limit=5)) == (ids[::-1], False)


async def test_after_and_before(store: Store) -> None:
    """after continues past the cursor; before alone gives the page just before it."""
    a = await make_assistants(store, "p1", 6)
    page = await store.list_objects("assistant", "p1", order="asc", after=a[1], limit=2)
    assert ids_of(page) == ([a[2], a[3]], True)
    page = await store.list_objects("assistant", "p1", order="desc", after=a[4], limit=2)
    assert ids_of(page) == ([a[3], a[2]], True)
    page = await store.list_objects("assistant", "p1", order="asc", before=a[4], limit=2)
    assert ids_of(page) == ([a[2], a[3]], True)
    page = await store.list_objects("assistant", "p1", order="desc", before=a[1], limit=2)
    assert ids_of(page) == ([a[3], a[2]], True)
    page = await store.list_objects("assistant", "p1", order="desc", before=a[3], limit=2)
    assert ids_of(page) == ([a[5], a[4]], False)
    page = await store.list_objects("assistant", "p1", order="asc", after=a[0], before=a[4])
    assert ids_of(page) == ([a[1], a[2], a[3]], False)


async def test_page_ids(store: Store) -> None:
    """first_id and last_id name the page's ends, None when it is empty."""
    a = await make_assistants(store, "p1", 3)
    page = await store.list_objects("assistant", "p1", order="asc")
    assert (page.first_id, page.last_id) == (a[0], a[2])
    empty = await store.list_objects("assistant", "p1", after=a[0])
    assert (empty.items, empty.first_id, empty.last_id) == ([], None, None)


async def test_deleted_objects_leave_cursors_working(store: Store) -> None:
    """Deleting objects between pages neither repeats nor skips the rest."""
    a = await make_assistants(store, "p1", 5)
    first = await store.list_objects("assistant", "p1", order="asc", limit=2)
    await store.delete_object("assistant", "p1", a[2])
    rest = await store.list_objects("assistant", "p1", order="asc", after=first.last_id)
    assert ids_of(rest) == ([a[3], a[4]], False)


@pytest.mark.parametrize("cursor", ["after", "before"])
async def test_unknown_cursor_is_invalid(store: Store, cursor: str) -> None:
    """A cursor naming no object of the list (or another project's) raises InvalidRequest."""
    await make_assistants(store, "p2", 1)
    for bad in ("asst_missing", "asst_p2_0"):
        with pytest.raises(InvalidRequest, match="earlier page") as info:
            if cursor == "after":
                await store.list_objects("assistant", "p1", after=bad)
            else:
                await store.list_objects("assistant", "p1", before=bad)
        assert info.value.param == cursor


async def test_bad_limit_and_order_are_invalid(store: Store) -> None:
    """A limit below 1 or an order other than asc/desc raises InvalidRequest."""
    with pytest.raises(InvalidRequest, match="limit"):
        await store.list_objects("assistant", "p1", limit=0)
    with pytest.raises(InvalidRequest, match="order"):
        await store.list_objects("assistant", "p1", order="newest")


def test_walking_pages_sees_every_object_once(tmp_path: Path) -> None:
    """Walking pages by after=last_id (or before=first_id) yields every object once, in order."""
    projects = itertools.count()
    with asyncio.Runner() as runner:
        store = runner.run(Store.open(str(tmp_path / "data")))
        try:

            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(
                n=st.integers(0, 12),
                limit=st.integers(1, 5),
                order=st.sampled_from(["asc", "desc"]),
                noise=st.integers(0, 3),
                deleted=st.sets(st.integers(0, 11)),
            )
            def check(n: int, limit: int, order: str, noise: int, deleted: set[int]) -> None:
                project = f"p{next(projects)}"
                runner.run(walk(store, project, n, limit, order, noise, deleted))

            check()
        finally:
            runner.run(store.close())


async def walk(
    store: Store, project: str, n: int, limit: int, order: str, noise: int, deleted: set[int]
) -> None:
    """Store n objects among another project's (noise), delete some, then walk both ways."""
    ids = []
    for i in range(n):
        obj_id = f"asst_{project}_{i}"
        await store.create_object("assistant", project, obj_id, {"id": obj_id})
        ids.append(obj_id)
        for j in range(noise if i % 2 == 0 else 0):
            other = f"asst_{project}_{i}_noise{j}"
            await store.create_object("assistant", project + "x", other, {"id": other})
    for i in sorted(deleted & set(range(n))):
        await store.delete_object("assistant", project, ids[i])
    ids = [obj_id for i, obj_id in enumerate(ids) if i not in deleted]
    expected = ids if order == "asc" else ids[::-1]

    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.list_objects("assistant", project, after=after, limit=limit, order=order)
        assert len(page.items) <= limit
        seen += [item.id for item in page.items]
        if not page.has_more:
            break
        assert page.items
        after = page.last_id
    assert seen == expected

    if not ids:
        return
    backwards = [expected[-1]]
    before: str | None = expected[-1]
    while True:
        page = await store.list_objects(
            "assistant", project, before=before, limit=limit, order=order
        )
        backwards = [item.id for item in page.items] + backwards
        if not page.has_more:
            break
        before = page.first_id
    assert backwards == expected

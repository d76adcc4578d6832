"""Usage records of code sessions: start, end, list by time window, end all at start-up."""

from __future__ import annotations

import pytest

from codeinterp.errors import Conflict, InvalidRequest, NotFound
from codeinterp.store import SessionRecord, Store


async def test_start_and_end(store: Store) -> None:
    """A session is recorded at start, ended once, and listed with its price and memory."""
    started = await store.record_session_start("p1", "sess_1", "thread", "t1", 100, 0.03)
    assert started == SessionRecord("sess_1", "p1", "thread", "t1", 100, None, 0.03, "1g")
    await store.record_session_end("sess_1", 160)
    await store.record_session_end("sess_1", 999)  # a second end keeps the first
    [listed] = await store.list_sessions("p1", start_time=0)
    assert (listed.ended_at, listed.price_usd, listed.memory_limit) == (160, 0.03, "1g")


async def test_list_by_window_and_project(store: Store) -> None:
    """list_sessions returns the project's sessions started in [start_time, end_time), in order."""
    for i, started in enumerate((50, 100, 150, 200)):
        await store.record_session_start("p1", f"s{i}", "container", "c1", started, 0.03, "4g")
    await store.record_session_start("p2", "other", "thread", "t1", 120, 0.03)
    window = await store.list_sessions("p1", start_time=100, end_time=200)
    assert [s.id for s in window] == ["s1", "s2"]
    assert [s.id for s in await store.list_sessions("p1", start_time=100)] == ["s1", "s2", "s3"]
    assert [s.id for s in await store.list_sessions("p2", start_time=0)] == ["other"]


async def test_end_open_sessions(store: Store) -> None:
    """end_open_sessions ends every open session (all projects) and counts them."""
    await store.record_session_start("p1", "s1", "thread", "t1", 10, 0.03)
    await store.record_session_start("p2", "s2", "thread", "t2", 10, 0.03)
    await store.record_session_start("p1", "s3", "thread", "t3", 10, 0.03)
    await store.record_session_end("s3", 20)
    assert await store.end_open_sessions(30) == 2
    ended = {
        s.id: s.ended_at for p in ("p1", "p2") for s in await store.list_sessions(p, start_time=0)
    }
    assert ended == {"s1": 30, "s2": 30, "s3": 20}
    assert await store.end_open_sessions(40) == 0


async def test_bad_session_calls(store: Store) -> None:
    """An unknown owner kind is invalid, a reused id conflicts, an unknown id is not found."""
    with pytest.raises(InvalidRequest, match="owner_kind"):
        await store.record_session_start("p1", "s1", "assistant", "a1", 10, 0.03)
    await store.record_session_start("p1", "s1", "thread", "t1", 10, 0.03)
    with pytest.raises(Conflict):
        await store.record_session_start("p1", "s1", "thread", "t1", 10, 0.03)
    with pytest.raises(NotFound):
        await store.record_session_end("s-missing", 20)

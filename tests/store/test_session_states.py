"""Saved session states: one per owner, replaced atomically, and what keeping or discarding one
does to its container and its usage record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codeinterp.store import SessionStateRecord, Store


def state(
    owner_id: str, project: str = "p1", *, saved_at: int = 100, size: int = 5
) -> SessionStateRecord:
    return SessionStateRecord(
        owner_id=owner_id,
        project=project,
        owner_kind="container" if owner_id.startswith("cntr") else "thread",
        session_id=f"sess_{owner_id}",
        bytes=size,
        saved_at=saved_at,
        body={"files": {"file-1": "/mnt/data/a.txt"}, "owner": {"k": [1, 2]}},
        path="",
    )


def archive(store: Store, data: bytes) -> str:
    path = store.temp_path()
    with open(path, "wb") as f:
        f.write(data)
    return path


def blob_names(store: Store) -> set[str]:
    directory = os.path.dirname(store.temp_path())
    return set(os.listdir(directory))


async def test_a_state_is_kept_replaced_and_deleted(store: Store) -> None:
    temp = archive(store, b"first")
    await store.save_session_state(state("thr_1"), temp)
    assert not os.path.exists(temp)  # taken over, not copied
    found = await store.find_session_state("p1", "thr_1")
    assert found is not None
    assert found.body == state("thr_1").body and found.session_id == "sess_thr_1"
    with open(found.path, "rb") as f:
        assert f.read() == b"first"
    assert await store.find_session_state("p2", "thr_1") is None  # another project's

    await store.save_session_state(state("thr_1", saved_at=200), archive(store, b"second"))
    again = await store.find_session_state("p1", "thr_1")
    assert again is not None and again.saved_at == 200 and again.path != found.path
    assert not os.path.exists(found.path)  # the old archive is gone
    assert len(blob_names(store)) == 1

    await store.delete_session_state("p1", "thr_1")
    assert await store.find_session_state("p1", "thr_1") is None
    assert blob_names(store) == set()


async def test_a_state_without_an_archive(store: Store) -> None:
    """A session that had not changed is saved as a row alone (path ""): it replaces an archive
    (which goes), is counted and discarded like any state, and no sweep looks for its blob."""
    await store.save_session_state(state("thr_1"), archive(store, b"old"))
    await store.save_session_state(state("thr_1", saved_at=200, size=0), None)
    found = await store.find_session_state("p1", "thr_1")
    assert found is not None and (found.path, found.bytes, found.saved_at) == ("", 0, 200)
    assert found.body == state("thr_1").body
    assert blob_names(store) == set()  # the archive it replaced is gone

    await store.save_session_state(state("thr_2", size=0), None)  # two without: no clash
    assert [s.path for s in await store.list_session_states("p1")] == ["", ""]
    await store.sweep_blobs()
    await store.save_session_state(state("thr_2", saved_at=300), archive(store, b"new"))
    assert len(blob_names(store)) == 1  # and an archive can replace it

    await store.delete_session_state("p1", "thr_1")
    assert await store.find_session_state("p1", "thr_1") is None
    assert await store.discard_session_states(["thr_2"]) == 1
    assert await store.list_session_states() == [] and blob_names(store) == set()


async def test_states_list_oldest_first_and_by_age(store: Store) -> None:
    for owner, saved_at in (("thr_b", 300), ("thr_a", 100), ("cntr_c", 200)):
        await store.save_session_state(state(owner, saved_at=saved_at), archive(store, b"x"))
    await store.save_session_state(state("thr_z", "p2", saved_at=50), archive(store, b"x"))
    assert [s.owner_id for s in await store.list_session_states("p1")] == [
        "thr_a", "cntr_c", "thr_b",
    ]  # fmt: skip
    old = await store.list_session_states(saved_before=250)
    assert [s.owner_id for s in old] == ["thr_z", "thr_a", "cntr_c"]


SECRETS = [{"domain": "api.test", "name": "KEY", "value": "v"}]


async def test_discarding_expires_the_container_and_ends_the_usage_record(store: Store) -> None:
    """... and drops its network policy's secrets, which nothing can use any more."""
    body = {"id": "cntr_1", "name": "box", "status": "running", "domain_secrets": SECRETS}
    await store.create_object("container", "p1", "cntr_1", body)
    await store.record_session_start("p1", "sess_cntr_1", "container", "cntr_1", 10, 0.03)
    await store.save_session_state(state("cntr_1"), archive(store, b"x"))
    await store.save_session_state(state("thr_2"), archive(store, b"y"))

    assert await store.discard_session_states(["cntr_1", "cntr_unknown"]) == 1

    container = await store.get_object("container", "p1", "cntr_1")
    assert container.status == container.body["status"] == "expired"
    assert "domain_secrets" not in container.body
    assert container.body["name"] == "box"
    [session] = await store.list_sessions("p1", start_time=0)
    assert session.ended_at is not None
    assert [s.owner_id for s in await store.list_session_states()] == ["thr_2"]
    assert len(blob_names(store)) == 1


async def test_a_restart_spares_what_a_state_keeps(tmp_path: Path) -> None:
    """At start-up a running container with a saved state is not expired and its session's
    usage record stays open; without one, both end as before. The sweep keeps the archive."""
    data_dir = str(tmp_path / "data")
    store = await Store.open(data_dir)
    for owner in ("cntr_saved", "cntr_lost"):
        body = {"id": owner, "name": owner, "status": "running", "domain_secrets": SECRETS}
        await store.create_object("container", "p1", owner, body)
        await store.record_session_start("p1", f"sess_{owner}", "container", owner, 10, 0.03)
    await store.save_session_state(state("cntr_saved"), archive(store, b"x"))
    await store.close()

    store = await Store.open(data_dir)
    try:
        assert await store.expire_running_containers() == 1
        assert await store.end_open_sessions(20) == 1
        statuses = {c.id: c.status for c in (await store.list_objects("container", "p1")).items}
        assert statuses == {"cntr_saved": "running", "cntr_lost": "expired"}
        secrets = {
            c.id: c.body.get("domain_secrets")
            for c in (await store.list_objects("container", "p1")).items
        }
        assert secrets == {"cntr_saved": SECRETS, "cntr_lost": None}  # kept while it can wake
        ended = {s.id: s.ended_at for s in await store.list_sessions("p1", start_time=0)}
        assert ended == {"sess_cntr_saved": None, "sess_cntr_lost": 20}
        saved = await store.find_session_state("p1", "cntr_saved")
        assert saved is not None
        old = os.path.getmtime(saved.path) - 3600
        os.utime(saved.path, (old, old))
        await store.sweep_blobs()
        assert os.path.exists(saved.path)
    finally:
        await store.close()


async def test_a_failed_save_leaves_the_old_state(store: Store) -> None:
    """A save whose archive is missing fails and keeps the state there was."""
    owner = "thr_1"
    await store.save_session_state(state(owner), archive(store, b"kept"))
    with pytest.raises(FileNotFoundError):
        await store.save_session_state(state(owner, saved_at=999), store.temp_path())
    found = await store.find_session_state("p1", owner)
    assert found is not None and found.saved_at == 100
    with open(found.path, "rb") as f:
        assert f.read() == b"kept"


async def test_bytes_used_and_saved_at_kept_up_to_date(store: Store) -> None:
    """The quota's sum spares the saving owner's own state; a touch moves only saved_at."""
    await store.save_session_state(state("thr_a", size=300), archive(store, b"a"))
    await store.save_session_state(state("thr_b", size=500), archive(store, b"b"))
    await store.save_session_state(state("thr_c", "p2", size=7), archive(store, b"c"))
    assert await store.session_state_bytes("p1") == 800
    assert await store.session_state_bytes("p1", except_owner="thr_b") == 300
    assert await store.session_state_bytes("p3") == 0
    before = await store.find_session_state("p1", "thr_a")
    await store.touch_session_state("p1", "thr_a", 4242)
    after = await store.find_session_state("p1", "thr_a")
    assert before is not None and after is not None
    assert after.saved_at == 4242 and after.path == before.path and after.bytes == before.bytes

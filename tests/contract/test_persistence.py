"""Sessions outlive their processes: idle ones sleep on disk and wake on their next use, a stop
saves them, a crash falls back to the last checkpoint, and saved states obey their retention and
their project's quota (sessions/persistence.py). Short settings here, through the official SDK.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.contract.helpers import server_env
from tests.contract.test_containers import execute, text_result, unique
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream, Text, python_call

pytestmark = pytest.mark.root

IDLE_MINUTES = 0.03  # 1.8 s, for containers (a cap) and threads alike
TIGHT_KEY = "tight-key"  # a project of its own, for the quota
KEYS = f"local,{TIGHT_KEY}:tight"
QUOTA_MIB = 1
WAIT = 30.0  # the longest a test waits for the server to do something in the background


def _server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory, **settings: object
) -> Iterator[ServerProcess]:
    env = server_env(
        upstream,
        container_idle_cap_minutes=IDLE_MINUTES,
        session_idle_minutes=IDLE_MINUTES,
        api_keys=KEYS,
        **settings,
    )
    with ServerProcess(env, data_dir=tmp_path_factory.mktemp("persist")) as process:
        yield process


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Saves a session half a second after it changes (the crash policy)."""
    yield from _server(upstream, tmp_path_factory, checkpoint_seconds=0.5)


@pytest.fixture(scope="module")
def no_checkpoints(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Saves only at sleep and at a stop; a project's states take at most 1 MiB."""
    yield from _server(
        upstream,
        tmp_path_factory,
        checkpoint_seconds=0,
        snapshot_quota_mib_per_project=QUOTA_MIB,
    )


@pytest.fixture(scope="module")
def short_retention(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Keeps a saved state 4 s."""
    yield from _server(upstream, tmp_path_factory, snapshot_retention_hours=4 / 3600)


@pytest.fixture(autouse=True)
def _clean_upstream(upstream: ScriptedUpstream) -> Iterator[None]:
    upstream.reset()
    yield
    upstream.check()


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    answer = httpx2.get(
        f"{server.url}/metrics", headers={"Authorization": "Bearer local"}, timeout=10
    )
    answer.raise_for_status()
    total = 0.0
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still waiting after {timeout:g} s for {what}"
        time.sleep(0.2)


def wait_for_sleeps(server: ServerProcess, before: float, count: int = 1) -> None:
    name = "codeinterp_sessions_slept_total"
    wait_for(f"{count} session(s) to sleep", lambda: metric(server, name) >= before + count)


def blobs(server: ServerProcess) -> set[str]:
    return {n for n in os.listdir(server.data_dir / "blobs") if not n.startswith(".")}


def usage_sessions(client: openai.OpenAI, since: int) -> list[dict[str, Any]]:
    usage = client.get(
        "/organization/usage/code_interpreter_sessions",
        cast_to=object,
        options={"params": {"start_time": since}},
    )
    assert isinstance(usage, dict), usage
    return [r for b in usage["data"] for r in b["results"]]


def listed_status(client: openai.OpenAI, container_id: str) -> str:
    """The container's status as the list shows it (a retrieve would count as a use)."""
    return {c.id: c.status for c in client.containers.list(limit=100)}[container_id]


def file_ids(client: openai.OpenAI, container_id: str) -> dict[str, str]:
    return {f.path: f.id for f in client.containers.files.list(container_id)}


STATE = """
import numpy as np
x = 41
def inc(v):
    return v + 1
class Box:
    def __init__(self, v):
        self.v = v
box = Box(np.arange(3))
open('/mnt/data/made.txt', 'w').write('by code')
numbers = (i for i in range(3))
"""
CHECK = "inc(x), box.v.tolist(), *(open(f'/mnt/data/{n}.txt').read() for n in ('made', 'notes'))"
EXPECTED = repr((42, [0, 1, 2], "by code", "uploaded"))


def make_state(client: openai.OpenAI) -> str:
    """A container with variables, a function, a class, an upload and a file its code wrote."""
    made = client.containers.create(
        name=unique("persist"), expires_after={"anchor": "last_active_at", "minutes": 1}
    )
    client.containers.files.create(made.id, file=("notes.txt", b"uploaded"))
    assert execute(client, made.id, STATE)["status"] == "ok"
    return made.id


def test_an_idle_container_sleeps_and_wakes_as_it_was(server: ServerProcess) -> None:
    """Past its idle time the container's process ends (a sleep), it still shows "running" (a
    retrieve or an interrupt does not wake it), and its next use wakes it with the same
    variables, files, file ids and execution count; the generator, which cannot be saved, is
    named once. One session in the usage report."""
    since = int(time.time()) - 1
    with server.client() as client:
        slept = metric(server, "codeinterp_sessions_slept_total")
        box = make_state(client)
        ids = file_ids(client, box)
        assert set(ids) == {"/mnt/data/notes.txt", "/mnt/data/made.txt"}
        wait_for_sleeps(server, slept)
        woken = metric(server, "codeinterp_sessions_woken_total")
        assert client.containers.retrieve(box).status == "running"
        interrupted = client.post(f"/containers/{box}/interrupt", cast_to=object)
        assert interrupted == {"id": box, "object": "container.interrupt", "interrupted": False}
        assert metric(server, "codeinterp_sessions_woken_total") == woken  # neither woke it

        first = execute(client, box, CHECK)
        assert text_result(first) == EXPECTED
        assert "numbers" in first["message"] and "restored" in first["message"]
        assert metric(server, "codeinterp_sessions_woken_total") == woken + 1
        assert first["execution_count"] == 2
        assert file_ids(client, box) == ids
        assert execute(client, box, "1")["message"] == ""
        sessions = usage_sessions(client, since)
        assert sum(r["num_sessions"] for r in sessions) == 1
        client.containers.delete(box)


def test_a_thread_session_sleeps_and_the_next_run_finds_its_state(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    with server.client() as client:
        slept = metric(server, "codeinterp_sessions_slept_total")
        assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "set"}])
        upstream.script = [python_call("y = 7 * 6"), Text("set")]
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        assert run.status == "completed"
        wait_for_sleeps(server, slept)
        upstream.script = [python_call("print(y)"), Text("read")]
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="read")
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        assert run.status == "completed"
        assert "42" in upstream.last_tool_results()[-1]
        client.beta.threads.delete(thread.id)


def test_a_crash_falls_back_to_the_last_checkpoint(server: ServerProcess) -> None:
    """SIGKILL of the server: the container comes back with what its last checkpoint saved."""
    with server.client() as client:
        saves = metric(server, "codeinterp_session_saves_total", reason="checkpoint")
        box = make_state(client)
        wait_for(
            "a checkpoint",
            lambda: metric(server, "codeinterp_session_saves_total", reason="checkpoint") > saves,
        )
        ids = file_ids(client, box)
    server.kill()
    server.restart()
    with server.client() as client:
        assert client.containers.retrieve(box).status == "running"
        assert text_result(execute(client, box, CHECK)) == EXPECTED
        assert file_ids(client, box) == ids
        client.containers.delete(box)


def test_deleting_a_sleeping_container_deletes_its_state(server: ServerProcess) -> None:
    since = int(time.time()) - 1
    with server.client() as client:
        before = blobs(server)
        slept = metric(server, "codeinterp_sessions_slept_total")
        box = client.containers.create(name=unique("deleted"))
        execute(client, box.id, "x = 1")
        wait_for_sleeps(server, slept)
        state = blobs(server) - before
        assert len(state) == 1
        client.containers.delete(box.id)
        assert not state & blobs(server)
        ours = [r for r in usage_sessions(client, since) if r["num_sessions"]]
        assert ours, "the container's session is in the usage report"
        with pytest.raises(openai.NotFoundError):
            execute(client, box.id, "x")


def test_a_state_whose_archive_is_gone_expires_its_container(server: ServerProcess) -> None:
    """The archive deleted behind the server's back: the next use says the container expired
    (the state is discarded), instead of failing on every call."""
    with server.client() as client:
        before = blobs(server)
        slept = metric(server, "codeinterp_sessions_slept_total")
        box = client.containers.create(name=unique("lost"))
        execute(client, box.id, "x = 1")
        wait_for_sleeps(server, slept)
        [archive] = blobs(server) - before
        os.unlink(server.data_dir / "blobs" / archive)
        with pytest.raises(openai.BadRequestError) as refused:
            execute(client, box.id, "x")
        assert refused.value.code == "container_expired"
        assert client.containers.retrieve(box.id).status == "expired"
        client.containers.delete(box.id)


def test_a_stop_saves_live_sessions_and_a_restart_wakes_them(no_checkpoints: ServerProcess) -> None:
    """No checkpoints: only the stop itself can have saved the state the restart brings back."""
    server = no_checkpoints
    with server.client() as client:
        box = make_state(client)
        ids = file_ids(client, box)
    server.restart()  # SIGTERM, then the same data directory
    assert "saved 1 of 1 live session(s)" in server.logs()
    with server.client() as client:
        assert client.containers.retrieve(box).status == "running"
        assert text_result(execute(client, box, CHECK)) == EXPECTED
        assert file_ids(client, box) == ids
        client.containers.delete(box)


def test_a_container_never_used_is_saved_without_an_archive(
    no_checkpoints: ServerProcess,
) -> None:
    """Made and left alone, its state is a new session's: the stop saves it as a row alone (no
    archive, nothing asked of its kernel), the restart keeps it running, and its first use
    gets a new session, which then sleeps with an archive like any other."""
    server = no_checkpoints
    with server.client() as client:
        before = blobs(server)
        box = client.containers.create(name=unique("untouched")).id
    server.restart()
    logs = server.logs()
    assert "saved 1 of 1 live session(s)" in logs
    assert f"saved the session of container {box}: unchanged since it was made" in logs
    assert blobs(server) == before
    with server.client() as client:
        assert client.containers.retrieve(box).status == "running"
        woken = metric(server, "codeinterp_sessions_woken_total")
        first = execute(client, box, "x = 5; x")
        assert text_result(first) == "5" and first["execution_count"] == 1
        assert metric(server, "codeinterp_sessions_woken_total") == woken + 1
        slept = metric(server, "codeinterp_sessions_slept_total")
        wait_for_sleeps(server, slept)
        assert len(blobs(server) - before) == 1  # it changed: saved with its archive
        assert text_result(execute(client, box, "x + 1")) == "6"
        client.containers.delete(box)


def test_the_quota_discards_the_oldest_sleeping_state(no_checkpoints: ServerProcess) -> None:
    """1 MiB per project: a second 0.6 MB state pushes out the first (that container expires);
    a state over the quota by itself is not made (that container expires at its idle time);
    another project's containers are untouched."""
    server = no_checkpoints
    with server.client(api_key=TIGHT_KEY) as tight, server.client() as other:
        bystander = other.containers.create(name=unique("bystander"))
        execute(other, bystander.id, "kept = 'yes'")
        slept = metric(server, "codeinterp_sessions_slept_total")
        first = tight.containers.create(name=unique("first"))
        execute(tight, first.id, "import os; open('/mnt/data/a', 'wb').write(os.urandom(600_000))")
        wait_for_sleeps(server, slept, 2)  # the first and the bystander

        second = tight.containers.create(name=unique("second"))
        execute(tight, second.id, "import os; open('/mnt/data/b', 'wb').write(os.urandom(600_000))")
        wait_for("the first to expire", lambda: listed_status(tight, first.id) == "expired")
        with pytest.raises(openai.BadRequestError) as refused:
            execute(tight, first.id, "1")
        assert refused.value.code == "container_expired"
        assert (
            text_result(execute(tight, second.id, "len(open('/mnt/data/b', 'rb').read())"))
            == "600000"
        )

        huge = tight.containers.create(name=unique("huge"))
        execute(tight, huge.id, "import os; open('/mnt/data/c', 'wb').write(os.urandom(1_200_000))")
        wait_for("the huge one to expire", lambda: listed_status(tight, huge.id) == "expired")
        assert tight.containers.retrieve(second.id).status == "running"
        assert text_result(execute(other, bystander.id, "kept")) == repr("yes")
        for client, box in ((tight, first), (tight, second), (tight, huge), (other, bystander)):
            client.containers.delete(box.id)


def test_a_state_past_its_retention_is_discarded(short_retention: ServerProcess) -> None:
    server = short_retention
    with server.client() as client:
        before = blobs(server)
        slept = metric(server, "codeinterp_sessions_slept_total")
        box = client.containers.create(name=unique("retained"))
        execute(client, box.id, "x = 1")
        wait_for_sleeps(server, slept)
        assert len(blobs(server) - before) == 1
        wait_for(
            "the container to expire",
            lambda: listed_status(client, box.id) == "expired",
        )
        assert blobs(server) == before
        with pytest.raises(openai.BadRequestError) as refused:
            execute(client, box.id, "x")
        assert refused.value.code == "container_expired"
        client.containers.delete(box.id)


def test_a_server_with_persistence_off_expires_what_was_saved(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """States saved while persistence was on are discarded when it is turned off: their
    containers expire, and their archives are deleted."""
    env = server_env(upstream, api_keys=KEYS, checkpoint_seconds=0)
    with ServerProcess(env, data_dir=tmp_path / "data") as process:
        with process.client() as client:
            box = client.containers.create(name=unique("switched"))
            execute(client, box.id, "x = 1")
        process.stop()
        saved = blobs(process)
        assert len(saved) == 1
        process.env["CODEINTERP_SESSION_PERSISTENCE"] = "false"
        process.start()
        with process.client() as client:
            assert client.containers.retrieve(box.id).status == "expired"
        assert not blobs(process)

"""Faults, each through a real server: what the caller hears, what stays stored, and what the
server leaves on the machine afterwards (`tests/support/leaks.py`).

- the server SIGKILLed during an upload and a streamed execute (the run case is
  test_restart.py's): stored objects intact, the partial upload never listed, the execution's
  container expired with its reason, the killed server's processes, cgroups and mounts gone
  once the next server has started;
- the zygote SIGKILLed, a session's init SIGKILLed: the next execute works and says the state
  was lost, a new container works;
- the upstream model hanging, failing with a 500, answering invalid JSON, closing mid-stream:
  the run fails with a clear error within the configured timeout;
- the data directory's disk full: a clear 507, nothing stored lost or corrupted;
- the database locked by another process: the server keeps answering; a write waits for the
  lock, or gets a 503 with Retry-After once it has waited long enough.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.contract.helpers import assert_envelope, raw_client, server_env
from tests.support.leaks import ServerFootprint, descendants
from tests.support.server import ServerProcess
from tests.support.upstream import Broken, Delay, Fail, ScriptedUpstream, Text

pytestmark = [pytest.mark.root, pytest.mark.slow]

UPSTREAM_TIMEOUT = 2.0
PURPOSE = {"purpose": "assistants"}


def _status_field(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def zygote_of(server: ServerProcess) -> int:
    assert server.pid is not None
    children = [p for p in descendants(server.pid) if _parent(p) == server.pid]
    (pid,) = (p for p in children if "codeinterp.sandbox.zygote" in _cmdline(p))
    return pid


def _parent(pid: int) -> int:
    return int(_status_field(pid, "PPid") or 0)


def in_sessions(server: ServerProcess, ns_pid: str) -> list[int]:
    """The host pids of every session's process that is `ns_pid` in its own namespace: "1"
    for the inits, "2" for the interpreters."""
    assert server.pid is not None
    found = []
    for pid in descendants(server.pid):
        nspids = _status_field(pid, "NSpid").split()
        if len(nspids) == 2 and nspids[1] == ns_pid:
            found.append(pid)
    return found


def wait_gone(pids: list[int], within: float = 10.0) -> None:
    """Until none of `pids` is alive (the kernel ends a namespace's processes soon after its
    init, not at once)."""
    deadline = time.monotonic() + within
    while any(_status_field(p, "State")[:1] not in ("", "Z") for p in pids):
        assert time.monotonic() < deadline, f"still alive: {pids}"
        time.sleep(0.05)


@pytest.fixture
def started(upstream: ScriptedUpstream, tmp_path: Path) -> Iterator[ServerProcess]:
    upstream.reset()
    env = server_env(upstream, upstream_timeout=UPSTREAM_TIMEOUT)
    with ServerProcess(env, data_dir=tmp_path) as server:
        yield server


def execute(http: httpx2.Client, container: str, code: str) -> dict[str, Any]:
    response = http.post(f"/containers/{container}/execute", json={"code": code})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- the server killed mid-work ------------------------------------------------------------------


def test_server_killed_during_an_upload_and_a_streamed_execute(
    started: ServerProcess, upstream: ScriptedUpstream
) -> None:
    server = started
    kept = os.urandom(200_000)
    with raw_client(server) as http:
        stored = http.post(
            "/files", files={"file": ("kept.bin", kept)}, data={"purpose": "assistants"}
        )
        assert stored.status_code == 200, stored.text
        container = http.post("/containers", json={"name": "busy"}).json()["id"]
    footprint = ServerFootprint()
    streaming_started = threading.Event()

    def stream_forever() -> None:
        with (
            contextlib.suppress(httpx2.HTTPError, OSError),
            raw_client(server) as own,
            own.stream(
                "POST",
                f"/containers/{container}/execute",
                json={
                    "code": "print('started', flush=True)\nimport time; time.sleep(60)",
                    "stream": True,
                },
            ) as response,
        ):
            for line in response.iter_lines():
                if "started" in line:
                    streaming_started.set()

    def upload_slowly() -> None:
        def body() -> Iterator[bytes]:
            for _ in range(100):
                yield b"x" * 100_000
                time.sleep(0.1)

        with contextlib.suppress(httpx2.HTTPError, OSError), raw_client(server) as own:
            own.post(
                "/files",
                content=_multipart(body()),
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            )

    threads = [threading.Thread(target=t, daemon=True) for t in (stream_forever, upload_slowly)]
    for thread in threads:
        thread.start()
    assert streaming_started.wait(20)
    time.sleep(0.5)  # the upload is part way
    assert server.pid is not None
    footprint.take(server.pid)
    assert server.kill() == -9
    for thread in threads:
        thread.join(timeout=20)
    server.start()  # cleans up after the killed one
    footprint.assert_gone(within=10)
    with raw_client(server) as http:
        listed = http.get("/files").json()["data"]
        assert [f["filename"] for f in listed] == ["kept.bin"]  # the partial upload is not there
        assert http.get(f"/files/{listed[0]['id']}/content").content == kept
        after = http.get(f"/containers/{container}").json()
        assert after["status"] == "expired", after
        # and the server works: a new container runs code
        fresh = http.post("/containers", json={"name": "after"}).json()["id"]
        assert execute(http, fresh, "6 * 7")["results"][0]["data"]["text/plain"] == "42"
    blobs = [n for n in os.listdir(server.data_dir / "blobs") if not n.startswith(".tmp-")]
    assert len(blobs) == 1  # only the kept file's bytes; a partial upload is only ever a .tmp-


BOUNDARY = "faultsboundary"
SLOW_CODE = "print('started', flush=True)\nimport time; time.sleep(60)"


def _multipart(chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nx\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from chunks
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


# -- sandbox processes killed --------------------------------------------------------------------


def test_zygote_killed(started: ServerProcess) -> None:
    server = started
    with raw_client(server) as http:
        container = http.post("/containers", json={"name": "z"}).json()["id"]
        assert execute(http, container, "x = 41")["status"] == "ok"
        old = zygote_of(server)
        footprint = ServerFootprint()
        assert server.pid is not None
        footprint.take(server.pid)
        interpreters = in_sessions(server, "2")
        os.kill(old, 9)
        wait_gone(interpreters)  # the sessions die with their zygote
        after = execute(http, container, "x + 1 if 'x' in dir() else 'gone'")
        assert after["status"] == "ok", after
        assert after["state_lost"] is True and "restarted" in after["message"], after
        fresh = http.post("/containers", json={"name": "new"}).json()["id"]
        assert execute(http, fresh, "6 * 7")["results"][0]["data"]["text/plain"] == "42"
        assert zygote_of(server) != old
    server.stop()
    footprint.assert_gone()


def test_a_sessions_init_killed(started: ServerProcess) -> None:
    server = started
    with raw_client(server) as http:
        container = http.post("/containers", json={"name": "i"}).json()["id"]
        assert execute(http, container, "x = 41")["status"] == "ok"
        inits, interpreters = in_sessions(server, "1"), in_sessions(server, "2")
        assert inits and interpreters, "no session processes found"
        for pid in inits:
            os.kill(pid, 9)
        wait_gone(interpreters)  # the namespace ends with its init
        after = execute(http, container, "x + 1 if 'x' in dir() else 'gone'")
        assert after["status"] == "ok", after
        assert after["state_lost"] is True and "killed" in after["message"], after
        assert execute(http, container, "6 * 7")["state_lost"] is False
    footprint = ServerFootprint()
    assert server.pid is not None
    footprint.take(server.pid)
    server.stop()
    footprint.assert_gone()


# -- the upstream model failing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        (Delay(30, then=Text("too late")), "timed out"),
        (Fail(500, "the model crashed", should_retry=False), "the model crashed"),
        (Broken(Text("cut JSON here"), after_chunks=1), ""),
        (Broken(Text("a long answer cut off"), after_chunks=2, error="stream cut"), "stream cut"),
    ],
    ids=["hangs", "500", "invalid-json", "closes-mid-stream"],
)
def test_upstream_failures_fail_the_run_clearly_and_in_time(
    started: ServerProcess, upstream: ScriptedUpstream, turn: Any, expected: str
) -> None:
    upstream.reset([turn] * 3)  # the client's retries meet the same fault
    with started.client() as sdk:
        assistant = sdk.beta.assistants.create(model="gpt-4o", tools=[])
        thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
        began = time.monotonic()
        stream = isinstance(turn, Broken) and turn.error is not None
        if stream:
            with sdk.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as s:
                s.until_done()
            run = sdk.beta.threads.runs.list(thread.id).data[0]
        else:
            run = sdk.beta.threads.runs.create_and_poll(
                thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
            )
        took = time.monotonic() - began
    assert run.status == "failed", run
    assert run.last_error is not None and run.last_error.message, run
    assert expected.lower() in run.last_error.message.lower(), run.last_error
    # three tries at most, each within the timeout, plus the client's short back-off
    assert took < 3 * UPSTREAM_TIMEOUT + 10, took


# -- the disk and the database -------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_is_a_clear_error_and_loses_nothing(
    upstream: ScriptedUpstream, small_disk: Path
) -> None:
    stored: dict[str, bytes] = {}
    with (
        ServerProcess(server_env(upstream), data_dir=small_disk) as server,
        raw_client(server) as http,
    ):
        while True:
            data = os.urandom(300_000)
            response = http.post(
                "/files", files={"file": ("f.bin", data)}, data={"purpose": "assistants"}
            )
            if response.status_code != 200:
                break
            stored[response.json()["id"]] = data
            assert len(stored) < 20, "the disk never filled"
        error = assert_envelope(response, 507, type_="server_error")
        assert error["code"] == "storage_full" and "full" in error["message"]
        # blobs left the database its reserve: small writes still work on a disk full of files
        made = http.post("/assistants", json={"model": "gpt-4o"})
        assert made.status_code == 200, made.text
        assert httpx2.get(f"{server.url}/health").status_code == 200
        listed = {f["id"] for f in http.get("/files", params={"limit": 100}).json()["data"]}
        assert listed == set(stored)
        for file_id, data in stored.items():
            assert http.get(f"/files/{file_id}/content").content == data
        # room made: storing works again
        first = next(iter(stored))
        assert http.delete(f"/files/{first}").status_code == 200
        again = http.post(
            "/files", files={"file": ("g.bin", b"ok")}, data={"purpose": "assistants"}
        )
        assert again.status_code == 200, again.text
    blobs = [n for n in os.listdir(small_disk / "blobs") if not n.startswith(".tmp-")]
    assert len(blobs) == len(stored)  # the deleted one gone, the new one there: no orphans
    with sqlite3.connect(small_disk / "codeinterp.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _hold_write_lock(database: Path, seconds: float, held: threading.Event) -> None:
    connection = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        connection.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
    finally:
        connection.close()


def test_a_database_locked_by_another_process(started: ServerProcess) -> None:
    server = started
    database = server.data_dir / "codeinterp.db"
    with raw_client(server) as http:
        # a short lock: the write waits for it, and the server answers meanwhile
        held = threading.Event()
        locker = threading.Thread(target=_hold_write_lock, args=(database, 1.5, held))
        locker.start()
        assert held.wait(5)
        began = time.monotonic()
        writer = threading.Thread(
            target=lambda: results.append(http.post("/assistants", json={"model": "gpt-4o"}))
        )
        results: list[httpx2.Response] = []
        writer.start()
        time.sleep(0.2)
        health_began = time.monotonic()
        assert httpx2.get(f"{server.url}/health").status_code == 200
        assert time.monotonic() - health_began < 0.5  # the event loop is not frozen
        writer.join(10)
        locker.join()
        assert results and results[0].status_code == 200, results
        assert time.monotonic() - began >= 1.2
        # a lock held past the store's patience: a 503 with Retry-After, then it works again
        held = threading.Event()
        locker = threading.Thread(target=_hold_write_lock, args=(database, 12.5, held))
        locker.start()
        assert held.wait(5)
        refused = http.post("/assistants", json={"model": "gpt-4o"}, timeout=30)
        error = assert_envelope(refused, 503, type_="server_error")
        assert error["code"] == "storage_busy" and "locked" in error["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        locker.join()
        assert http.post("/assistants", json={"model": "gpt-4o"}).status_code == 200
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

"""Overload is an answer, not a hang: many creates at once, caps on live sessions, and SIGTERM
with work in flight. Each server here is its own (the limits are settings), started and stopped
by the test, and what it leaves on the machine is checked after it stops."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.contract.helpers import assert_envelope, raw_client, server_env
from tests.support.leaks import ServerFootprint
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream

pytestmark = [pytest.mark.root, pytest.mark.slow]


async def create_many(server: ServerProcess, count: int) -> list[tuple[int, dict[str, Any], float]]:
    """`count` container creates at once: (status, body, seconds until answered) of each."""
    limits = httpx2.Limits(max_connections=count)
    async with httpx2.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as http:
        started = time.monotonic()

        async def one(i: int) -> tuple[int, dict[str, Any], float]:
            response = await http.post("/containers", json={"name": f"c{i}"})
            return response.status_code, response.json(), time.monotonic() - started

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_five_hundred_creates_at_once_are_all_answered_in_time(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """Every create gets a container or a clear overload error within 30 s; then the server
    stops in under 10 s with every container alive, and leaves nothing behind."""
    footprint = ServerFootprint()
    server = ServerProcess(server_env(upstream, pool_size=4), data_dir=tmp_path).start()
    try:
        answers = asyncio.run(create_many(server, 500))
        statuses = collections.Counter(status for status, _, _ in answers)
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] >= 100, statuses  # most are made; the rest were told to come back
        assert max(seconds for _, _, seconds in answers) < 30
        for status, body, _ in answers:
            if status == 503:
                assert body["error"]["code"] == "server_overloaded", body
        assert server.pid is not None
        footprint.take(server.pid)
        assert len(footprint.processes) > statuses[200]  # the sessions were noted
        assert len(footprint.runtime_dirs) == 1, footprint.runtime_dirs
    finally:
        started = time.monotonic()
        server.stop()
        stopped_in = time.monotonic() - started
    assert_stopped_cleanly(server)
    assert stopped_in < 10, stopped_in
    footprint.assert_gone()


def test_sigterm_during_creates_stops_the_server_in_time(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    footprint = ServerFootprint()
    server = ServerProcess(server_env(upstream, pool_size=2), data_dir=tmp_path).start()
    assert server.pid is not None
    creates = threading.Thread(
        target=lambda: asyncio.run(_creates_until_refused(server)), daemon=True
    )
    creates.start()
    time.sleep(2.0)  # creates are queued and being made
    footprint.take(server.pid)
    started = time.monotonic()
    server.stop()
    stopped_in = time.monotonic() - started
    assert stopped_in < 10, stopped_in
    assert_stopped_cleanly(server)
    creates.join(timeout=30)
    footprint.assert_gone()


def assert_stopped_cleanly(server: ServerProcess) -> None:
    """It ran its shutdown to the end and exited by the SIGTERM it was sent (uvicorn raises it
    again when done), not by the SIGKILL that follows a stop that takes too long."""
    assert server.returncode in (0, -signal.SIGTERM), server.returncode
    assert "Application shutdown complete" in server.logs(), server.logs()[-2000:]


async def _creates_until_refused(server: ServerProcess) -> None:
    """300 creates at once against a server that is about to stop: any answer or a dropped
    connection will do; only the server's time to stop is measured."""
    with contextlib.suppress(httpx2.HTTPError, OSError):
        await create_many(server, 300)


def test_a_project_past_its_cap_waits_then_gets_a_429(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    env = server_env(
        upstream,
        api_keys="key-a:alpha,key-b:beta",
        max_sessions_per_project=2,
        max_sessions=3,
        queue_wait_seconds=1.0,
    )
    with (
        ServerProcess(env, data_dir=tmp_path) as server,
        raw_client(server, "key-a") as alpha,
        raw_client(server, "key-b") as beta,
    ):
        first, second = (alpha.post("/containers", json={"name": n}).json() for n in "xy")
        started = time.monotonic()
        refused = alpha.post("/containers", json={"name": "z"})
        waited = time.monotonic() - started
        error = assert_envelope(refused, 429, type_="rate_limit_exceeded")
        assert error["code"] == "limit_reached"
        assert "project holds its maximum of 2 live sessions" in error["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert 0.9 <= waited < 5, waited  # it waited for room, for queue_wait_seconds
        # another project still has room, up to the server's cap of 3
        assert beta.post("/containers", json={"name": "b1"}).status_code == 200
        full = beta.post("/containers", json={"name": "b2"})
        assert (
            "server holds its maximum of 3"
            in assert_envelope(full, 429, type_="rate_limit_exceeded")["message"]
        )
        # room made while a caller waits is taken at once

        def delete_first() -> None:
            with raw_client(server, "key-a") as own:
                own.delete(f"/containers/{first['id']}")

        threading.Timer(0.3, delete_first).start()
        started = time.monotonic()
        made = alpha.post("/containers", json={"name": "z"})
        assert made.status_code == 200, made.text
        assert time.monotonic() - started < 1.0
        assert alpha.get(f"/containers/{second['id']}").status_code == 200


def test_no_session_is_made_when_memory_is_short(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """A reserve larger than the machine: every create is refused at once with the reason."""
    env = server_env(upstream, min_free_memory_mib=1 << 30, queue_wait_seconds=1.0)
    with ServerProcess(env, data_dir=tmp_path) as server, raw_client(server) as http:
        refused = http.post("/containers", json={"name": "big"})
        error = assert_envelope(refused, 503, type_="server_error")
        assert error["code"] == "server_overloaded"
        assert "MiB of memory available" in error["message"], error
        assert int(refused.headers["Retry-After"]) >= 1
        assert http.get("/containers").json()["data"] == []  # nothing half made is listed

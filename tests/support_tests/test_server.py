"""The ServerProcess helper's own logic (the server itself is exercised by the e2e tests)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import openai
import pytest

from tests.support.server import (
    UNREACHABLE_UPSTREAM,
    ServerProcess,
    ServerStartError,
    child_environment,
    free_port,
    health_status,
    port_is_free,
)


def test_free_port_is_bindable() -> None:
    ports = {free_port() for _ in range(5)}
    assert all(1024 <= port <= 65535 for port in ports)
    port = ports.pop()
    assert port_is_free(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free(port)


def test_command_and_addresses(tmp_path: Path) -> None:
    server = ServerProcess({"CODEINTERP_API_KEYS": "local"}, tmp_path / "data", port=8123)
    assert server.url == "http://127.0.0.1:8123"
    assert server.base_url == "http://127.0.0.1:8123/v1"
    assert server.command() == [
        sys.executable,
        "-m",
        "codeinterp.cli.main",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    assert server.log_path == tmp_path / "data" / "server.log"
    assert ServerProcess(None, tmp_path, extra_args=["--pool-size", "1"]).command()[-2:] == [
        "--pool-size",
        "1",
    ]
    assert ServerProcess({}, tmp_path).port != 8123  # a free port by default


def test_child_environment_scrubs_inherited_settings() -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "OPENAI_API_KEY": "sk-real-key",
        "OPENAI_BASE_URL": "https://api.openai.com/v1",
        "CODEINTERP_DATA_DIR": "/var/lib/codeinterp",
        "CODEINTERP_UPSTREAM_BASE_URL": "https://api.openai.com/v1",
    }
    child = child_environment({"CODEINTERP_API_KEYS": "local"}, base)
    assert child == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "PYTHONUNBUFFERED": "1",
        "CODEINTERP_UPSTREAM_BASE_URL": UNREACHABLE_UPSTREAM,
        "CODEINTERP_API_KEYS": "local",
    }
    given = {"CODEINTERP_UPSTREAM_BASE_URL": "http://127.0.0.1:5000/v1", "OPENAI_LOG": "debug"}
    child = child_environment(given, base)
    assert child["CODEINTERP_UPSTREAM_BASE_URL"] == "http://127.0.0.1:5000/v1"
    assert child["OPENAI_LOG"] == "debug"  # what a test passes explicitly is kept
    assert "OPENAI_API_KEY" not in child


async def test_clients_point_at_the_server(tmp_path: Path) -> None:
    server = ServerProcess({}, tmp_path, port=8124)
    with server.client() as client:
        assert str(client.base_url) == "http://127.0.0.1:8124/v1/"
        assert client.api_key == "local"
        assert client.max_retries == 0
    with server.client(api_key="other", max_retries=3) as client:
        assert client.api_key == "other" and client.max_retries == 3
    async with server.async_client(timeout=5.0) as async_client:
        assert isinstance(async_client, openai.AsyncOpenAI)
        assert str(async_client.base_url) == "http://127.0.0.1:8124/v1/"
        assert async_client.timeout == 5.0


def test_not_started_is_harmless(tmp_path: Path) -> None:
    server = ServerProcess({}, tmp_path / "data")
    assert not server.running
    assert server.pid is None and server.returncode is None
    assert server.stop() is None
    assert server.kill() is None
    assert server.logs() == ""
    assert "exited None" in repr(server)


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        server = ServerProcess({}, tmp_path / "data", port=busy)
        with pytest.raises(ServerStartError, match=f"port {busy} is in use"):
            server.start()
    assert server.pid is None  # nothing was launched


def test_health_status_reports_refusals() -> None:
    status = health_status(f"http://127.0.0.1:{free_port()}/health", timeout=1)
    assert isinstance(status, str) and "Connection" in status

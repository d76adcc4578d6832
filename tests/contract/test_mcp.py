"""The MCP door with the official `mcp` SDK's client: streamable HTTP at /mcp on the server,
and stdio (`codeinterp mcp`) on its own and against the server."""

from __future__ import annotations

import asyncio
import base64
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai
import pytest
from mcp import Client, ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.support.server import ServerProcess

TOOLS = [
    "download_file",
    "list_files",
    "reset",
    "restore_state",
    "run_python",
    "save_state",
    "upload_file",
]


def mcp_url(server: ServerProcess) -> str:
    return server.base_url.removesuffix("/v1") + "/mcp"


@asynccontextmanager
async def http_session(server: ServerProcess) -> AsyncIterator[ClientSession]:
    async with (
        streamable_http_client(mcp_url(server)) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        yield session


@asynccontextmanager
async def stdio_session(*args: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "codeinterp.cli.main", "mcp", *args]
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), timeout=120))


async def call(session: ClientSession, tool: str, **arguments: Any) -> list[Any]:
    result = await session.call_tool(tool, arguments)
    return list(result.content)


async def text_of(session: ClientSession, tool: str, **arguments: Any) -> str:
    content = await call(session, tool, **arguments)
    assert content and content[0].type == "text", content
    return str(content[0].text)


async def tool_suite(session: ClientSession) -> None:
    """The same checks for every transport: state, images, files, reset."""
    listed = await session.list_tools()
    assert sorted(t.name for t in listed.tools) == TOOLS
    schema = next(t for t in listed.tools if t.name == "run_python").input_schema
    assert schema["required"] == ["code"] and "timeout" in schema["properties"]

    assert await text_of(session, "run_python", code="x = 20\nprint('hi')\nx + 1") == "hi\n21"
    assert await text_of(session, "run_python", code="x * 2") == "40"  # state persists

    failed = await text_of(session, "run_python", code="1/0")
    assert failed.startswith("[status: error]") and "ZeroDivisionError" in failed
    slow = await text_of(session, "run_python", code="import time; time.sleep(5)", timeout=0.5)
    assert slow.startswith("[status: timeout]")

    chart = await call(
        session, "run_python", code="import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])"
    )
    assert [c.type for c in chart] == ["text", "image"]
    assert chart[1].mime_type == "image/png"
    assert base64.b64decode(chart[1].data).startswith(b"\x89PNG")

    assert await text_of(session, "upload_file", name="in.csv", text="a\n1\n2\n") == (
        "/mnt/data/in.csv"
    )
    raw = base64.b64encode(bytes(range(256))).decode()
    assert await text_of(session, "upload_file", name="bin/raw.dat", content_base64=raw) == (
        "/mnt/data/bin/raw.dat"
    )
    total = await text_of(
        session,
        "run_python",
        code="import pandas as pd\nint(pd.read_csv('/mnt/data/in.csv').a.sum())",
    )
    assert total == "3"
    await text_of(session, "run_python", code="open('/mnt/data/out.txt', 'w').write('made')")
    listing = await text_of(session, "list_files")
    assert "/mnt/data/in.csv\t6" in listing.splitlines()
    assert "/mnt/data/out.txt\t4" in listing.splitlines()
    assert await text_of(session, "download_file", name="out.txt") == "made"
    assert await text_of(session, "download_file", name="/mnt/data/in.csv") == "a\n1\n2\n"
    binary = await text_of(session, "download_file", name="bin/raw.dat")
    assert binary.splitlines()[1] == raw

    bad = await session.call_tool(
        "upload_file", {"name": "x", "text": "a", "content_base64": "YQ=="}
    )
    assert bad.is_error

    # save_state / restore_state: the variables and files come back; what came since is gone.
    saved = await text_of(session, "save_state")
    found = re.fullmatch(r"Saved the sandbox's state as (\S+)\.", saved)
    assert found, saved
    await text_of(session, "run_python", code="x = 'changed'\nopen('/mnt/data/later', 'w')")
    assert "Restored" in await text_of(session, "restore_state", snapshot_id=found[1])
    assert await text_of(session, "run_python", code="x * 2") == "40"
    assert await text_of(session, "download_file", name="out.txt") == "made"
    assert "/mnt/data/later" not in await text_of(session, "list_files")
    unknown = await session.call_tool("restore_state", {"snapshot_id": "../../etc/passwd"})
    assert unknown.is_error

    assert "reset" in await text_of(session, "reset")
    gone = await text_of(session, "run_python", code="x")
    assert "NameError" in gone
    assert await text_of(session, "list_files") == "(no files in /mnt/data)"


def test_tools_over_streamable_http(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with http_session(server) as session:
            await tool_suite(session)

    run(scenario)


def test_each_http_session_has_its_own_sandbox_and_closing_it_deletes_the_container(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    """Two MCP sessions do not share state; their containers are the server's (visible in the
    Containers API and recorded as sessions) and are deleted when the client ends its session."""

    def containers() -> set[str]:
        return {c.id for c in client.containers.list(limit=100) if c.name == "mcp"}

    before = containers()

    async def scenario() -> set[str]:
        async with http_session(server) as first, http_session(server) as second:
            await text_of(first, "run_python", code="who = 'first'")
            await text_of(second, "run_python", code="who = 'second'")
            assert await text_of(first, "run_python", code="who") == "'first'"
            assert await text_of(second, "run_python", code="who") == "'second'"
            return containers() - before

    during = run(scenario)
    assert len(during) == 2
    deadline = time.monotonic() + 5
    while containers() & during and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not containers() & during


async def client_text(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    content = list(result.content)
    assert content and content[0].type == "text", content
    return str(content[0].text)


@asynccontextmanager
async def default_client(server: ServerProcess, key: str | None) -> AsyncIterator[Client]:
    """The SDK's own `Client`, as its README shows it: `Client(url)` (with a key, the same
    streamable HTTP transport with the key's header, as its docs say to pass headers)."""
    if key is None:
        async with Client(mcp_url(server)) as client:
            yield client
        return
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http,
        Client(streamable_http_client(mcp_url(server), http_client=http)) as client,
    ):
        yield client


def mcp_containers(server: ServerProcess, key: str) -> set[str]:
    with server.client() as sdk:
        sdk.api_key = key
        return {c.id for c in sdk.containers.list(limit=100) if c.name == "mcp"}


def two_default_clients_are_apart(server: ServerProcess, key: str | None) -> None:
    """Two `Client`s with the same credentials: each its own variables and files, and each
    one's container is deleted when it closes."""
    listing_key = key or "local"
    before = mcp_containers(server, listing_key)

    async def scenario() -> tuple[set[str], set[str]]:
        async with default_client(server, key) as first:
            async with default_client(server, key) as second:
                await client_text(first, "run_python", code="who = 'first'")
                await client_text(first, "upload_file", name="first.txt", text="first's")
                await client_text(second, "run_python", code="who = 'second'")
                assert await client_text(first, "run_python", code="who") == "'first'"
                assert await client_text(second, "run_python", code="who") == "'second'"
                seen = await client_text(
                    second, "run_python", code="import os\nos.listdir('/mnt/data')"
                )
                assert "first.txt" not in seen, seen
                assert "first.txt" not in await client_text(second, "list_files")
                assert await client_text(first, "download_file", name="first.txt") == "first's"
                missing = await second.call_tool("download_file", {"name": "first.txt"})
                assert missing.is_error, missing
                both = mcp_containers(server, listing_key) - before
                assert len(both) == 2, both
            # `second` has closed: its container is gone, `first`'s is still there and usable.
            after_second = await wait_for_containers(server, listing_key, before, 1)
            assert await client_text(first, "run_python", code="who") == "'first'"
        return both, after_second

    both, after_second = run(scenario)
    assert after_second < both
    deadline = time.monotonic() + 10
    while mcp_containers(server, listing_key) & both and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not mcp_containers(server, listing_key) & both, "a closed client's container is left"


async def wait_for_containers(
    server: ServerProcess, key: str, before: set[str], count: int
) -> set[str]:
    deadline = time.monotonic() + 10
    while True:
        now = await asyncio.to_thread(mcp_containers, server, key)
        if len(now - before) == count or time.monotonic() > deadline:
            return now - before
        await asyncio.sleep(0.1)


def test_default_client_without_keys_gets_its_own_sandbox(server: ServerProcess) -> None:
    """No keys configured (any caller is welcome): two default clients still do not meet."""
    two_default_clients_are_apart(server, None)


def test_default_clients_with_the_same_key_get_their_own_sandboxes(tmp_path: Any) -> None:
    with ServerProcess({"CODEINTERP_API_KEYS": "shared-key"}, data_dir=tmp_path / "d") as keyed:
        two_default_clients_are_apart(keyed, "shared-key")


def test_a_client_pinned_to_the_sessionless_protocol_is_refused(server: ServerProcess) -> None:
    """Protocol 2026-07-28 has no MCP session (no mcp-session-id, no close): a client that
    insists on it is told which versions the server speaks, and no sandbox is made for it."""
    before = mcp_containers(server, "local")

    async def scenario() -> MCPError:
        async with Client(mcp_url(server), mode="2026-07-28") as pinned:
            with pytest.raises(MCPError) as refused:
                await pinned.call_tool("run_python", {"code": "1 + 1"})
            return refused.value

    refused = run(scenario)
    assert refused.error.code == -32022, refused.error
    assert "2025-11-25" in (refused.error.data or {}).get("supported", []), refused.error
    assert mcp_containers(server, "local") == before


def test_http_door_checks_api_keys(tmp_path: Any) -> None:
    """With keys configured, /mcp refuses a request without a valid key, in OpenAI's envelope."""
    with ServerProcess({"CODEINTERP_API_KEYS": "good-key"}, data_dir=tmp_path / "d") as keyed:
        response = httpx2.post(
            mcp_url(keyed),
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": "Bearer wrong-key", "Accept": "application/json"},
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"

        async def scenario() -> str:
            http = httpx2.AsyncClient(headers={"Authorization": "Bearer good-key"})
            async with (
                http,
                streamable_http_client(mcp_url(keyed), http_client=http) as streams,
                ClientSession(streams[0], streams[1]) as session,
            ):
                await session.initialize()
                return await text_of(session, "run_python", code="2 ** 8")

        assert run(scenario) == "256"


@pytest.mark.parametrize("where", ["local", "server"])
def test_tools_over_stdio(where: str, server: ServerProcess) -> None:
    """`codeinterp mcp`: a sandbox of its own, or (--server) a container on the server."""
    args = ("--server", server.base_url) if where == "server" else ()

    async def scenario() -> None:
        async with stdio_session(*args) as session:
            await tool_suite(session)

    run(scenario)

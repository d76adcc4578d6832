"""Bytes leaving a session are streamed in chunks and counted by apparent size, within budgets.

Sandboxed code can make a file that takes no room in its workspace yet reads as hundreds of MiB:
a sparse file (`truncate`) and hard links to it. Each way out is tested with that attack against
the real server: container file downloads (several at once, watching the server's peak memory),
the MCP `download_file` tool, and files a run cites, which are copied into File objects
(`codeinterp exec --out` is in tests/cli).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from mcp import Client, ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.contract.helpers import assert_sdk_error
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream, Text, python_call

pytestmark = pytest.mark.root

MiB = 1 << 20
FILE_LIMIT = 400 * MiB  # CODEINTERP_MAX_DOWNLOAD_BYTES for this module's server
SPARSE = 300 * MiB  # under it
OVER_FILE_LIMIT = 500 * MiB  # over it (and under the sandbox's own 512 MiB file size limit)
RUN_BUDGET = 48 * MiB  # CODEINTERP_MAX_OUTPUT_BYTES for this module's server
PART = 20 * MiB  # two parts fit in RUN_BUDGET, three do not
MCP_LIMIT = 16 * MiB  # the default CODEINTERP_MCP_MAX_FILE_BYTES
GROWTH_BOUND = 64 * MiB  # how much the server's peak memory may grow while serving them


def sparse(name: str, size: int, *links: str) -> str:
    """Code that makes a sparse file of `size` bytes (no blocks) and hard links to it."""
    return (
        "import os\n"
        f"with open('/mnt/data/{name}', 'wb') as f:\n"
        f"    f.truncate({size})\n"
        f"for link in {list(links)!r}:\n"
        f"    os.link('/mnt/data/{name}', '/mnt/data/' + link)\n"
        "st = os.statvfs('/mnt/data')\n"
        "print((st.f_blocks - st.f_bfree) * st.f_frsize)\n"
    )


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        "CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url,
        "CODEINTERP_UPSTREAM_API_KEY": "sk-upstream-test",
        "CODEINTERP_POOL_SIZE": "2",
        "CODEINTERP_POLL_AFTER_MS": "20",
        "CODEINTERP_MAX_DOWNLOAD_BYTES": str(FILE_LIMIT),
        "CODEINTERP_MAX_OUTPUT_BYTES": str(RUN_BUDGET),
    }
    with ServerProcess(env, data_dir=tmp_path_factory.mktemp("server")) as process:
        yield process


def peak_memory(server: ServerProcess) -> int:
    """The server process's peak resident memory (VmHWM), in bytes."""
    status = Path(f"/proc/{server.pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) * 1024


def execute(client: openai.OpenAI, container_id: str, code: str) -> dict[str, Any]:
    result: dict[str, Any] = client.post(
        f"/containers/{container_id}/execute", body={"code": code}, cast_to=object
    )
    assert result["status"] == "ok", result
    return result


def test_sparse_files_download_concurrently_without_growing_the_server(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    """Three names of one 300 MiB sparse file (two hard links), all downloaded at once: every
    byte arrives, and the server's peak memory grows by a few MiB, not by 900."""
    box = client.containers.create(name="sparse")
    try:
        made = execute(client, box.id, sparse("sparse.bin", SPARSE, "link-1.bin", "link-2.bin"))
        assert int(made["stdout"]) < 4 * MiB  # the three files use no room in the workspace
        files = {f.path: f for f in client.containers.files.list(box.id)}
        names = [f"/mnt/data/{n}" for n in ("sparse.bin", "link-1.bin", "link-2.bin")]
        assert [files[n].bytes for n in names] == [SPARSE] * 3
        before = peak_memory(server)

        def download(file_id: str) -> int:
            received = 0
            with server.client() as sdk:
                content = sdk.containers.files.content.with_streaming_response
                with content.retrieve(file_id, container_id=box.id) as response:
                    assert response.headers["content-length"] == str(SPARSE)
                    for chunk in response.iter_bytes(MiB):
                        assert chunk.count(0) == len(chunk)
                        received += len(chunk)
            return received

        with ThreadPoolExecutor(3) as pool:
            received = list(pool.map(download, [files[n].id for n in names]))
        assert received == [SPARSE] * 3
        grown = peak_memory(server) - before
        assert grown < GROWTH_BOUND, f"the server's peak memory grew by {grown // MiB} MiB"
    finally:
        client.containers.delete(box.id)


def test_a_file_over_the_download_limit_is_refused_with_413(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    """A sparse file larger than the per-file limit (by apparent size) is a 413 envelope naming
    the limit; the server reads none of it."""
    box = client.containers.create(name="too big")
    try:
        execute(client, box.id, sparse("huge.bin", OVER_FILE_LIMIT))
        (huge,) = client.containers.files.list(box.id).data
        before = peak_memory(server)
        with pytest.raises(openai.APIStatusError) as caught:
            client.containers.files.content.retrieve(huge.id, container_id=box.id)
        error = assert_sdk_error(caught.value, 413)
        assert "huge.bin" in error["message"] and str(FILE_LIMIT) in error["message"], error
        assert peak_memory(server) - before < GROWTH_BOUND
        # The container is fine and a small file still comes out whole.
        execute(client, box.id, "open('/mnt/data/small.txt', 'w').write('still fine')")
        small = [f for f in client.containers.files.list(box.id) if f.path.endswith("small.txt")]
        data = client.containers.files.content.retrieve(small[0].id, container_id=box.id)
        assert data.read() == b"still fine"
    finally:
        client.containers.delete(box.id)


def mcp_url(server: ServerProcess) -> str:
    return server.url + "/mcp"


@asynccontextmanager
async def stdio_session() -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "codeinterp.cli.main", "mcp"]
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@pytest.mark.parametrize("door", ["http", "stdio"])
def test_mcp_download_of_a_sparse_file_is_refused_past_its_limit(
    server: ServerProcess, door: str
) -> None:
    """download_file returns a file inline (as text or base64), so it has a limit of its own;
    a sparse file past it is a tool error that says so, and the server reads none of it."""

    async def scenario() -> tuple[Any, Any, int]:
        opened: Any = Client(mcp_url(server)) if door == "http" else stdio_session()
        async with opened as session:
            await session.call_tool("run_python", {"code": sparse("big.bin", 64 * MiB)})
            await session.call_tool(
                "run_python", {"code": "open('/mnt/data/ok.txt', 'w').write('ok')"}
            )
            before = peak_memory(server)
            refused = await session.call_tool("download_file", {"name": "big.bin"})
            grown = peak_memory(server) - before
            fine = await session.call_tool("download_file", {"name": "ok.txt"})
            return refused, fine, grown

    refused, fine, grown = asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    assert refused.is_error, refused
    message = refused.content[0].text
    assert "big.bin" in message and str(MCP_LIMIT) in message, message
    if door == "http":
        assert grown < GROWTH_BOUND, f"the server's peak memory grew by {grown // MiB} MiB"
    assert not fine.is_error and fine.content[0].text == "ok"


def test_cited_files_are_copied_within_the_per_file_and_per_run_budgets(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """A run's cited sandbox files become File objects, streamed: one over the per-file limit is
    left as plain text, and once the run's budget is spent further citations are too."""
    code = sparse("huge.bin", OVER_FILE_LIMIT) + sparse(
        "part-1.bin", PART, "part-2.bin", "part-3.bin"
    )
    upstream.script = [
        python_call(code),
        Text(
            "Files: sandbox:/mnt/data/huge.bin, sandbox:/mnt/data/part-1.bin, "
            "sandbox:/mnt/data/part-2.bin and sandbox:/mnt/data/part-3.bin."
        ),
    ]
    assistant = client.beta.assistants.create(
        model="gpt-test", tools=[{"type": "code_interpreter"}]
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Make files."}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20
    )
    assert run.status == "completed", run.last_error
    (message,) = [
        m for m in client.beta.threads.messages.list(thread_id=thread.id) if m.role == "assistant"
    ]
    (text,) = [c.text for c in message.content if c.type == "text"]
    copied = {a.text: a.file_path.file_id for a in text.annotations if a.type == "file_path"}
    assert sorted(copied) == ["sandbox:/mnt/data/part-1.bin", "sandbox:/mnt/data/part-2.bin"]
    for file_id in copied.values():
        assert client.files.retrieve(file_id).bytes == PART
    names = [f.filename for f in client.files.list(purpose="assistants_output")]
    assert "huge.bin" not in names and "part-3.bin" not in names

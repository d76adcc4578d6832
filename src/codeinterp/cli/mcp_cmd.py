"""`codeinterp mcp`: the MCP tools over stdio, for Claude Desktop, IDE agents and other MCP
clients (`{"command": "codeinterp", "args": ["mcp"]}`).

On its own it runs an engine in this process (one sandbox session for the connection); with
--server URL it uses a container on that server instead, sharing its limits and usage records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx2

from codeinterp.client import APIError, AsyncClient, AsyncContainer
from codeinterp.config import DEFAULT_MCP_MAX_FILE_BYTES, Settings
from codeinterp.errors import InvalidRequest, NotFound, SandboxError
from codeinterp.ids import new_id
from codeinterp.sandbox import Sandbox, SandboxConfig, SandboxPolicy, Session
from codeinterp.sandbox.policy import MEMORY_TIERS
from codeinterp.sessions import ManagedSession, execution
from codeinterp.telemetry import tracing

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "mcp",
        help="serve the sandbox as MCP tools over stdio",
        description="Serve run_python, upload_file, download_file, list_files and reset as MCP "
        "tools over stdio: in a sandbox of this process, or in a container on --server.",
    )
    parser.add_argument("--server", metavar="URL", help="use a container on this server")
    parser.add_argument("--api-key", help="the server's API key (with --server)")
    parser.add_argument("--memory", choices=list(MEMORY_TIERS), default="1g", help="memory limit")
    parser.add_argument(
        "--max-file-bytes",
        type=int,
        default=DEFAULT_MCP_MAX_FILE_BYTES,
        metavar="N",
        help="the largest file download_file returns, by apparent size (default 16 MiB)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from codeinterp.mcp_tools import build_server  # the mcp SDK, only for this command

    if args.max_file_bytes <= 0:
        raise InvalidRequest("--max-file-bytes must be positive")
    settings = Settings()
    tracer_provider = tracing.configure(settings.trace_content, settings.trace_content_max_chars)
    backend: LocalBackend | ServerBackend
    if args.server:
        backend = ServerBackend(args.server, args.api_key, args.memory)
    else:
        backend = LocalBackend(args.memory)

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        # Inside the stdio transport: by now fd 1 is diverted, so the engine's processes can
        # never write on the protocol's stream.
        await backend.start()
        try:
            yield
        finally:
            await backend.close()

    server = build_server(backend, lifespan=lifespan, max_file_bytes=args.max_file_bytes)
    try:
        asyncio.run(server.run_stdio_async())
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()
    return 0


class LocalBackend:
    """One engine in this process; a session per MCP connection."""

    def __init__(self, memory: str) -> None:
        self.policy = SandboxPolicy.for_memory_tier(memory)
        self.sandbox: Sandbox | None = None
        self.sessions: dict[str, ManagedSession] = {}
        # save_state's snapshots, for as long as this process runs: id -> path
        self.snapshots = tempfile.TemporaryDirectory(prefix="codeinterp-mcp-")

    async def start(self) -> None:
        self.sandbox = await Sandbox.start(SandboxConfig(policy=self.policy, pool_size=1))

    async def close(self) -> None:
        if self.sandbox is not None:
            await self.sandbox.close()
        self.snapshots.cleanup()

    async def _managed(self, key: str, restore_from: str | None = None) -> ManagedSession:
        managed = self.sessions.get(key)
        if managed is None or managed.session.closed or restore_from is not None:
            if self.sandbox is None:
                raise SandboxError("the sandbox is not running")
            session = await self.sandbox.create_session(restore_from=restore_from)
            if managed is not None:
                await managed.session.close()
            managed = self.sessions[key] = ManagedSession(
                new_id("session"), "local", "mcp", key, session
            )
        return managed

    async def save_state(self, key: str) -> tuple[str, dict[str, str]]:
        snapshot_id = new_id("snapshot")
        info = await (await self._session(key)).snapshot(self._snapshot_path(snapshot_id))
        return snapshot_id, info.skipped

    async def restore_state(self, key: str, snapshot_id: str) -> None:
        path = self._snapshot_path(snapshot_id)
        if not os.path.isfile(path):
            raise NotFound(f"No saved state {snapshot_id!r} in this MCP server.")
        await self._managed(key, restore_from=path)

    def _snapshot_path(self, snapshot_id: str) -> str:
        if not snapshot_id.replace("_", "").replace("-", "").isalnum():
            raise NotFound(f"No saved state {snapshot_id!r} in this MCP server.")
        return os.path.join(self.snapshots.name, f"{snapshot_id}.snapshot")

    async def _session(self, key: str) -> Session:
        return (await self._managed(key)).session

    async def run(self, key: str, code: str, timeout: float | None) -> dict[str, Any]:
        # The one execution path of every door; images stay in the result, returned inline.
        return await execution.run(await self._managed(key), code, timeout or 120.0, _inline)

    async def upload(self, key: str, name: str, data: bytes) -> str:
        return await (await self._session(key)).upload(name, data)

    async def download(self, key: str, name: str, max_bytes: int) -> bytes:
        return await (await self._session(key)).download(name, max_bytes)

    async def list_files(self, key: str) -> list[dict[str, Any]]:
        listing = await (await self._session(key)).list_files()
        return [{"path": f"/mnt/data/{f.name}", "bytes": f.size} for f in listing]

    async def reset(self, key: str) -> None:
        managed = self.sessions.pop(key, None)
        if managed is not None:
            await managed.session.close()


async def _inline(extension: str, data: bytes) -> None:
    return None


class ServerBackend:
    """A container on a codeinterp server per MCP connection, through the Python client."""

    def __init__(self, url: str, api_key: str | None, memory: str) -> None:
        self.client = AsyncClient(url, api_key=api_key)
        self.memory = memory
        self.boxes: dict[str, AsyncContainer] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        for box in self.boxes.values():
            with contextlib.suppress(APIError, httpx2.HTTPError):  # gone: it will expire
                await box.delete()
        await self.client.close()

    async def _box(self, key: str) -> AsyncContainer:
        box = self.boxes.get(key)
        if box is not None:
            try:  # a retrieve refreshes its expiry, or shows that it is gone
                if (await self.client.attach(box.id)).info.get("status") == "running":
                    return box
            except APIError as exc:
                if exc.status != 404:
                    raise
        box = self.boxes[key] = await self.client.container(memory=self.memory, name="mcp")
        return box

    async def run(self, key: str, code: str, timeout: float | None) -> dict[str, Any]:
        return (await (await self._box(key)).run(code, timeout)).raw

    async def upload(self, key: str, name: str, data: bytes) -> str:
        return str((await (await self._box(key)).upload(data, name))["path"])

    async def download(self, key: str, name: str, max_bytes: int) -> bytes:
        return await (await self._box(key)).download(name, max_bytes)

    async def list_files(self, key: str) -> list[dict[str, Any]]:
        return await (await self._box(key)).files()

    async def save_state(self, key: str) -> tuple[str, dict[str, str]]:
        saved = await (await self._box(key)).snapshot()
        return str(saved["id"]), dict(saved.get("skipped", {}))

    async def restore_state(self, key: str, snapshot_id: str) -> None:
        box = await self.client.container(memory=self.memory, name="mcp", snapshot_id=snapshot_id)
        earlier, self.boxes[key] = self.boxes.get(key), box
        if earlier is not None:
            with contextlib.suppress(APIError):
                await earlier.delete()

    async def reset(self, key: str) -> None:
        box = self.boxes.pop(key, None)
        if box is not None:
            with contextlib.suppress(APIError):  # already expired or deleted
                await box.delete()

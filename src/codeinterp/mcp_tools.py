"""The MCP door: `run_python`, `upload_file`, `download_file`, `list_files` and `reset`, with
the official `mcp` SDK, over stdio (`codeinterp mcp`) and streamable HTTP (`/mcp` on the server).

Each MCP connection gets its own sandbox session, kept between calls until `reset` or until it
expires. Where the session comes from is a `Backend`:

- `ContainerBackend`: a container of the server's containers service (the HTTP door, and the
  stdio door with `--server`, through the Python client), with the server's limits and usage
  records;
- `LocalBackend`: a session of an engine in this process (the stdio door on its own).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ImageContent, TextContent

from codeinterp.agent import python_tool
from codeinterp.client import APIError
from codeinterp.config import DEFAULT_MCP_MAX_FILE_BYTES, DEFAULT_PROJECT
from codeinterp.errors import CodeInterpError, ContainerExpired, InvalidRequest, NotFound
from codeinterp.protocol.containers import ContainerCreate
from codeinterp.services.containers import ContainersService
from codeinterp.sessions.execution import IMAGE_TYPES

log = logging.getLogger("codeinterp.mcp")

INSTRUCTIONS = (
    "A stateful Python sandbox (IPython). run_python keeps variables, imports and files between "
    "calls; files live in /mnt/data; there is no network access; numpy, pandas, matplotlib, "
    "scipy, scikit-learn, seaborn and sympy are installed. Figures come back as images."
)
Content = TextContent | ImageContent


class Backend(Protocol):
    """Sessions keyed by MCP connection. Results use the execute API's JSON shape."""

    async def run(self, key: str, code: str, timeout: float | None) -> dict[str, Any]: ...
    async def upload(self, key: str, name: str, data: bytes) -> str: ...
    async def download(self, key: str, name: str, max_bytes: int) -> bytes: ...
    async def list_files(self, key: str) -> list[dict[str, Any]]: ...
    async def reset(self, key: str) -> None: ...
    async def save_state(self, key: str) -> tuple[str, dict[str, str]]: ...
    async def restore_state(self, key: str, snapshot_id: str) -> None: ...


def build_server(
    backend: Backend,
    project_of: Callable[[Mapping[str, str] | None], str] | None = None,
    lifespan: Callable[[MCPServer[Any]], AbstractAsyncContextManager[Any]] | None = None,
    max_file_bytes: int = DEFAULT_MCP_MAX_FILE_BYTES,
) -> MCPServer[Any]:
    """The MCP server over `backend`. `project_of` names the caller's project from the request
    headers (the HTTP door's API keys); a backend's keys are "<project>|<connection>".
    `lifespan` runs around serving (the stdio door starts its engine there). `download_file`
    returns a file inline, whole, so only files up to `max_file_bytes` (apparent size)."""
    server: MCPServer[Any] = MCPServer(
        name="codeinterp", instructions=INSTRUCTIONS, lifespan=lifespan
    )

    def connection_key(ctx: Context[Any, Any]) -> str:
        """The caller's project and connection. Over stdio there is one connection per process;
        over HTTP it is the MCP session (mcp-session-id). A request without a session is
        refused: nothing would tell its caller's sandbox from another's (two clients with one
        key, or any two when no keys are configured)."""
        headers = ctx.headers
        if headers is None:
            return f"{DEFAULT_PROJECT}|stdio"
        project = project_of(headers) if project_of else DEFAULT_PROJECT
        session = headers.get("mcp-session-id")
        if not session:
            raise InvalidRequest(
                "this server keeps a sandbox per MCP session: connect with the initialize "
                "handshake, which gives the session an mcp-session-id"
            )
        return f"{project}|http:{session}"

    @server.tool()
    async def run_python(
        code: str, ctx: Context[Any, Any], timeout: float | None = None
    ) -> list[Content]:
        """Run Python code in this conversation's sandbox and return its output: printed text,
        the value of the last expression, errors with their traceback, and figures as images.
        State persists between calls. `timeout` is in seconds (default 120)."""
        with _anticipated():
            result = await backend.run(connection_key(ctx), code, timeout)
        images = [_image(r) for r in result["results"]]
        shown = [image for image in images if image is not None]
        text = python_tool.result_for_model(result, len(shown))
        status = result["status"]
        header = "" if status == "ok" else f"[status: {status}]\n"
        return [TextContent(type="text", text=header + text), *shown]

    @server.tool()
    async def upload_file(
        name: str,
        ctx: Context[Any, Any],
        text: str | None = None,
        content_base64: str | None = None,
    ) -> str:
        """Put a file in the sandbox at /mnt/data/<name>: give its `text`, or its bytes as
        `content_base64`. Returns the path the code sees."""
        if (text is None) == (content_base64 is None):
            raise ValueError("give exactly one of text or content_base64")
        if text is not None:
            data = text.encode()
        else:
            try:
                data = base64.b64decode(content_base64 or "", validate=True)
            except binascii.Error:
                raise ValueError("content_base64 is not valid base64") from None
        with _anticipated():
            return await backend.upload(connection_key(ctx), name, data)

    @server.tool()
    async def download_file(name: str, ctx: Context[Any, Any]) -> list[Content]:
        """Read a file from the sandbox (a path relative to /mnt/data, or absolute): an image
        comes back as an image, UTF-8 text as text, anything else as base64."""
        with _anticipated():
            data = await backend.download(connection_key(ctx), name, max_file_bytes)
        mime = _image_type(data)
        if mime is not None:
            encoded = base64.b64encode(data).decode()
            return [ImageContent(type="image", data=encoded, mime_type=mime)]
        try:
            return [TextContent(type="text", text=data.decode("utf-8"))]
        except UnicodeDecodeError:
            encoded = base64.b64encode(data).decode()
            return [TextContent(type="text", text=f"[{len(data)} bytes, base64]\n{encoded}")]

    @server.tool()
    async def list_files(ctx: Context[Any, Any]) -> str:
        """The files in /mnt/data, one per line: path and size in bytes."""
        with _anticipated():
            files = await backend.list_files(connection_key(ctx))
        if not files:
            return "(no files in /mnt/data)"
        return "\n".join(f"{f['path']}\t{f['bytes']}" for f in files)

    @server.tool()
    async def reset(ctx: Context[Any, Any]) -> str:
        """Start over with a fresh sandbox: variables, imports and files are gone."""
        with _anticipated():
            await backend.reset(connection_key(ctx))
        return "The sandbox was reset: a fresh Python session with an empty /mnt/data."

    @server.tool()
    async def save_state(ctx: Context[Any, Any]) -> str:
        """Save the sandbox's state: variables, functions, imports, the files in /mnt/data and
        the history. Returns an id for restore_state, usable later in this conversation or in
        another. Open files, sockets, threads and generators cannot be saved: they are named."""
        with _anticipated():
            snapshot_id, skipped = await backend.save_state(connection_key(ctx))
        text = f"Saved the sandbox's state as {snapshot_id}."
        if skipped:
            names = ", ".join(f"{name} ({why})" for name, why in skipped.items())
            text += f" Not saved (make them again after a restore): {names}."
        return text

    @server.tool()
    async def restore_state(snapshot_id: str, ctx: Context[Any, Any]) -> str:
        """Replace the sandbox with a saved state (an id from save_state): its variables and
        files come back, and what the sandbox held until now is gone."""
        with _anticipated():
            await backend.restore_state(connection_key(ctx), snapshot_id)
        return f"Restored the sandbox from {snapshot_id}."

    return server


@contextlib.contextmanager
def _anticipated() -> Iterator[None]:
    """Our own errors (a missing file, a file over the limit, a full workspace, a server's
    refusal) are anticipated: the model reads their message, not just "Error executing tool"."""
    try:
        yield
    except (CodeInterpError, APIError) as exc:
        raise ToolError(str(exc)) from None


def _image(result: dict[str, Any]) -> ImageContent | None:
    data = result.get("data", {})
    for mime in IMAGE_TYPES:
        if isinstance(data.get(mime), str):
            return ImageContent(type="image", data=data[mime], mime_type=mime)
    return None


def _image_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


class ContainerBackend:
    """Each MCP connection's sandbox is a container of the server (memory tier 1g, the default
    idle expiry); its usage is recorded like any other container's."""

    def __init__(self, containers: Callable[[], ContainersService]) -> None:
        self._service = containers  # looked up when used: the server makes it at start-up
        self._containers: dict[str, str] = {}  # connection key -> container id
        self._locks: dict[str, asyncio.Lock] = {}

    async def _container(self, key: str) -> tuple[ContainersService, str, str]:
        async with self._locks.setdefault(key, asyncio.Lock()):
            return await self._container_locked(key)

    async def _container_locked(self, key: str) -> tuple[ContainersService, str, str]:
        service = self._service()
        project = key.split("|", 1)[0]
        known = self._containers.get(key)
        if known is not None:
            try:
                await service.ensure_usable(project, known)
                return service, project, known
            except (ContainerExpired, NotFound):
                log.info("MCP connection %s: container %s is gone; making a new one", key, known)
        created = await service.create(project, ContainerCreate(name="mcp"))
        self._containers[key] = created["id"]
        return service, project, str(created["id"])

    async def run(self, key: str, code: str, timeout: float | None) -> dict[str, Any]:
        service, project, container_id = await self._container(key)
        return await service.run(project, container_id, code, timeout)

    async def upload(self, key: str, name: str, data: bytes) -> str:
        service, project, container_id = await self._container(key)
        return str((await service.add_file(project, container_id, name, data))["path"])

    async def download(self, key: str, name: str, max_bytes: int) -> bytes:
        service, project, container_id = await self._container(key)
        path = name if name.startswith("/mnt/data/") else f"/mnt/data/{name.lstrip('/')}"
        for entry in await self.list_files(key):
            if entry["path"] == path:
                _, reader = await service.open_file_content(
                    project, container_id, entry["id"], max_bytes
                )
                return b"".join([chunk async for chunk in reader.chunks()])
        raise NotFound(f"No file {path} in the sandbox.")

    async def list_files(self, key: str) -> list[dict[str, Any]]:
        service, project, container_id = await self._container(key)
        return await service.all_files(project, container_id)

    async def save_state(self, key: str) -> tuple[str, dict[str, str]]:
        service, project, container_id = await self._container(key)
        saved = await service.snapshot(project, container_id)
        return str(saved["id"]), dict(saved["skipped"])

    async def restore_state(self, key: str, snapshot_id: str) -> None:
        async with self._locks.setdefault(key, asyncio.Lock()):
            service = self._service()
            project = key.split("|", 1)[0]
            body = ContainerCreate(name="mcp", snapshot_id=snapshot_id)
            created = await service.create(project, body)
            earlier = self._containers.get(key)
            self._containers[key] = str(created["id"])
        if earlier is not None:
            with contextlib.suppress(NotFound):
                await service.delete(project, earlier)

    async def reset(self, key: str) -> None:
        container_id = self._containers.pop(key, None)
        self._locks.pop(key, None)
        if container_id is not None:
            project = key.split("|", 1)[0]
            with contextlib.suppress(NotFound):
                await self._service().delete(project, container_id)

"""/mcp: the MCP tools over streamable HTTP, on the server's containers and API keys.

Each MCP session (the `initialize` handshake, then `mcp-session-id` on every request, and a
DELETE when the client closes) gets a container of its own, deleted with the session. Protocol
2026-07-28 has no session: each request stands alone, with nothing that tells two clients apart
or says that one has gone. A sandbox that keeps state between calls cannot be served that way, so
such requests are refused with the protocol's own "unsupported protocol version" error, naming
the versions served here; the SDK's default client then falls back to the handshake.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from mcp.server.mcpserver import MCPServer
from mcp_types import UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from codeinterp.config import Settings
from codeinterp.errors import InvalidRequest, Unauthorized
from codeinterp.mcp_tools import ContainerBackend, build_server

from .deps import project_for
from .errors import error_response
from .middleware import replay_body

PATH = "/mcp"
VERSION_HEADER = "mcp-protocol-version"


class _Endpoint:
    """The MCP transport behind the server's API key check (an ASGI app, so Starlette hands it
    the raw request)."""

    def __init__(
        self, server: MCPServer[Any], keys: dict[str, str], backend: ContainerBackend
    ) -> None:
        self.server = server
        self.keys = keys
        self.backend = backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            project = project_for(self.keys, headers.get("authorization", ""))
        except Unauthorized as exc:
            await error_response(exc)(scope, receive, send)
            return
        message: Any = None
        if scope["method"] == "POST":
            body = await _read_body(receive)
            try:
                message = json.loads(body)
            except (ValueError, RecursionError):
                bad = InvalidRequest("We could not parse the JSON body of your request.")
                await error_response(bad)(scope, receive, send)
                return
            receive = replay_body(body, receive)
        version = headers.get(VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await _sessionless_refusal(version, message)(scope, receive, send)
            return
        await self.server.session_manager.handle_request(scope, receive, send)
        session = headers.get("mcp-session-id")
        if scope["method"] == "DELETE" and session:
            # The client ended its MCP session: its container goes with it.
            await self.backend.reset(f"{project}|http:{session}")


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _sessionless_refusal(version: str, message: Any) -> JSONResponse:
    """The JSON-RPC error for a request at a protocol version without MCP sessions (HTTP 400,
    as the protocol maps it), naming the versions served here."""
    request_id = message.get("id") if isinstance(message, dict) else None
    error = {
        "code": UNSUPPORTED_PROTOCOL_VERSION,
        "message": "Unsupported protocol version: this server keeps a sandbox per MCP session "
        "and so speaks only the versions with the initialize handshake",
        "data": {"supported": list(HANDSHAKE_PROTOCOL_VERSIONS), "requested": version},
    }
    return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error}, status_code=400)


def add_mcp(app: FastAPI, settings: Settings) -> MCPServer[Any]:
    """Serve the MCP tools at /mcp; the caller runs `server.session_manager.run()` for the
    app's lifetime."""
    keys = settings.key_projects()
    backend = ContainerBackend(lambda: app.state.services.containers)
    server = build_server(
        backend,
        lambda headers: project_for(keys, (headers or {}).get("authorization", "")),
        max_file_bytes=settings.mcp_max_file_bytes,
    )
    server.streamable_http_app(streamable_http_path=PATH, host=settings.host)  # its manager
    app.router.routes.append(
        Route(PATH, endpoint=_Endpoint(server, keys, backend), methods=["GET", "POST", "DELETE"])
    )
    return server

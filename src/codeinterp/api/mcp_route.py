"""/mcp: the MCP tools over streamable HTTP, on the server's containers and API keys."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from codeinterp.config import Settings
from codeinterp.errors import Unauthorized
from codeinterp.mcp_tools import ContainerBackend, build_server

from .deps import project_for
from .errors import error_response

PATH = "/mcp"


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
        await self.server.session_manager.handle_request(scope, receive, send)
        session = headers.get("mcp-session-id")
        if scope["method"] == "DELETE" and session:
            # The client ended its MCP session: its container goes with it.
            await self.backend.reset(f"{project}|http:{session}")


def add_mcp(app: FastAPI, settings: Settings) -> MCPServer[Any]:
    """Serve the MCP tools at /mcp; the caller runs `server.session_manager.run()` for the
    app's lifetime."""
    keys = settings.key_projects()
    backend = ContainerBackend(lambda: app.state.services.containers)
    server = build_server(
        backend, lambda headers: project_for(keys, (headers or {}).get("authorization", ""))
    )
    server.streamable_http_app(streamable_http_path=PATH, host=settings.host)  # its manager
    app.router.routes.append(
        Route(PATH, endpoint=_Endpoint(server, keys, backend), methods=["GET", "POST", "DELETE"])
    )
    return server

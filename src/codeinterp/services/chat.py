"""Chat Completions with the code interpreter: the request's container (named, or made for it),
and the loop that answers it (agent/chat.py)."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx2
from pydantic import ValidationError

from codeinterp.agent.chat import ChatLoop, check_request, code_interpreter_tool
from codeinterp.agent.upstream import Upstream
from codeinterp.config import Settings
from codeinterp.errors import CodeInterpError, InvalidRequest
from codeinterp.protocol.containers import ContainerCreate

from .containers import ContainersService


class ChatService:
    def __init__(
        self, containers: ContainersService, upstream: Upstream, settings: Settings
    ) -> None:
        self.containers = containers
        self.upstream = upstream
        self.settings = settings

    async def start(
        self, project: str, body: dict[str, Any], header: str | None
    ) -> tuple[ChatLoop, str, bool]:
        """Check the request and open its container: the loop to run, the container's id, and
        whether it was made for this request (see `discard`)."""
        check_request(body)
        container_id, created = await self._open_container(project, body, header)
        try:
            paths = [f["path"] for f in await self.containers.all_files(project, container_id)]
        except BaseException:
            await self.discard(project, container_id, created)
            raise

        async def run_code(code: str, call_id: str) -> dict[str, Any]:
            return await self.containers.run(
                project, container_id, code, self.settings.execution_timeout, call_id=call_id
            )

        loop = ChatLoop(self.upstream, self.settings, body, run_code, paths, container_id, project)
        return loop, container_id, created

    async def relay(self, body: dict[str, Any]) -> httpx2.Response:
        """A request without the code interpreter, sent on to the model as it came (the model
        name mapped); the response is open for streaming and the caller closes it."""
        return await self.upstream.relay("/chat/completions", body)

    async def discard(self, project: str, container_id: str, created: bool) -> None:
        """A container made for a request that failed: the client never learns its id."""
        if created:
            with contextlib.suppress(CodeInterpError):
                await self.containers.delete(project, container_id)

    async def _open_container(
        self, project: str, body: dict[str, Any], header: str | None
    ) -> tuple[str, bool]:
        """The container named by the header or the tool, or a new one (auto); whether it is
        new."""
        tool = code_interpreter_tool(body) or {}
        given = tool.get("container")
        named = header or (given if isinstance(given, str) else None)
        if named:
            await self.containers.ensure_usable(project, named)
            return named, False
        auto: dict[str, Any] = given if isinstance(given, dict) else {}
        try:
            create = ContainerCreate.model_validate(
                {
                    "name": "chat",
                    "file_ids": auto.get("file_ids") or [],
                    "memory_limit": auto.get("memory_limit"),
                }
            )
        except ValidationError as exc:
            raise InvalidRequest(
                f"Invalid code_interpreter container: {exc.errors()[0]['msg']}.", param="tools"
            ) from None
        created = await self.containers.create(project, create)
        return str(created["id"]), True

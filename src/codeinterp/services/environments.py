"""Environments (an extension): the package sets an operator built with `codeinterp env build`,
listed with their packages. They are the server's, shared by every project."""

from __future__ import annotations

import asyncio
from typing import Any

from codeinterp.errors import InvalidRequest, NotFound
from codeinterp.sandbox import environments
from codeinterp.sandbox.environments import Environment

from .common import dict_envelope


def environment_to_wire(environment: Environment) -> dict[str, Any]:
    return {"id": environment.id, "object": "environment", **environment.to_json()}


class EnvironmentsService:
    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir

    async def list_environments(self) -> dict[str, Any]:
        """Every version of every environment, by name then version (they are few: no pages)."""
        found = await asyncio.to_thread(environments.list_all, self.data_dir)
        return dict_envelope([environment_to_wire(e) for e in found], False)

    async def retrieve(self, reference: str) -> dict[str, Any]:
        """NAME (its newest version) or NAME@VERSION; NotFound for anything else."""
        try:
            found = await asyncio.to_thread(environments.resolve, self.data_dir, reference)
        except InvalidRequest:
            raise NotFound(f"No environment found with id '{reference}'.") from None
        return environment_to_wire(found)

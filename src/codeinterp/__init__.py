"""codeinterp: the open, self-hosted Code Interpreter."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_CLIENT_NAMES = ("APIError", "AsyncClient", "AsyncContainer", "Client", "Container", "RunResult")


def __getattr__(name: str) -> Any:
    # The HTTP client is imported on first use: the sandbox imports this package too.
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'codeinterp' has no attribute {name!r}")

"""A blocking wrapper over the async engine: an event loop on a private thread runs every call.

Each method submits the async one and waits for it, so the behaviour is written once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from .engine import Sandbox, SandboxConfig
from .events import Event, Execution
from .policy import SandboxPolicy
from .session import Session, SessionStats
from .workspace import WorkspaceFile

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="codeinterp", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class SyncSession:
    def __init__(self, session: Session, portal: _LoopThread) -> None:
        self._session = session
        self._portal = portal

    @property
    def id(self) -> str:
        return self._session.id

    def run(self, code: str, timeout: float | None = 60.0) -> Execution:
        return self._portal.run(self._session.run(code, timeout))

    def execute(self, code: str, timeout: float | None = 60.0) -> Iterator[Event]:
        """Events as they happen (each is fetched from the loop thread on demand)."""
        agen = self._session.execute(code, timeout)

        async def next_event() -> Event:
            return await agen.__anext__()

        try:
            while True:
                try:
                    yield self._portal.run(next_event())
                except StopAsyncIteration:
                    return
        finally:
            self._portal.run(agen.aclose())

    def interrupt(self) -> bool:
        """Whether an execution was running (see Session.interrupt)."""
        return asyncio.run_coroutine_threadsafe(
            self._session.interrupt(), self._portal.loop
        ).result()

    def upload(self, name: str, data: bytes) -> str:
        return self._portal.run(self._session.upload(name, data))

    def download(self, name: str) -> bytes:
        return self._portal.run(self._session.download(name))

    def list_files(self) -> list[WorkspaceFile]:
        return self._portal.run(self._session.list_files())

    def delete_file(self, name: str) -> None:
        self._portal.run(self._session.delete_file(name))

    def stats(self) -> SessionStats:
        return self._session.stats()

    def close(self) -> None:
        self._portal.run(self._session.close())

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncSandbox:
    """`Sandbox` for synchronous code: `with SyncSandbox() as sb: sb.create_session().run(...)`."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._portal = _LoopThread()
        try:
            self._sandbox = self._portal.run(Sandbox.start(config))
        except BaseException:
            self._portal.stop()
            raise

    @property
    def sandbox(self) -> Sandbox:
        return self._sandbox

    def create_session(self, policy: SandboxPolicy | None = None) -> SyncSession:
        return SyncSession(self._portal.run(self._sandbox.create_session(policy)), self._portal)

    def close(self) -> None:
        try:
            self._portal.run(self._sandbox.close())
        finally:
            self._portal.stop()

    def __enter__(self) -> SyncSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

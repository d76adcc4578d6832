"""Admission: how many of something may run at once, and what a caller past that gets.

A caller waits its turn in arrival order (asyncio's semaphore is first come, first served) for
at most `wait` seconds; then it gets `Overloaded`, a 503 with Retry-After, instead of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

from codeinterp.errors import Overloaded


class Admission:
    def __init__(self, limit: int, wait: float, what: str) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.wait = wait
        self.what = what  # "sessions", "tasks": named in the error
        self._slots = asyncio.Semaphore(limit)
        self.waiting = 0  # callers in the queue
        self.held = 0  # slots taken

    async def acquire(self, wait: float | None = None) -> None:
        """Take a slot, waiting at most `wait` seconds (default: this admission's; math.inf: as
        long as it takes); the caller must `release` it."""
        delay = self.wait if wait is None else wait
        self.waiting += 1
        try:
            async with asyncio.timeout(None if math.isinf(delay) else delay):
                await self._slots.acquire()
            self.held += 1
        except TimeoutError:
            raise Overloaded(
                f"The server is at capacity ({self.limit} {self.what} at once, "
                f"{self.waiting} waiting): try again shortly.",
                retry_after=max(1.0, self.wait / 2),
            ) from None
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self.held -= 1
        self._slots.release()

    @contextlib.asynccontextmanager
    async def slot(self, wait: float | None = None) -> AsyncIterator[None]:
        await self.acquire(wait)
        try:
            yield
        finally:
            self.release()

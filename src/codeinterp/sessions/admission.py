"""Admission: how many of something may run at once, and what a caller past that gets.

A caller waits its turn in arrival order (asyncio's semaphore is first come, first served) for
at most `wait` seconds; then it gets `Overloaded`, a 503 with Retry-After, instead of silence.
`close(reason)` (the server is stopping) sends every waiter and every later caller away at once
with the reason, so that nothing queued holds up the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

from codeinterp.errors import Overloaded


class Admission:
    def __init__(self, limit: int, wait: float, what: str) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.wait = wait
        self.what = what  # "sessions", "tasks": named in the error
        self._slots = asyncio.Semaphore(limit)
        self._closed = asyncio.Event()
        self._closed_reason = ""
        self.waiting = 0  # callers in the queue
        self.held = 0  # slots taken

    async def acquire(self, wait: float | None = None) -> None:
        """Take a slot, waiting at most `wait` seconds (default: this admission's; math.inf: as
        long as it takes); the caller must `release` it."""
        self._check_open()
        delay = self.wait if wait is None else wait
        if not self._slots.locked():  # a free slot: no queue, no timer
            await self._slots.acquire()
            self.held += 1
            return
        self.waiting += 1
        taking = asyncio.ensure_future(self._slots.acquire())
        closing = asyncio.ensure_future(self._closed.wait())
        got = False
        try:
            await asyncio.wait(
                {taking, closing},
                timeout=None if math.isinf(delay) else delay,
                return_when=asyncio.FIRST_COMPLETED,
            )
            got = _took(taking) and not self._closed.is_set()
        finally:
            self.waiting -= 1
            closing.cancel()
            if got:
                self.held += 1
            elif _took(taking):  # the slot came as we gave up (timed out, closed, cancelled)
                self._slots.release()
            else:
                taking.cancel()
        if got:
            return
        self._check_open()
        raise Overloaded(
            f"The server is at capacity ({self.limit} {self.what} at once, "
            f"{self.waiting + 1} waiting): try again shortly.",
            retry_after=max(1.0, min(self.wait, 10.0) / 2),
        )

    def release(self) -> None:
        self.held -= 1
        self._slots.release()

    def close(self, reason: str) -> None:
        """Refuse every waiter and every later caller with `reason` (a 503)."""
        self._closed_reason = reason
        self._closed.set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise Overloaded(self._closed_reason, retry_after=5.0)

    @contextlib.asynccontextmanager
    async def slot(self, wait: float | None = None) -> AsyncIterator[None]:
        await self.acquire(wait)
        try:
            yield
        finally:
            self.release()


def _took(taking: asyncio.Future[Any]) -> bool:
    return taking.done() and not taking.cancelled() and taking.exception() is None

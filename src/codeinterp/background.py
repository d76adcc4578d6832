"""Work started and not awaited, kept alive until it ends.

The event loop holds only a weak reference to a task: one that nobody else holds can be
collected before it finishes. An owner that starts something in the background (a close that
the caller need not wait for, a command sent on the way out) starts it here, and can cancel
or wait for what is still running when it closes. The standard library only: the egress
proxy's venv loads this file by its path too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))  # a copy: tasks leave the set as they end

    def __len__(self) -> int:
        return len(self._tasks)

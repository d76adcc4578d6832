"""Run events for streaming clients: each subscriber gets its own queue of (event, data)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

Event = tuple[str, Any]
END: Event = ("done", "[DONE]")


class EventBus:
    def __init__(self) -> None:
        self._queues: defaultdict[str, list[asyncio.Queue[Event]]] = defaultdict(list)

    def subscribe(self, run_id: str) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._queues[run_id].append(queue)
        return queue

    def unsubscribe(self, run_id: str, queue: asyncio.Queue[Event]) -> None:
        queues = self._queues.get(run_id)
        if queues and queue in queues:
            queues.remove(queue)
            if not queues:
                del self._queues[run_id]

    def publish(self, run_id: str, event: str, data: Any) -> None:
        for queue in self._queues.get(run_id, ()):
            queue.put_nowait((event, data))

    def end(self, run_id: str) -> None:
        """The run has stopped (terminal or waiting for tool outputs): close every stream."""
        for queue in self._queues.pop(run_id, ()):
            queue.put_nowait(END)

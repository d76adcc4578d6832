"""WAL checkpoints in a worker thread, so that the event loop does not wait for fsyncs.

In WAL mode a commit only appends to the WAL file; now and then a checkpoint copies the WAL back
into the database file, fsyncing both (with synchronous=NORMAL, commits themselves never fsync).
SQLite does that by itself in whichever commit makes the WAL pass 1000 pages; since the store
commits on the event loop (backends.py), that commit would hold the loop for milliseconds, or far
longer on a slow disk. So every CHECKPOINT_EVERY write transactions the store runs a PASSIVE
checkpoint on a second connection in a thread of its own. A passive checkpoint never waits for
readers or writers, and they never wait for it. Once it has copied every frame, the next writer
starts the WAL over from its beginning, which keeps the file small.

A checkpoint cannot copy the frames of commits made while it runs, and the WAL starts over only
once every frame is copied. So the thread checkpoints again until a pass finds no new frame (up
to PASSES in all); each pass has less to copy than the last. Under a steady stream of writes the
WAL may still not start over for a while: the loop's connection keeps SQLite's automatic
checkpoint as a backstop, at AUTOCHECKPOINT_PAGES instead of 1000. If the WAL ever grows that
large, one commit on the loop copies what the thread has not (usually little), and the WAL starts
over. The last connection to close checkpoints whatever is left, as usual.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine

log = logging.getLogger("codeinterp.store")

CHECKPOINT_EVERY = 100  # write transactions; at a few pages each, about SQLite's 1000 pages
PASSES = 5  # checkpoints in a row at most, each copying what was written during the last
AUTOCHECKPOINT_PAGES = 10_000  # about 40 MB of WAL


def backstop_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    """A "connect" listener for the loop's engine: checkpoint only if the thread falls behind."""
    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")


class Checkpointer:
    """Counts write transactions and checkpoints in its own thread every `every` of them.

    The checkpoint is handed to the thread at once, not via an asyncio task: a coroutine that
    makes many store calls without ever suspending would otherwise keep it from starting.
    """

    def __init__(self, engine: Engine, every: int = CHECKPOINT_EVERY) -> None:
        # What sqlite3.connect gets for the engine's database (the path, uri=True, ...).
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect_args: tuple[Any, ...] = tuple(args)
        self._connect_kwargs: dict[str, Any] = {
            **kwargs,
            "check_same_thread": True,  # it lives in the one thread of the executor
            "isolation_level": None,
        }
        self._every = every
        self._writes = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._pending: Future[None] | None = None
        self._connection: sqlite3.Connection | None = None  # only touched in that thread

    def wrote(self) -> None:
        """Note a committed write transaction; start a checkpoint if one is due and none runs."""
        self._writes += 1
        if self._writes >= self._every and (self._pending is None or self._pending.done()):
            self._writes = 0
            self._pending = self._thread.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._connection is None:
                self._connection = sqlite3.connect(*self._connect_args, **self._connect_kwargs)
            seen = -1
            for _ in range(PASSES):
                row = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                frames = row[1]  # in the WAL when this pass began (-1: not in WAL mode)
                if frames <= seen:  # nothing written since the last pass, which copied it all
                    break
                seen = frames
        except Exception:
            log.warning("WAL checkpoint failed; the next one will retry", exc_info=True)

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def wait(self) -> None:
        """Wait until the checkpoint running in the thread, if any, is over."""
        if self._pending is not None:
            await asyncio.wrap_future(self._pending)

    async def close(self) -> None:
        """Let a running checkpoint finish, close the checkpoint connection, end the thread."""
        if self._pending is not None:  # the thread was started, and may hold a connection
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close_connection)
        self._thread.shutdown()

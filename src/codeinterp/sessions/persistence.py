"""Saving a thread's or a container's session to disk, so that it outlives its process.

A session is saved as a snapshot archive (sandbox/snapshot.py: its variables, files, execution
count and history), kept by the store as the owner's *saved state*, one per owner:

- when it has been idle for its idle time, it is saved and its process ends: it is *asleep*, and
  its next use wakes it in a new process from the state (SessionManager);
- a stop of the server saves every live session that changed since it was last saved;
- against a crash, a session that ran code (or had its files changed) is saved
  `checkpoint_seconds` after that change, or as soon as it is idle after that;
- a state is kept for `retention_seconds` after it was saved, then discarded (the container
  expires), and a project's states together take at most `quota_bytes`: to make room, the
  states of the project's sleeping sessions are discarded oldest first.

A session that cannot be saved (too large, or its kernel failed) is not put to sleep: it ends
as before, and its container expires. A session that has not changed since it was made (no code
ran, no file came) is saved without an archive: its state is a new session's, so it wakes as one
(from the warm pool), and saving it asks nothing of its kernel or of the disk but one row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from codeinterp.errors import CodeInterpError
from codeinterp.sandbox import SnapshotInfo
from codeinterp.store import SessionStateRecord, Store

if TYPE_CHECKING:
    from .manager import ManagedSession

log = logging.getLogger("codeinterp.sessions")

DAY = 86_400.0


@dataclass(frozen=True)
class Persistence:
    """How sessions outlive their processes (the settings of the module docstring)."""

    enabled: bool = True  # off: an idle session ends and its container expires, as with OpenAI
    checkpoint_seconds: float = 10.0  # 0: saved only when it goes to sleep and at a stop
    retention_seconds: float = 7 * DAY
    quota_bytes: int | None = 10 * 2**30  # per project; None: no quota
    stop_seconds: float = 20.0  # a stop saves live sessions for at most this long


async def save(
    store: Store,
    managed: ManagedSession,
    persistence: Persistence,
    live: Callable[[], Collection[str]],
    *,
    fresh: bool,
) -> bool:
    """Save `managed` as its owner's state; whether it was saved (failures are logged).
    `fresh`: it has not changed since it was made, and is saved without an archive.

    Room is made under the project's quota by discarding the states of its sleeping sessions,
    oldest first (`live()`: the owners whose states are in use, live or waking, which are
    spared; asked after the snapshot, just before the room is made)."""
    temp = None if fresh else store.temp_path()
    limit = persistence.quota_bytes
    started = time.monotonic()
    try:
        if temp is None:
            info = SnapshotInfo(bytes=0, variables=0, skipped={})
        else:
            info = await managed.session.snapshot(temp, max_bytes=limit)
        if not await _make_room(store, managed, info.bytes, persistence, live()):
            return False
        record = SessionStateRecord(
            owner_id=managed.owner_id,
            project=managed.project,
            owner_kind=managed.owner_kind,
            session_id=managed.id,
            bytes=info.bytes,
            saved_at=int(time.time()),
            body={
                "memory_limit": managed.memory_limit,
                "packages": managed.packages,
                "files": managed.files,
                "owner": managed.keep(managed) if managed.keep is not None else {},
                "skipped": info.skipped,
            },
            path="",
        )
        await store.save_session_state(record, temp)
    except (CodeInterpError, OSError) as exc:
        log.warning(
            "could not save the session of %s %s: %s", managed.owner_kind, managed.owner_id, exc
        )
        return False
    finally:
        if temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    log.info(
        "saved the session of %s %s: %s in %.0f ms",
        managed.owner_kind,
        managed.owner_id,
        "unchanged since it was made" if fresh else f"{info.bytes} bytes",
        1000 * (time.monotonic() - started),
    )
    return True


async def _make_room(
    store: Store,
    managed: ManagedSession,
    size: int,
    persistence: Persistence,
    live: Collection[str],
) -> bool:
    """Whether a state of `size` bytes fits under the project's quota, after discarding the
    oldest states of its sleeping sessions if it must."""
    quota = persistence.quota_bytes
    if quota is None or size == 0:
        return True
    used = await store.session_state_bytes(managed.project, except_owner=managed.owner_id)
    if used + size <= quota:
        return True
    discard: list[str] = []
    for state in await store.list_session_states(managed.project):  # oldest first
        if used + size <= quota:
            break
        if state.owner_id != managed.owner_id and state.owner_id not in live:
            discard.append(state.owner_id)
            used -= state.bytes
    if used + size > quota:
        log.warning(
            "project %s: no room for the %d-byte state of %s %s under its quota of %d bytes",
            managed.project,
            size,
            managed.owner_kind,
            managed.owner_id,
            quota,
        )
        return False
    if discard:
        await store.discard_session_states(discard)
        log.info(
            "project %s: discarded %d sleeping sessions for room", managed.project, len(discard)
        )
    return True


async def discard_stale(
    store: Store, persistence: Persistence, live: Callable[[], Collection[str]]
) -> int:
    """Discard the states kept longer than the retention, but those in use (`live()`: live or
    waking sessions, whose states are refreshed when they change or sleep); how many."""
    cutoff = int(time.time() - persistence.retention_seconds)
    stale = await store.list_session_states(saved_before=cutoff)
    in_use = live()
    stale_ids = [s.owner_id for s in stale if s.owner_id not in in_use]
    if not stale_ids:
        return 0
    discarded = await store.discard_session_states(stale_ids)
    log.info("discarded %d sleeping session(s) past their retention", discarded)
    return discarded

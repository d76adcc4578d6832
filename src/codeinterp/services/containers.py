"""Containers: a named sandbox session with an idle time and its files at /mnt/data.

A container's metadata is stored; its files and Python state live in its session. Idle past its
`expires_after`, the session goes to sleep on disk (sessions/persistence.py) and the container
stays "running": its next use wakes it with the same variables, files and file ids, also after
a restart or a crash of the server. It expires (as with OpenAI) when its state is discarded
(retention, the project's quota), cannot be saved, or persistence is off. Container file ids are
kept beside the session (and saved with it): a file the code writes gets an id (source
"assistant") the first time the API sees it.

Every door that runs code in a container (execute, the Responses API, the MCP tools) goes
through `execute` here, so they share sessions, limits, file tracking and usage records.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from typing import Any

from codeinterp.config import Settings
from codeinterp.errors import CodeInterpError, ContainerExpired, InvalidRequest, NotFound
from codeinterp.ids import new_id
from codeinterp.protocol.containers import (
    DEFAULT_EXPIRY_MINUTES,
    Container,
    ContainerCreate,
    ContainerFile,
)
from codeinterp.protocol.files import SNAPSHOT_PURPOSE
from codeinterp.sandbox import FileChange
from codeinterp.sandbox.workspace import FileReader, WorkspaceFile, clean_relative_path
from codeinterp.sessions import ManagedSession, SessionManager, SessionOptions, execution
from codeinterp.sessions.execution import ExecutionEvent, ReportChanges, SaveImage
from codeinterp.sessions.options import options_for
from codeinterp.store import Store, expired_container

from .common import check_limit, check_order, dict_envelope, now
from .files import clean_filename, file_to_wire
from .session_fields import session_fields

log = logging.getLogger("codeinterp.containers")

WORKSPACE = "/mnt/data"
IMAGE_DIR = "outputs"  # displayed images are saved as /mnt/data/outputs/image-N.png

_file_order = itertools.count()


@dataclass
class TrackedFile:
    id: str
    created_at: int
    source: str  # "user" (uploaded through the API) or "assistant" (written by code)
    order: int = field(default_factory=lambda: next(_file_order))  # within a second


@dataclass
class LiveContainer:
    project: str
    container: Container
    managed: ManagedSession
    files: dict[str, TrackedFile] = field(default_factory=dict)  # path under /mnt/data -> file
    images_saved: int = 0


class ContainersService:
    def __init__(self, store: Store, sessions: SessionManager, settings: Settings) -> None:
        self.store = store
        self.sessions = sessions
        self.settings = settings
        self._live: dict[str, LiveContainer] = {}

    # -- containers -----------------------------------------------------------------------------

    async def create(self, project: str, body: ContainerCreate) -> dict[str, Any]:
        records = [await self.store.get_file(project, f) for f in dict.fromkeys(body.file_ids)]
        restore_from = None
        if body.snapshot_id is not None:
            snapshot = await self.store.get_file(project, body.snapshot_id)  # 404
            if snapshot.purpose != SNAPSHOT_PURPOSE:
                raise InvalidRequest(
                    f"File '{snapshot.id}' is not a snapshot (its purpose is "
                    f"{snapshot.purpose!r}, not {SNAPSHOT_PURPOSE!r}).",
                    param="snapshot_id",
                )
            restore_from = await self.store.file_path(project, snapshot.id)
        fields = session_fields(self.settings.data_dir, body.environment, body.network_policy)
        stamp = now()
        minutes = body.expires_after.minutes if body.expires_after else DEFAULT_EXPIRY_MINUTES
        container = Container(
            id=new_id("container"),
            name=body.name,
            created_at=stamp,
            last_active_at=stamp,
            expires_after={"anchor": "last_active_at", "minutes": minutes},
            memory_limit=body.memory_limit or "1g",
            **fields,
        )
        await self.store.create_object("container", project, container.id, container.stored())
        try:
            managed = await self.sessions.acquire(
                project,
                "container",
                container.id,
                self._session_options(container),
                restore_from=restore_from,
            )
            live = LiveContainer(project, container, managed)
            self._live[container.id] = live
            paths = SessionManager.plan_paths({}, records)
            for record in records:
                data = await self.store.read_file(project, record.id)
                await self._write(live, paths[record.id], data, "user")
        except BaseException:
            self._live.pop(container.id, None)
            await self.sessions.close(project, "container", container.id)
            await self.store.delete_object("container", project, container.id)
            raise
        return container.model_dump(mode="json")

    async def retrieve(self, project: str, container_id: str) -> dict[str, Any]:
        """The container; an expired one is shown as such (its metadata outlives its data), a
        sleeping one as running without waking it."""
        if self._live_now(project, container_id) is not None:
            with contextlib.suppress(ContainerExpired):  # then shown from the store, expired
                return (await self._use(project, container_id)).container.model_dump(mode="json")
        record = await self.store.get_object("container", project, container_id)
        return Container.model_validate(record.body).model_dump(mode="json")  # no secrets

    async def allowed_domains(self, project: str, container_id: str) -> list[str]:
        """What the container's network policy lets its code reach (none: no network)."""
        live = self._live.get(container_id)
        if live is not None and live.project == project:
            container = live.container
        else:
            record = await self.store.get_object("container", project, container_id)
            container = Container.model_validate(record.body)
        return container.allowed_domains

    async def list_containers(
        self,
        project: str,
        after: str | None,
        limit: int,
        order: str,
        name: str | None,
    ) -> dict[str, Any]:
        page = await self.store.list_objects(
            "container",
            project,
            name=name,
            after=after,
            limit=check_limit(limit),
            order=check_order(order),
        )
        data = []
        for record in page.items:
            live = self._live.get(record.id)
            if live is not None and await self._expire_if_idle(live):
                live = None
            if live is None:
                record = await self.store.get_object("container", project, record.id)
            shown = live.container if live else Container.model_validate(record.body)
            data.append(shown.model_dump(mode="json"))
        return dict_envelope(data, page.has_more)

    async def ensure_usable(self, project: str, container_id: str) -> None:
        """NotFound or ContainerExpired unless code can run in the container now."""
        await self._use(project, container_id)

    async def delete(self, project: str, container_id: str) -> dict[str, Any]:
        await self.store.get_object("container", project, container_id)  # 404 if not ours
        self._live.pop(container_id, None)
        await self.sessions.close(project, "container", container_id)  # its saved state too
        self._live.pop(container_id, None)  # a wake that was under way when it was deleted
        await self.store.delete_object("container", project, container_id)
        return {"id": container_id, "object": "container.deleted", "deleted": True}

    # -- files ----------------------------------------------------------------------------------

    async def list_files(
        self, project: str, container_id: str, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        files = await self.all_files(project, container_id)  # oldest first
        check_limit(limit, 10_000)
        if check_order(order) == "desc":
            files.reverse()
        if after is not None:
            ids = [f["id"] for f in files]
            if after not in ids:
                raise InvalidRequest(
                    f"after={after!r} is not a file of this container; pass the id of a file "
                    "from an earlier page",
                    param="after",
                )
            files = files[ids.index(after) + 1 :]
        return dict_envelope(files[:limit], len(files) > limit)

    async def all_files(self, project: str, container_id: str) -> list[dict[str, Any]]:
        """Every file of the container, oldest first (what a prompt or a lookup by path needs)."""
        live = await self._use(project, container_id)
        current = await self._current_files(live)
        order_of = {t.id: t.order for t in live.files.values()}
        current.sort(key=lambda f: (f.created_at, order_of[f.id]))
        return [f.model_dump(mode="json") for f in current]

    async def add_file(
        self, project: str, container_id: str, filename: str | None, data: bytes
    ) -> dict[str, Any]:
        """An upload: written at /mnt/data/<its name> (which may name a subdirectory), replacing
        a file of that name."""
        live = await self._use(project, container_id)
        name = "/".join(clean_relative_path(filename)) if filename else clean_filename(filename)
        return (await self._write(live, name, data, "user")).model_dump(mode="json")

    async def copy_file(self, project: str, container_id: str, file_id: str) -> dict[str, Any]:
        """A File (Files API) copied in at /mnt/data/<its file name>."""
        live = await self._use(project, container_id)
        record = await self.store.get_file(project, file_id)
        data = await self.store.read_file(project, file_id)
        return (await self._write(live, record.filename, data, "user")).model_dump(mode="json")

    async def retrieve_file(self, project: str, container_id: str, file_id: str) -> dict[str, Any]:
        live = await self._use(project, container_id)
        return (await self._find_file(live, file_id)).model_dump(mode="json")

    async def open_file_content(
        self, project: str, container_id: str, file_id: str, max_bytes: int | None = None
    ) -> tuple[ContainerFile, FileReader]:
        """The file and a reader of its bytes, to stream out in chunks (the caller closes it).
        QuotaExceeded, before anything is read, if its apparent size is over max_download_bytes
        (or the lower `max_bytes`)."""
        return await self._open_file(await self._use(project, container_id), file_id, max_bytes)

    async def peek_file_content(
        self, project: str, container_id: str, file_id: str, max_bytes: int
    ) -> tuple[ContainerFile, FileReader]:
        """`open_file_content` for someone looking at the container, not using it (the trace
        viewer): its idle time and last_active_at stay as they were. NotFound unless it is
        live and not past its idle time."""
        live = self._live.get(container_id)
        if live is None or live.project != project:
            raise NotFound(f"No container found with id '{container_id}'.")
        managed = live.managed
        if (
            managed.session.closed
            or managed.sleeping
            or managed.expired(self.sessions.idle_seconds)
        ):
            raise NotFound(f"Container '{container_id}' is not running now.")
        return await self._open_file(live, file_id, max_bytes)

    async def _open_file(
        self, live: LiveContainer, file_id: str, max_bytes: int | None
    ) -> tuple[ContainerFile, FileReader]:
        found = await self._find_file(live, file_id)
        limit = self.settings.max_download_bytes
        if max_bytes is not None:
            limit = min(limit, max_bytes)
        reader = await live.managed.session.open_file(_relative(found.path), limit)
        return found, reader

    async def delete_file(self, project: str, container_id: str, file_id: str) -> dict[str, Any]:
        live = await self._use(project, container_id)
        found = await self._find_file(live, file_id)
        name = _relative(found.path)
        live.managed.changed()
        await live.managed.session.delete_file(name)
        live.files.pop(name, None)
        return {"id": file_id, "object": "container.file.deleted", "deleted": True}

    # -- code -----------------------------------------------------------------------------------

    async def execute(
        self, project: str, container_id: str, code: str, timeout: float | None
    ) -> AsyncGenerator[ExecutionEvent, None]:
        """Check the container (NotFound, ContainerExpired), then return the execution's events.

        They are yielded as they happen; leaving the iteration early (a client that went away)
        interrupts the code. Images the code displays are saved as container files and named
        in their `result` event.
        """
        live = await self._use(project, container_id)
        return self._execute(live, code, timeout)

    def _execute(
        self, live: LiveContainer, code: str, timeout: float | None
    ) -> AsyncGenerator[ExecutionEvent, None]:
        return execution.execute(live.managed, code, self._limit(timeout), *self._hooks(live))

    async def run(
        self,
        project: str,
        container_id: str,
        code: str,
        timeout: float | None,
        *,
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """`execute` gathered: the `end` event's body (`call_id`: the model's tool call)."""
        live = await self._use(project, container_id)
        limit = self._limit(timeout)
        return await execution.run(live.managed, code, limit, *self._hooks(live), call_id=call_id)

    def _limit(self, timeout: float | None) -> float:
        return timeout if timeout is not None else self.settings.execution_timeout

    def _hooks(self, live: LiveContainer) -> tuple[SaveImage, ReportChanges]:
        """What an execution in this container does with its images and its file changes."""

        async def save_image(extension: str, data: bytes) -> dict[str, str] | None:
            saved = await self._save_image(live, extension, data)
            return None if saved is None else {"file_id": saved.id, "path": saved.path}

        def report_changes(changes: list[FileChange]) -> list[dict[str, Any]]:
            return self._track_changes(live, changes)

        return save_image, report_changes

    async def interrupt(self, project: str, container_id: str) -> dict[str, Any]:
        if self._live_now(project, container_id) is None:  # asleep: nothing runs, not woken
            await self._check_not_expired(project, container_id)
            return {"id": container_id, "object": "container.interrupt", "interrupted": False}
        live = await self._use(project, container_id)
        # What the session says, not `busy`: an execution about to take the session's lock is
        # busy but not interruptible yet.
        running = await live.managed.session.interrupt()
        return {"id": container_id, "object": "container.interrupt", "interrupted": running}

    async def snapshot(self, project: str, container_id: str) -> dict[str, Any]:
        """Save the container's state (variables, files, count, history) as a File of purpose
        "snapshot": a new container starts from it with `snapshot_id`, another server after
        downloading and uploading it. The File object, plus the container's id and what could
        not be saved (`skipped`: name -> why)."""
        live = await self._use(project, container_id)
        managed = live.managed
        limit = self.settings.max_upload_bytes
        managed.busy += 1  # not put to sleep while it is being saved
        temp = self.store.temp_path()
        try:
            info = await managed.session.snapshot(temp, max_bytes=limit)
            record = await self.store.adopt_file(
                project,
                f"{container_id}.snapshot",
                SNAPSHOT_PURPOSE,
                temp,
                body={"container_id": container_id},
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)  # not adopted: it failed
            managed.busy -= 1
            managed.touch()
        return {**file_to_wire(record), "container_id": container_id, "skipped": info.skipped}

    # -- internals ------------------------------------------------------------------------------

    def _idle_seconds(self, minutes: int) -> float:
        cap = self.settings.container_idle_cap_minutes
        return 60.0 * (minutes if cap is None else min(minutes, cap))

    def _session_options(self, container: Container) -> SessionOptions:
        """What the container asks of its session, when it is made and when it wakes."""
        minutes = container.expires_after.get("minutes", DEFAULT_EXPIRY_MINUTES)
        return options_for(
            self.settings.data_dir,
            container.environment,
            container.network_request(),
            memory_limit=container.memory_limit,
            idle_seconds=self._idle_seconds(minutes),
            on_expire=self._on_session_expired,
            on_sleep=self._on_session_asleep,
            keep=self._kept_with_session,
        )

    async def _use(self, project: str, container_id: str) -> LiveContainer:
        """The live container (woken if it was asleep), its expiry refreshed; NotFound or
        ContainerExpired if none."""
        live = self._live_now(project, container_id)
        if live is None:
            live = await self._wake(project, container_id)
        elif await self._expire_if_idle(live):
            raise _expired_error(container_id, live.container.model_dump())
        managed = live.managed
        managed.touch()
        stamp = now()
        if stamp != live.container.last_active_at:  # stored to the second, not on every call
            live.container.last_active_at = stamp
            await self.store.update_object(
                "container", project, container_id, live.container.stored()
            )
        return live

    def _live_now(self, project: str, container_id: str) -> LiveContainer | None:
        """The container if its session is live and usable now (not asleep, going to sleep or
        ended)."""
        live = self._live.get(container_id)
        if live is None or live.project != project:
            return None
        managed = live.managed
        if managed.sleeping or managed.session.closed:
            return None
        if self.sessions.peek(project, "container", container_id) is not managed:
            return None  # ended by the manager (a delete racing a wake, say)
        return live

    async def _wake(self, project: str, container_id: str) -> LiveContainer:
        """The container back from its saved state (a sleep, a restart, a crash); NotFound or
        ContainerExpired (marked so) if it has none."""
        container = await self._check_not_expired(project, container_id)
        managed = await self.sessions.wake(
            project, "container", container_id, self._session_options(container)
        )
        if managed is None:  # nothing saved: its state is gone for good
            await self._mark_expired(project, container_id, container)
            raise _expired_error(container_id, container.model_dump(mode="json"))
        live = self._live.get(container_id)
        if live is not None and live.managed is managed:  # another caller woke it first
            return live
        live = LiveContainer(project, container, managed)
        if managed.woke_with is not None:
            _restore_tracking(live, managed.woke_with)
        self._live[container_id] = live
        return live

    async def _check_not_expired(self, project: str, container_id: str) -> Container:
        """The stored container; NotFound, or ContainerExpired if it has expired."""
        record = await self.store.get_object("container", project, container_id)  # 404
        container = Container.model_validate(record.body)
        if container.status != "running":
            raise _expired_error(container_id, record.body)
        return container

    async def _expire_if_idle(self, live: LiveContainer) -> bool:
        """With persistence off: expire the container now if it has been idle too long (the
        reaper may not have come round yet); whether it has expired. (With persistence on, a
        container past its idle time still in memory is simply used.)"""
        if self.sessions.persistence.enabled:
            return False
        managed = live.managed
        if managed.session.closed or managed.expired(self.sessions.idle_seconds):
            await self.sessions.expire(managed)
            return True
        return False

    async def _on_session_expired(self, managed: ManagedSession) -> None:
        live = self._live.pop(managed.owner_id, None)
        if live is None:
            return
        await self._mark_expired(managed.project, managed.owner_id, live.container)

    async def _mark_expired(self, project: str, container_id: str, container: Container) -> None:
        container.status = "expired"
        await self.store.update_object(
            "container", project, container_id, expired_container(container.stored())
        )

    async def _on_session_asleep(self, managed: ManagedSession) -> None:
        live = self._live.get(managed.owner_id)
        if live is not None and live.managed is managed:
            del self._live[managed.owner_id]

    def _kept_with_session(self, managed: ManagedSession) -> dict[str, Any]:
        """The container's file ids (oldest first) and image count, saved with its session."""
        live = self._live.get(managed.owner_id)
        if live is None or live.managed is not managed:
            return {}
        tracked = sorted(live.files.items(), key=lambda item: item[1].order)
        return {
            "files": [[name, t.id, t.created_at, t.source] for name, t in tracked],
            "images_saved": live.images_saved,
        }

    def _wire(
        self, live: LiveContainer, name: str, size: int, tracked: TrackedFile
    ) -> ContainerFile:
        return ContainerFile(
            id=tracked.id,
            created_at=tracked.created_at,
            bytes=size,
            container_id=live.container.id,
            path=f"{WORKSPACE}/{name}",
            source=tracked.source,  # type: ignore[arg-type]
        )

    def _track(self, live: LiveContainer, name: str, source: str, created_at: int) -> TrackedFile:
        tracked = live.files.get(name)
        if tracked is None:
            tracked = live.files[name] = TrackedFile(new_id("container_file"), created_at, source)
        elif source == "user":
            tracked.source = "user"
        return tracked

    async def _write(
        self, live: LiveContainer, name: str, data: bytes, source: str
    ) -> ContainerFile:
        live.managed.changed()
        path = await live.managed.session.upload(name, data)
        relative = _relative(path)
        return self._wire(live, relative, len(data), self._track(live, relative, source, now()))

    async def _current_files(self, live: LiveContainer) -> list[ContainerFile]:
        """Every file in /mnt/data now, with its id (new files get one; gone ones lose theirs)."""
        listing: Iterable[WorkspaceFile] = await live.managed.session.list_files()
        present = {f.name: f for f in listing}
        for name in list(live.files):
            if name not in present:
                del live.files[name]
        if present.keys() != live.files.keys():  # ids given or dropped: saved with the session
            live.managed.changed()
        return [
            self._wire(live, name, f.size, self._track(live, name, "assistant", int(f.modified)))
            for name, f in present.items()
        ]

    async def _find_file(self, live: LiveContainer, file_id: str) -> ContainerFile:
        for found in await self._current_files(live):
            if found.id == file_id:
                return found
        raise NotFound(f"No container file found with id '{file_id}'.")

    def _track_changes(self, live: LiveContainer, changes: Iterable[FileChange]) -> list[Any]:
        """The execution's file changes, each with the container file id it has now."""
        stamp = now()
        reported = []
        for change in changes:
            entry = change.to_dict()
            if change.change == "deleted":
                gone = live.files.pop(change.name, None)
                entry["id"] = gone.id if gone else None
            else:
                entry["id"] = self._track(live, change.name, "assistant", stamp).id
            reported.append(entry)
        return reported

    async def _save_image(
        self, live: LiveContainer, extension: str, data: bytes
    ) -> ContainerFile | None:
        """A displayed image as /mnt/data/outputs/image-N<ext>, never replacing a file."""
        live.images_saved += 1
        name = f"{IMAGE_DIR}/image-{live.images_saved}{extension}"
        while name in live.files:
            live.images_saved += 1
            name = f"{IMAGE_DIR}/image-{live.images_saved}{extension}"
        try:
            return await self._write(live, name, data, "assistant")
        except CodeInterpError as exc:  # no room, or the code made `outputs` a symlink
            log.warning("container %s: could not save %s: %s", live.container.id, name, exc)
            return None


def _restore_tracking(live: LiveContainer, kept: dict[str, Any]) -> None:
    """The file ids and image count a woken container had (see _kept_with_session)."""
    for name, file_id, created_at, source in kept.get("files", []):
        live.files[name] = TrackedFile(file_id, created_at, source)
    live.images_saved = kept.get("images_saved", 0)


def _relative(path: str) -> str:
    return "/".join(clean_relative_path(path))


def _expired_error(container_id: str, body: dict[str, Any]) -> ContainerExpired:
    minutes = (body.get("expires_after") or {}).get("minutes", DEFAULT_EXPIRY_MINUTES)
    return ContainerExpired(
        f"Container {container_id} has expired: its files and state are gone (the server "
        "restarted after a crash before its state was saved, or its saved state was discarded "
        "past the server's retention or the project's quota, or could not be made, or it was "
        f"idle for more than {minutes} minutes with session persistence off). Create a new "
        "container."
    )

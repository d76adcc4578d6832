"""What the store hands back: frozen dataclasses, never ORM objects.

A record is a snapshot taken inside the transaction that read it, so callers can keep it, pass it
across tasks and compare it without a database session. `body` is the rest of the OpenAI object as
a plain dict, exactly as it was stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar


class HasId(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=HasId)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An uploaded file's metadata; the bytes are read with Store.read_file / Store.file_path."""

    id: str
    project: str
    created_at: int
    filename: str
    purpose: str
    bytes: int
    expires_at: int | None
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """An assistant, thread, message, run, run step or container.

    thread_id, run_id, status and name are the object's own (None for a kind that has no such
    field).
    """

    id: str
    project: str
    created_at: int
    body: dict[str, Any]
    seq: int
    thread_id: str | None = None
    run_id: str | None = None
    status: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """Usage of one code session: who owned it, when it ran, what it cost."""

    id: str
    project: str
    owner_kind: str
    owner_id: str
    started_at: int
    ended_at: int | None
    price_usd: float
    memory_limit: str


@dataclass(frozen=True, slots=True)
class SessionStateRecord:
    """The saved state of a thread's or a container's session (see tables.SessionStateRow);
    `path` is where its archive is on disk, for the sandbox to restore from; empty for a state
    without one (a session that had not changed since it was made wakes as a new session)."""

    owner_id: str
    project: str
    owner_kind: str
    session_id: str
    bytes: int
    saved_at: int
    body: dict[str, Any]
    path: str


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One trace of ours as the trace viewer lists it; `spans` only when read whole (get_trace).

    `id` is its root span's id; `kind` says what it traced (a run, a response, a chat completion,
    an execution), and `item_id` names that item. `status` is "ok" or "error".
    """

    id: str
    project: str
    created_at: int
    trace_id: str
    kind: str
    item_id: str | None
    thread_id: str | None
    assistant_id: str | None
    container_id: str | None
    status: str
    model: str | None
    duration_ms: float
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    error_type: str | None
    error_count: int
    spans: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class TraceFilter:
    """What a trace list is narrowed to: None means any. Times are unix seconds, [since, until)."""

    kind: str | None = None
    item_id: str | None = None
    thread_id: str | None = None
    assistant_id: str | None = None
    container_id: str | None = None
    status: str | None = None
    since: int | None = None
    until: int | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    """One page of a list, in the order asked for; `has_more` says more exist beyond it."""

    items: list[R]
    has_more: bool

    @property
    def first_id(self) -> str | None:
        return self.items[0].id if self.items else None

    @property
    def last_id(self) -> str | None:
        return self.items[-1].id if self.items else None

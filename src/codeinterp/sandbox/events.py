"""What an execution yields while it runs, and the whole of it once it has finished.

Events stream in the order the code produced them: `Stdout`, `Stderr`, `Result` (a MIME bundle)
and `Error` in any number, then exactly one `End`. `Execution` collects them; its `to_dict()` is
the JSON shape shared by `codeinterp exec --json` and the HTTP execute API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "interrupted", "oom", "killed"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "interrupted", "oom", "killed")


@dataclass(frozen=True)
class Stdout:
    text: str
    type: Literal["stdout"] = "stdout"


@dataclass(frozen=True)
class Stderr:
    text: str
    type: Literal["stderr"] = "stderr"


@dataclass(frozen=True)
class Result:
    """A rich output: `data` maps MIME types to values (binary types as base64 text)."""

    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: Literal["execute_result", "display_data"] = "display_data"
    type: Literal["result"] = "result"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "data": self.data, "metadata": self.metadata}


@dataclass(frozen=True)
class Error:
    name: str
    value: str
    traceback: str
    type: Literal["error"] = "error"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "value": self.value, "traceback": self.traceback}


@dataclass(frozen=True)
class FileChange:
    path: str  # as sandboxed code sees it, e.g. /mnt/data/out.csv
    name: str  # relative to the workspace
    size: int
    change: Literal["created", "modified", "deleted"]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "size": self.size, "change": self.change}


@dataclass(frozen=True)
class End:
    status: Status
    execution_count: int | None
    duration_ms: float
    files: tuple[FileChange, ...] = ()
    state_lost: bool = False  # the session was restarted: variables and imports are gone
    signal: int | None = None  # for `killed`: the signal that ended the session, if any
    exit_code: int | None = None  # for `killed`: the exit code, if the process exited
    # stdout, stderr, results -> bytes dropped; files -> changes left out of `files`
    truncated: dict[str, int] = field(default_factory=dict)
    message: str = ""  # why the execution ended as it did, for the statuses without an Error
    type: Literal["end"] = "end"


Event = Stdout | Stderr | Result | Error | End


@dataclass
class Execution:
    """Every event of one execution, gathered."""

    status: Status = "ok"
    results: list[Result] = field(default_factory=list)
    error: Error | None = None
    files: list[FileChange] = field(default_factory=list)
    execution_count: int | None = None
    duration_ms: float = 0.0
    state_lost: bool = False
    signal: int | None = None
    exit_code: int | None = None
    truncated: dict[str, int] = field(default_factory=dict)
    message: str = ""
    events: list[Event] = field(default_factory=list)
    # The text of each stream in pieces, joined when read: an execution can bring thousands.
    _stdout: list[str] = field(default_factory=list, repr=False)
    _stderr: list[str] = field(default_factory=list, repr=False)

    @property
    def stdout(self) -> str:
        return _joined(self._stdout)

    @property
    def stderr(self) -> str:
        return _joined(self._stderr)

    def add(self, event: Event) -> None:
        self.events.append(event)
        match event:
            case Stdout(text=text):
                self._stdout.append(text)
            case Stderr(text=text):
                self._stderr.append(text)
            case Result():
                self.results.append(event)
            case Error():
                self.error = event
            case End():
                self.status = event.status
                self.execution_count = event.execution_count
                self.duration_ms = event.duration_ms
                self.files = list(event.files)
                self.state_lost = event.state_lost
                self.signal = event.signal
                self.exit_code = event.exit_code
                self.truncated = dict(event.truncated)
                self.message = event.message

    @property
    def text(self) -> str | None:
        """The text/plain of the last expression's value, if the code ended with one."""
        for result in reversed(self.results):
            if result.kind == "execute_result":
                value = result.data.get("text/plain")
                return str(value) if value is not None else None
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "results": [r.to_dict() for r in self.results],
            "error": self.error.to_dict() if self.error else None,
            "files": [f.to_dict() for f in self.files],
            "execution_count": self.execution_count,
            "duration_ms": round(self.duration_ms, 3),
            "state_lost": self.state_lost,
            "signal": self.signal,
            "exit_code": self.exit_code,
            "truncated": self.truncated,
            "message": self.message,
        }


def _joined(pieces: list[str]) -> str:
    if len(pieces) > 1:
        pieces[:] = ["".join(pieces)]
    return pieces[0] if pieces else ""

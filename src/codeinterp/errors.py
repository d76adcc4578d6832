"""The project's exception tree. Every error we raise on purpose derives from CodeInterpError.

CodeInterpError
├── InvalidRequest          bad input from a caller (bad path, bad policy value)
├── NotFound                a named object (session, file) does not exist
├── Conflict                the object is busy or in the wrong state
├── QuotaExceeded           a size limit (workspace quota, upload cap) would be passed
├── ContainerExpired        the container was idle too long; its files and state are gone
├── Overloaded              no capacity now: try again after `retry_after` seconds
│   ├── LimitReached          a configured maximum (of the server or the project) is reached
│   └── StorageBusy           another process holds the database's write lock
├── StorageFull             the data directory's disk is full: nothing more can be stored
├── LoopLimitExceeded       the model-and-tool loop passed a limit
│   ├── ToolBudgetExceeded    too many tool calls
│   └── TimeLimitExceeded     too long
└── SandboxError            the sandbox itself failed
    ├── IsolationUnavailable  a protection is missing here; the message names the fix
    ├── SessionClosed         the session was closed by its owner
    └── SessionDied           the session's processes died outside an execution
"""

from __future__ import annotations


class CodeInterpError(Exception):
    """Root of every error raised by codeinterp on purpose."""


class Unauthorized(CodeInterpError):
    """The request carries no API key, or one this server does not know."""


class InvalidRequest(CodeInterpError):
    """The caller asked for something malformed."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFound(CodeInterpError):
    """The named object does not exist (or belongs to another project, which looks the same)."""


class Conflict(CodeInterpError):
    """The object is busy or in a state that does not allow the operation."""


class QuotaExceeded(CodeInterpError):
    """The operation would pass a configured size limit."""


class ContainerExpired(CodeInterpError):
    """The container expired (idle too long, or the server restarted); its data is gone."""


class Overloaded(CodeInterpError):
    """The server cannot take the request now (its queue waited too long); the caller may try
    again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EgressUnavailable(CodeInterpError):
    """A network policy cannot be given: the egress proxy is not installed or would not start."""


class LimitReached(Overloaded):
    """A configured maximum (live sessions of the server or of a project) is reached."""


class StorageBusy(Overloaded):
    """The database stayed locked (by another process) for longer than the store waits."""


class StorageFull(CodeInterpError):
    """The disk holding the data directory (database, files) is full."""

    def __init__(
        self,
        message: str = "The server's data directory is full: nothing more can be stored until "
        "space is freed (delete files, or give the data directory more room).",
    ) -> None:
        super().__init__(message)


class LoopLimitExceeded(CodeInterpError):
    """The model-and-tool loop passed one of its limits; the message names the setting."""


class ToolBudgetExceeded(LoopLimitExceeded):
    """The model made more tool calls than the loop allows."""


class TimeLimitExceeded(LoopLimitExceeded):
    """The model and its tools took longer than the loop allows."""


class UpstreamError(CodeInterpError):
    """The language model's endpoint failed or answered with something unusable."""


class SandboxError(CodeInterpError):
    """The sandbox failed to start, to answer or to clean up."""


class SnapshotFailed(SandboxError):
    """A session's state could not be saved; the session itself lives on."""


class IsolationUnavailable(SandboxError):
    """A protection the policy requires is not available on this machine."""


class SessionClosed(SandboxError):
    """The session was closed and cannot be used any more."""


class SessionDied(SandboxError):
    """The session's processes died outside of an execution."""

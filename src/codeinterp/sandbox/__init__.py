"""The sandbox engine: fast, isolated, stateful Python sessions.

Usable on its own, without the server:

    from codeinterp.sandbox import Sandbox

    async with await Sandbox.start() as sandbox:
        session = await sandbox.create_session()
        async for event in session.execute("print('hi'); 1 + 1"):
            print(event)

`SyncSandbox` wraps the same API for code without an event loop.
"""

from .engine import Sandbox, SandboxConfig
from .events import End, Error, Event, Execution, FileChange, Result, Stderr, Stdout
from .oneshot import Task, TaskResult
from .policy import MEMORY_TIERS, Limits, SandboxPolicy
from .session import Session, SessionNetwork, SessionStats, SnapshotInfo
from .sync import SyncSandbox, SyncSession

__all__ = [
    "MEMORY_TIERS",
    "End",
    "Error",
    "Event",
    "Execution",
    "FileChange",
    "Limits",
    "Result",
    "Sandbox",
    "SandboxConfig",
    "SandboxPolicy",
    "Session",
    "SessionNetwork",
    "SessionStats",
    "SnapshotInfo",
    "Stderr",
    "Stdout",
    "SyncSandbox",
    "SyncSession",
    "Task",
    "TaskResult",
]

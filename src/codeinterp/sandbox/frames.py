"""Frames from the kernel, checked before the host believes them.

The kernel runs in the same process as untrusted code, which can write its own frames to the
session socket. So every frame is treated as input: unknown kinds, missing fields and wrong types
are dropped or coerced here, never raised into the host, and nothing a frame says can make the
host report a status outside `STATUSES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .events import Error, FileChange, Result

KERNEL_STATUSES = ("ok", "error", "interrupted")
FILE_CHANGES = ("created", "modified", "deleted")


@dataclass(frozen=True)
class Done:
    """The kernel's end of one execution, before the host adds what only it knows."""

    status: Literal["ok", "error", "interrupted"]
    execution_count: int | None
    files: tuple[FileChange, ...]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _file_change(item: Any) -> FileChange | None:
    if not isinstance(item, dict):
        return None
    path, name, size, change = (
        item.get("path"),
        item.get("name"),
        item.get("size"),
        item.get("change"),
    )
    if not (isinstance(path, str) and isinstance(name, str) and change in FILE_CHANGES):
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    return FileChange(path, name, size, change)


def _is_json_type(mime: str) -> bool:
    return mime == "application/json" or mime.endswith("+json")


def parse_result(frame: dict[str, Any]) -> Result | None:
    """A rich result, keeping only MIME values of the right type (text, or JSON for JSON types)."""
    raw = frame.get("data")
    if not isinstance(raw, dict):
        return None
    data = {
        mime: value
        for mime, value in raw.items()
        if isinstance(mime, str) and (isinstance(value, str) or _is_json_type(mime))
    }
    if not data:
        return None
    metadata = frame.get("metadata")
    kind: Literal["execute_result", "display_data"] = (
        "execute_result" if frame.get("type") == "execute_result" else "display_data"
    )
    return Result(data, metadata if isinstance(metadata, dict) else {}, kind)


def parse_error(frame: dict[str, Any]) -> Error:
    return Error(
        _text(frame.get("name")) or "Error",
        _text(frame.get("value")),
        _text(frame.get("traceback")),
    )


def parse_done(frame: dict[str, Any]) -> Done:
    status = frame.get("status")
    count = frame.get("execution_count")
    files = frame.get("files")
    changes = [_file_change(f) for f in files] if isinstance(files, list) else []
    return Done(
        status=status if status in KERNEL_STATUSES else "error",
        execution_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
        files=tuple(c for c in changes if c is not None),
    )

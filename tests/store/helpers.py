"""Helpers for the store tests: object bodies shaped like the services store them, and streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any


def blob_names(tmp_path: Path) -> list[str]:
    """Every file in the store's blob directory, temporary ones included."""
    return sorted(p.name for p in (tmp_path / "data" / "blobs").iterdir())


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    """`data` as an async stream of `size`-byte chunks, like an upload."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def run_body(run_id: str, thread_id: str, status: str = "queued", **extra: Any) -> dict[str, Any]:
    """A run object as the services store it (the fields the store cares about)."""
    return {
        "id": run_id,
        "object": "thread.run",
        "created_at": 1_700_000_000,
        "thread_id": thread_id,
        "assistant_id": "asst_1",
        "status": status,
        "required_action": None,
        "last_error": None,
        "expires_at": 1_700_000_600,
        "failed_at": None,
        **extra,
    }


def message_body(msg_id: str, thread_id: str, run_id: str | None, status: str) -> dict[str, Any]:
    return {
        "id": msg_id,
        "object": "thread.message",
        "created_at": 1_700_000_000,
        "thread_id": thread_id,
        "run_id": run_id,
        "status": status,
        "incomplete_details": None,
        "incomplete_at": None,
        "role": "assistant",
        "content": [{"type": "text", "text": {"value": "héllo ✓", "annotations": []}}],
    }


def step_body(step_id: str, run_id: str, thread_id: str, status: str) -> dict[str, Any]:
    return {
        "id": step_id,
        "object": "thread.run.step",
        "created_at": 1_700_000_000,
        "run_id": run_id,
        "thread_id": thread_id,
        "status": status,
        "last_error": None,
        "failed_at": None,
        "step_details": {"type": "tool_calls", "tool_calls": []},
    }

"""The File object (Files API)."""

from __future__ import annotations

from typing import Literal

from .common import OrAbsent, WireModel

# OpenAI's, plus "snapshot" (an extension): a session snapshot, to start a container from
SNAPSHOT_PURPOSE = "snapshot"
UPLOAD_PURPOSES = (
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
    SNAPSHOT_PURPOSE,
)


class FileObject(WireModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: OrAbsent[int] = None  # only a file that expires has it
    status_details: OrAbsent[str] = None

"""Files: upload with a size cap, list, retrieve, delete, content."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from codeinterp.errors import InvalidRequest
from codeinterp.protocol.files import UPLOAD_PURPOSES, FileObject
from codeinterp.store import FileRecord, Store

from .common import check_limit, check_order, list_envelope


def file_to_wire(record: FileRecord) -> dict[str, Any]:
    return FileObject(
        id=record.id,
        bytes=record.bytes,
        created_at=record.created_at,
        filename=record.filename,
        purpose=record.purpose,
        expires_at=record.expires_at,
    ).model_dump(mode="json")


def clean_filename(name: str | None) -> str:
    """The client's file name as metadata: its last path component, printable, bounded."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in ("", ".", ".."):
        base = "upload"
    return base[:255]


class FilesService:
    def __init__(self, store: Store, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes

    async def upload(
        self,
        project: str,
        filename: str | None,
        purpose: str,
        chunks: AsyncIterator[bytes],
        expires_after_seconds: int | None = None,
    ) -> dict[str, Any]:
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"Invalid value for 'purpose': {purpose!r}. Supported values are: "
                + ", ".join(repr(p) for p in UPLOAD_PURPOSES)
                + ".",
                param="purpose",
            )
        expires_at = None
        if expires_after_seconds is not None:
            if not 3600 <= expires_after_seconds <= 2_592_000:
                raise InvalidRequest(
                    "expires_after[seconds] must be between 3600 and 2592000.",
                    param="expires_after[seconds]",
                )
            from .common import now

            expires_at = now() + expires_after_seconds
        record = await self.store.create_file(
            project, clean_filename(filename), purpose, chunks, self.max_bytes, expires_at
        )
        return file_to_wire(record)

    async def create_output(
        self, project: str, filename: str, data: bytes | AsyncIterator[bytes]
    ) -> FileRecord:
        """A file made by the sandbox (an image, a cited file, its bytes or streamed in chunks):
        purpose assistants_output."""
        return await self.store.create_file(
            project, clean_filename(filename), "assistants_output", data, self.max_bytes
        )

    async def get(self, project: str, file_id: str) -> dict[str, Any]:
        return file_to_wire(await self.store.get_file(project, file_id))

    async def content(self, project: str, file_id: str) -> tuple[str, str]:
        """The file's name and where its bytes are on disk (to stream them in a response)."""
        record = await self.store.get_file(project, file_id)
        return record.filename, await self.store.file_path(project, file_id)

    async def list(
        self, project: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        page = await self.store.list_files(
            project,
            purpose=purpose,
            after=after,
            limit=check_limit(limit, 10_000),
            order=check_order(order),
        )
        return list_envelope(page.items, page.has_more, file_to_wire)

    async def delete(self, project: str, file_id: str) -> dict[str, Any]:
        await self.store.delete_file(project, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

"""Files API: /v1/files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile

from codeinterp.api.deps import Project, ServicesDep
from codeinterp.errors import InvalidRequest

router = APIRouter(prefix="/v1/files", tags=["files"])


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 20):
        yield chunk


@router.post("")
async def upload_file(request: Request, services: ServicesDep, project: Project) -> dict[str, Any]:
    # Starlette spools file parts to disk as they arrive (other fields stay small); the size
    # cap is checked as we copy, and by the middleware for a chunked body.
    form = await request.form()
    upload = form.get("file")
    purpose = form.get("purpose")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    if not isinstance(purpose, str):
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
    seconds = form.get("expires_after[seconds]")
    try:
        expires = int(seconds) if isinstance(seconds, str) else None
    except ValueError:
        raise InvalidRequest("expires_after[seconds] must be an integer.") from None
    try:
        return await services.files.upload(
            project, upload.filename, purpose, _chunks(upload), expires
        )
    finally:
        await upload.close()


@router.get("")
async def list_files(
    services: ServicesDep,
    project: Project,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 10_000,
    order: str = "desc",
) -> dict[str, Any]:
    return await services.files.list(project, purpose, after, limit, order)


@router.get("/{file_id}")
async def retrieve_file(file_id: str, services: ServicesDep, project: Project) -> dict[str, Any]:
    return await services.files.get(project, file_id)


@router.delete("/{file_id}")
async def delete_file(file_id: str, services: ServicesDep, project: Project) -> dict[str, Any]:
    return await services.files.delete(project, file_id)


@router.get("/{file_id}/content")
async def file_content(file_id: str, services: ServicesDep, project: Project) -> FileResponse:
    filename, path = await services.files.content(project, file_id)
    return FileResponse(path, media_type="application/octet-stream", filename=filename)

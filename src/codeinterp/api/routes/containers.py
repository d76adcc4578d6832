"""Containers API: /v1/containers, their files, and our execute and interrupt extensions."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from codeinterp.api.deps import Project, ServicesDep
from codeinterp.api.sse import execution_stream
from codeinterp.errors import InvalidRequest, QuotaExceeded
from codeinterp.protocol.containers import ContainerCreate, ContainerFileCreate, ExecuteRequest

router = APIRouter(prefix="/v1/containers", tags=["containers"])


@router.post("")
async def create_container(
    body: ContainerCreate, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.containers.create(project, body)


@router.get("")
async def list_containers(
    services: ServicesDep,
    project: Project,
    after: str | None = None,
    limit: int = 20,
    order: str = "desc",
    name: str | None = None,
) -> dict[str, Any]:
    return await services.containers.list_containers(project, after, limit, order, name)


@router.get("/{container_id}")
async def retrieve_container(
    container_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.containers.retrieve(project, container_id)


@router.delete("/{container_id}")
async def delete_container(
    container_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.containers.delete(project, container_id)


@router.post("/{container_id}/files")
async def create_container_file(
    container_id: str, request: Request, services: ServicesDep, project: Project
) -> dict[str, Any]:
    """Multipart with a `file` part (or a `file_id` field), or JSON {"file_id": ...} naming an
    uploaded File."""
    containers = services.containers
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        limit = services.settings.max_upload_bytes
        form = await request.form()  # file parts stream to disk; other fields stay small
        upload = form.get("file")
        file_id = form.get("file_id")
        if not isinstance(upload, UploadFile) and isinstance(file_id, str):
            return await containers.copy_file(project, container_id, file_id)
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        try:
            data = await upload.read(limit + 1)
        finally:
            await upload.close()
        if len(data) > limit:
            raise QuotaExceeded(f"File is larger than the {limit}-byte upload limit.")
        return await containers.add_file(project, container_id, upload.filename, data)
    try:
        body = ContainerFileCreate.model_validate_json(await request.body())
    except ValueError:
        raise InvalidRequest(
            "Send the file as multipart/form-data (part 'file') or JSON {\"file_id\": ...}.",
            param="file_id",
        ) from None
    return await containers.copy_file(project, container_id, body.file_id)


@router.get("/{container_id}/files")
async def list_container_files(
    container_id: str,
    services: ServicesDep,
    project: Project,
    after: str | None = None,
    limit: int = 20,
    order: str = "desc",
) -> dict[str, Any]:
    return await services.containers.list_files(project, container_id, after, limit, order)


@router.get("/{container_id}/files/{file_id}")
async def retrieve_container_file(
    container_id: str, file_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.containers.retrieve_file(project, container_id, file_id)


@router.get("/{container_id}/files/{file_id}/content")
async def container_file_content(
    container_id: str, file_id: str, services: ServicesDep, project: Project
) -> StreamingResponse:
    """The file's bytes, streamed in chunks (never held whole: a sparse file reads as its full
    size); a 413 if it is over max_download_bytes."""
    found, reader = await services.containers.open_file_content(project, container_id, file_id)
    name = found.path.rsplit("/", 1)[-1]
    return StreamingResponse(
        reader.chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(name),
            "Content-Length": str(reader.size),
        },
        background=BackgroundTask(reader.close),  # if the stream never started
    )


@router.delete("/{container_id}/files/{file_id}")
async def delete_container_file(
    container_id: str, file_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    return await services.containers.delete_file(project, container_id, file_id)


@router.post("/{container_id}/snapshots")
async def create_snapshot(
    container_id: str, services: ServicesDep, project: Project
) -> dict[str, Any]:
    """An extension: the container's state as a File of purpose "snapshot"."""
    return await services.containers.snapshot(project, container_id)


@router.post("/{container_id}/execute", response_model=None)
async def execute(
    container_id: str, body: ExecuteRequest, services: ServicesDep, project: Project
) -> JSONResponse | StreamingResponse:
    """Run code in the container: the whole result, or (stream) its events as they happen."""
    containers = services.containers
    if not body.stream:
        # JSONResponse: the result is plain JSON already (FastAPI would walk it again).
        return JSONResponse(await containers.run(project, container_id, body.code, body.timeout))
    events = await containers.execute(project, container_id, body.code, body.timeout)
    return execution_stream(events, services.settings.sse_heartbeat_seconds)


@router.post("/{container_id}/interrupt")
async def interrupt(container_id: str, services: ServicesDep, project: Project) -> dict[str, Any]:
    return await services.containers.interrupt(project, container_id)


def content_disposition(name: str) -> str:
    """An attachment header for any file name: an ASCII fallback, and the UTF-8 name (RFC 6266
    and 5987), since header values are Latin-1 on the wire."""
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"

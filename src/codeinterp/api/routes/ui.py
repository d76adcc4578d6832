"""The trace viewer, /ui: server-made pages (no script runs in them) over the trace store.

    GET  /ui                     recent traces of the viewer's project, filtered, failed first
    GET  /ui/traces/{id}         one trace: prompt, model turns, code beside its output, waterfall
    GET  /ui/login, POST         log in with an API key (ui_session.py); POST /ui/logout
    GET  /ui/files/{id}          a file a run made (Files API), linked from a trace page
    GET  /ui/containers/{c}/files/{id}   a file of a live container, the same way

Only images are served inline (other files are attachments), and every page forbids scripts,
frames and foreign resources (Content-Security-Policy), so nothing the sandboxed code wrote can
run in the viewer's origin.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.templating import Jinja2Templates
from starlette.background import BackgroundTask

from codeinterp.errors import CodeInterpError, NotFound, Unauthorized
from codeinterp.services.traces import KIND_NAMES, STATUSES
from codeinterp.store import TraceFilter

from .. import trace_view, ui_session
from ..deps import ServicesDep
from .containers import content_disposition

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=os.path.join(os.path.dirname(__file__), "..", "templates"))
templates.env.globals["code_css"] = trace_view.code_css
templates.env.globals["kind_names"] = KIND_NAMES
templates.env.globals["statuses"] = STATUSES
templates.env.filters["utc"] = lambda seconds: time.strftime(
    "%Y-%m-%d %H:%M:%S", time.gmtime(seconds)
)

PAGE_SIZE = 50
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}
# The list's time windows: (seconds, how it is named); "all" is everything kept.
WINDOWS = {
    "1h": (3600, "last hour"), "24h": (86400, "last 24 hours"), "7d": (7 * 86400, "last 7 days"),
}  # fmt: skip


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", status_code=303)


def _viewer(request: Request) -> str | None:
    try:
        return ui_session.viewer_project(request)
    except Unauthorized:
        return None


def _store_off(request: Request) -> HTMLResponse:
    return _page(
        request,
        "message.html",
        503,
        title="Trace store off",
        message="This server keeps no traces: it runs with CODEINTERP_TRACE_STORE=false.",
    )


@router.get("", response_class=HTMLResponse)
async def trace_list(
    request: Request,
    services: ServicesDep,
    kind: str | None = None,
    status: str | None = None,
    thread_id: str | None = None,
    assistant_id: str | None = None,
    container_id: str | None = None,
    item_id: str | None = None,
    window: str = "all",
    sort: str = "errors",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    project = _viewer(request)
    if project is None:
        return _login_redirect(request)
    if services.traces is None:
        return _store_off(request)
    given = {
        "kind": kind, "status": status, "thread_id": thread_id, "assistant_id": assistant_id,
        "container_id": container_id, "item_id": item_id,
    }  # fmt: skip
    chosen: dict[str, Any] = {k: v.strip() for k, v in given.items() if v and v.strip()}
    since = int(time.time()) - WINDOWS[window][0] if window in WINDOWS else None
    traces, more = await services.traces.list(
        project,
        TraceFilter(**chosen, since=since),
        limit=PAGE_SIZE,
        offset=offset,
        errors_first=sort != "newest",
    )
    query = {**chosen, "window": window, "sort": sort}
    return _page(
        request,
        "list.html",
        traces=traces,
        chosen=chosen,
        window=window,
        windows={name: shown for name, (_, shown) in WINDOWS.items()},
        sort=sort,
        offset=offset,
        next_url=f"/ui?{urlencode({**query, 'offset': offset + PAGE_SIZE})}" if more else None,
        previous_url=(
            f"/ui?{urlencode({**query, 'offset': max(offset - PAGE_SIZE, 0)})}" if offset else None
        ),
        filter_url=lambda name, value: f"/ui?{urlencode({**query, name: value})}",
        project=project,
        logged_in=bool(request.app.state.key_projects),
    )


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
async def trace_page(trace_id: str, request: Request, services: ServicesDep) -> Response:
    project = _viewer(request)
    if project is None:
        return _login_redirect(request)
    if services.traces is None:
        return _store_off(request)
    try:
        record = await services.traces.get(project, trace_id)
    except NotFound:
        return _page(
            request, "message.html", 404, title="No such trace",
            message=f"No trace found with id '{trace_id}' in this project.",
        )  # fmt: skip
    return _page(
        request,
        "trace.html",
        view=trace_view.build(record),
        project=project,
        logged_in=bool(request.app.state.key_projects),
    )


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/ui") -> Response:
    return _page(request, "login.html", next=_local(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def log_in(
    request: Request, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/ui"
) -> Response:
    try:
        token = ui_session.login(request.app.state.key_projects, key.strip())
    except Unauthorized as exc:
        return _page(request, "login.html", 401, next=_local(next), error=str(exc))
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        ui_session.COOKIE,
        token,
        max_age=ui_session.MAX_AGE_SECONDS,
        path="/ui",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def log_out() -> RedirectResponse:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(ui_session.COOKIE, path="/ui")
    return response


@router.get("/files/{file_id}")
async def run_file(file_id: str, request: Request, services: ServicesDep) -> Response:
    """A file a run made (Files API): an image shown, anything else downloaded."""
    project = _viewer(request)
    if project is None:
        return Response(status_code=401)
    try:
        filename, path = await services.files.content(project, file_id)
    except NotFound:
        return Response(status_code=404)
    media = _image_type(filename)
    headers = {**SECURITY_HEADERS, **({} if media else _attachment(filename))}
    return FileResponse(path, media_type=media or "application/octet-stream", headers=headers)


@router.get("/containers/{container_id}/files/{file_id}")
async def container_file(
    container_id: str, file_id: str, request: Request, services: ServicesDep
) -> Response:
    """A file of a live container: an image shown, anything else downloaded."""
    project = _viewer(request)
    if project is None:
        return Response(status_code=401)
    try:
        # peek: looking at a trace must not keep its container alive, nor expire it
        found, reader = await services.containers.peek_file_content(
            project, container_id, file_id, services.settings.max_download_bytes
        )
    except CodeInterpError:  # gone with its container, too large
        return Response(status_code=404)
    name = found.path.rsplit("/", 1)[-1]
    media = _image_type(name)
    headers = {**SECURITY_HEADERS, **({} if media else _attachment(name))}
    return StreamingResponse(
        reader.chunks(),
        media_type=media or "application/octet-stream",
        headers={**headers, "Content-Length": str(reader.size)},
        background=BackgroundTask(reader.close),
    )


def _attachment(name: str) -> dict[str, str]:
    # Never shown in the viewer's origin: what sandboxed code wrote could be a page of its own.
    return {"Content-Disposition": content_disposition(name)}


def _image_type(name: str) -> str | None:
    return IMAGE_TYPES.get(os.path.splitext(name)[1].lower())


def _local(target: str) -> str:
    """Only a path of this viewer: a login never sends anyone to another site."""
    return target if target.startswith("/ui") and not target.startswith("//") else "/ui"

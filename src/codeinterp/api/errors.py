"""One table from our errors to OpenAI's error envelope and HTTP status codes.

`{"error": {"message", "type", "param", "code"}}`. The openai SDK retries 409s and 5xx, so state
conflicts (an active run, a run that cannot be cancelled) are 400s, as OpenAI's own are.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from codeinterp.errors import (
    CodeInterpError,
    Conflict,
    ContainerExpired,
    InvalidRequest,
    LoopLimitExceeded,
    NotFound,
    QuotaExceeded,
    SandboxError,
    Unauthorized,
    UpstreamError,
)

log = logging.getLogger("codeinterp.api")

# FastAPI's detail for a body its JSON parser gave up on for any reason but a syntax error
FASTAPI_BODY_ERROR = "There was an error parsing the body"

# exception class -> (HTTP status, error type, error code)
ERROR_TABLE: list[tuple[type[CodeInterpError], int, str, str | None]] = [
    (Unauthorized, 401, "invalid_request_error", "invalid_api_key"),
    (NotFound, 404, "invalid_request_error", None),
    (QuotaExceeded, 413, "invalid_request_error", "file_too_large"),
    (Conflict, 400, "invalid_request_error", None),
    (ContainerExpired, 400, "invalid_request_error", "container_expired"),
    (InvalidRequest, 400, "invalid_request_error", None),
    # A 4xx: the client's SDK must not retry a whole model loop that is bound to fail again.
    (LoopLimitExceeded, 400, "invalid_request_error", "loop_limit_exceeded"),
    (UpstreamError, 502, "server_error", "upstream_error"),
    (SandboxError, 500, "server_error", "sandbox_error"),
]


def envelope(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: CodeInterpError) -> JSONResponse:
    for cls, status, type_, code in ERROR_TABLE:
        if isinstance(exc, cls):
            param = getattr(exc, "param", None)
            return JSONResponse(envelope(str(exc), type_, param, code), status_code=status)
    return JSONResponse(envelope(str(exc), "server_error"), status_code=500)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request body.", None
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        return f"Missing required parameter: '{param}'.", param
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request.", None
    return f"Invalid value for '{param}': {message}." if param else message, param


def install(app: FastAPI) -> None:
    """Route every failure through the envelope."""

    @app.exception_handler(CodeInterpError)
    async def _ours(request: Request, exc: CodeInterpError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(envelope(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        elif exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
            message = "We could not parse the JSON body of your request."
        else:
            message = str(exc.detail)
        return JSONResponse(envelope(message, "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            envelope("The server had an error while processing your request.", "server_error"),
            status_code=500,
        )

"""One table from our errors to OpenAI's error envelope and HTTP status codes.

`{"error": {"message", "type", "param", "code"}}`. The openai SDK retries 409s and 5xx, so state
conflicts (an active run, a run that cannot be cancelled) are 400s, as OpenAI's own are.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from codeinterp.errors import (
    CodeInterpError,
    Conflict,
    ContainerExpired,
    EgressUnavailable,
    InvalidRequest,
    LimitReached,
    LoopLimitExceeded,
    NotFound,
    Overloaded,
    QuotaExceeded,
    SandboxError,
    StorageBusy,
    StorageFull,
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
    # Both say when to come back (Retry-After), which the openai SDK honours when it retries.
    (LimitReached, 429, "rate_limit_exceeded", "limit_reached"),
    (StorageBusy, 503, "server_error", "storage_busy"),
    (Overloaded, 503, "server_error", "server_overloaded"),
    (UpstreamError, 502, "server_error", "upstream_error"),
    (EgressUnavailable, 503, "server_error", "egress_unavailable"),
    (StorageFull, 507, "server_error", "storage_full"),
    (SandboxError, 500, "server_error", "sandbox_error"),
]


def envelope(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_body(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP status and error envelope of any failure (one we did not mean: a 500 that
    says no more than that)."""
    if isinstance(exc, CodeInterpError):
        for cls, status, type_, code in ERROR_TABLE:
            if isinstance(exc, cls):
                return status, envelope(str(exc), type_, getattr(exc, "param", None), code)
        return 500, envelope(str(exc), "server_error")
    return 500, envelope("The server had an error while processing your request.", "server_error")


def error_response(exc: CodeInterpError) -> JSONResponse:
    status, body = error_body(exc)
    headers = retry_headers(exc.retry_after) if isinstance(exc, Overloaded) else None
    return JSONResponse(body, status_code=status, headers=headers)


def retry_headers(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds (RFC 9110), and retry-after-ms, which the openai SDK
    prefers when both are there."""
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, round(seconds * 1000))),
    }


# The labels pydantic puts in an error's location for the member of a union it tried ("str",
# "list[...]", "function-after[...]"): not fields of the request, so never part of a `param`.
_UNION_LABELS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "bytes"})


def _is_union_label(part: str) -> bool:
    return "[" in part or part in _UNION_LABELS


def _param(location: tuple[Any, ...], body: Any) -> tuple[str | None, int]:
    """OpenAI's name for the field an error is about, such as `content[0].image_url.detail`,
    and how many steps of the location the request itself has (its depth in the request).

    pydantic's location also holds the union members it tried and the tags of tagged unions;
    walking the request along it tells them from fields: a tag is the object's own `type`
    value (and some step follows it), a union member's label is no key of the object. A last
    step the object lacks is a missing field, and named."""
    if not location:
        return None, 0
    source, *steps = location
    if source != "body":
        names = [str(step) for step in steps if not _is_union_label(str(step))]
        return ".".join(names) or None, len(names)
    node, parts, depth, tag_seen = body, [], 0, None
    for index, step in enumerate(steps):
        last = index == len(steps) - 1
        if isinstance(step, int) and isinstance(node, list) and 0 <= step < len(node):
            parts.append(f"[{step}]")
            node, depth = node[step], depth + 1
        elif not isinstance(step, str) or _is_union_label(step):
            continue
        elif (
            not last
            and isinstance(node, dict)
            and step == node.get("type")
            and tag_seen is not node
        ):
            tag_seen = node  # a tagged union's tag (never last), once per object
        elif isinstance(node, dict) and step in node:
            parts.append(f".{step}" if parts else step)
            node, depth = node[step], depth + 1
        elif last and isinstance(node, dict | None):
            parts.append(f".{step}" if parts else step)
    return "".join(parts) or None, depth


# What a union member that wants a scalar says of an object or array it was given.
_CONTAINER_TYPES = ("dict_type", "list_type", "model_type", "model_attributes_type")


def _same_kind(error: Any) -> bool:
    """False for the error of a union member that wants a scalar where the request has an
    object or array (`"auto"` against `{"type": ...}`): another member's error says more."""
    kind = str(error.get("type", ""))
    scalar = kind == "literal_error" or (kind.endswith("_type") and kind not in _CONTAINER_TYPES)
    return not (scalar and isinstance(error.get("input"), dict | list))


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The message and `param` of the error that reaches deepest into the request (of a union,
    the member the request meant), in OpenAI's words."""
    errors = exc.errors()
    if not errors:
        return "Invalid request body.", None
    body = getattr(exc, "body", None)
    located = [(error, *_param(tuple(error.get("loc", ())), body)) for error in errors]
    # the first of the deepest, and of those one from a union member of the input's own kind
    first, param, _ = max(located, key=lambda item: (item[2], _same_kind(item[0])))
    kind = str(first.get("type", ""))
    message = str(first.get("msg", "invalid value"))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        param = f"{param}.type" if param else "type"  # the tag our unions go by
    if kind == "json_invalid" or (kind == "missing" and param is None):  # none, or no JSON
        return "We could not parse the JSON body of your request.", None
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param
    if not param:
        return message, None
    if kind.endswith("_type") or kind == "null_not_allowed":
        return f"Invalid type for '{param}': {message}.", param
    return f"Invalid value for '{param}': {message}.", param


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

"""Checks shared by the contract tests: OpenAI's error envelope and a raw HTTP client.

The ``openai`` SDK cannot send some bad requests (a missing required argument is a TypeError
before anything goes out), so those go through ``httpx2``, the HTTP library the SDK itself uses.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai

from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream

ENVELOPE_KEYS = {"message", "type", "param", "code"}


def server_env(upstream: ScriptedUpstream, **settings: object) -> dict[str, str]:
    """A test server's environment: the scripted upstream as its model, one warm session, quick
    polls, and `settings` as CODEINTERP_<NAME> variables (pool_size=2 -> CODEINTERP_POOL_SIZE)."""
    env = {
        "CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url,
        "CODEINTERP_UPSTREAM_API_KEY": "sk-upstream-test",
        "CODEINTERP_POOL_SIZE": "1",
        "CODEINTERP_POLL_AFTER_MS": "20",
    }
    env.update({f"CODEINTERP_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def raw_client(server: ServerProcess, api_key: str | None = "local") -> httpx2.Client:
    """An ``httpx2.Client`` on the server's ``/v1`` with the headers the SDK sends."""
    headers = {"OpenAI-Beta": "assistants=v2"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx2.Client(base_url=server.base_url, headers=headers, timeout=60.0)


def assert_request_id(response: httpx2.Response) -> None:
    """The response names its request the way OpenAI does: ``x-request-id: req_...``."""
    request_id = response.headers.get("x-request-id")
    assert request_id is not None, f"no x-request-id on {response.status_code} {response.text!r}"
    assert request_id.startswith("req_") and len(request_id) > len("req_"), request_id


def assert_envelope(
    response: httpx2.Response,
    status: int,
    *,
    type_: str = "invalid_request_error",
    param: str | type[Any] | None = Any,
) -> dict[str, Any]:
    """``response`` is an OpenAI error envelope with ``status``; returns its ``error`` object.

    ``param`` is checked when given (``Any``, the default, accepts every value).
    """
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.headers.get("content-type")
    )
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) >= ENVELOPE_KEYS, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert error["type"] == type_, error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    if param is not Any:
        assert error["param"] == param, error
    assert_request_id(response)
    return error


def assert_sdk_error(
    exc: openai.APIStatusError,
    status: int,
    *,
    type_: str = "invalid_request_error",
    param: str | type[Any] | None = Any,
) -> dict[str, Any]:
    """The SDK exception carries a full envelope and the request id; returns ``error``."""
    assert exc.status_code == status
    assert exc.request_id is not None and exc.request_id.startswith("req_"), exc.request_id
    error = assert_envelope(exc.response, status, type_=type_, param=param)
    assert exc.message == f"Error code: {status} - {error['message']}"
    assert exc.type == error["type"] and exc.param == error["param"]
    return error

"""Bad requests get OpenAI's error envelope and status, and never damage what is stored.

Every resource answers a wrong id with a 404, a malformed or incomplete request with a 400 that
names the parameter, an oversized one with a 413; each response carries an ``x-request-id``.
"""

from __future__ import annotations

import json
import secrets
import select
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.contract.helpers import (
    assert_envelope,
    assert_request_id,
    assert_sdk_error,
    raw_client,
)
from tests.support.server import ServerProcess
from tests.support.upstream import Delay, ScriptedUpstream, Text

pytestmark = pytest.mark.root

MODEL = "gpt-test"
JSON_LIMIT = 32 * 1024 * 1024
MISSING = {
    "assistant": "asst_" + "0" * 24,
    "thread": "thread_" + "0" * 24,
    "message": "msg_" + "0" * 24,
    "run": "run_" + "0" * 24,
    "step": "step_" + "0" * 24,
    "file": "file-" + "0" * 24,
}
SEVENTEEN = {f"key{i}": "value" for i in range(17)}
# What no test here may change (the project-wide lists may grow: other tests create objects).
THREAD_SCOPED = (
    "assistant",
    "thread",
    "message",
    "messages",
    "file",
    "file_content",
    "run",
    "runs",
    "step",
    "steps",
)


@dataclass(frozen=True)
class World:
    """Objects made before any bad request, and their wire form at that time."""

    assistant: str
    thread: str
    message: str
    file: str
    file_bytes: bytes
    run: str
    step: str
    snapshot: dict[str, Any]

    @property
    def ids(self) -> dict[str, str]:
        names = ("assistant", "thread", "message", "file", "run", "step")
        return {name: getattr(self, name) for name in names}


def _snapshot(server: ServerProcess, ids: dict[str, str]) -> dict[str, Any]:
    """The wire form of each object named in ``ids`` (and the file's bytes), over raw HTTP."""
    thread = ids["thread"]
    paths = {
        "assistant": f"/assistants/{ids['assistant']}",
        "thread": f"/threads/{thread}",
        "message": f"/threads/{thread}/messages/{ids['message']}",
        "messages": f"/threads/{thread}/messages?order=asc",
        "file": f"/files/{ids['file']}",
        "run": f"/threads/{thread}/runs/{ids['run']}",
        "runs": f"/threads/{thread}/runs?order=asc",
        "step": f"/threads/{thread}/runs/{ids['run']}/steps/{ids['step']}",
        "steps": f"/threads/{thread}/runs/{ids['run']}/steps?order=asc",
        "assistants": "/assistants?order=asc",
        "files": "/files?order=asc",
    }
    snapshot: dict[str, Any] = {}
    with raw_client(server) as http:
        for name, path in paths.items():
            response = http.get(path)
            assert response.status_code == 200, (path, response.text)
            snapshot[name] = response.json()
        content = http.get(f"/files/{ids['file']}/content")
        assert content.status_code == 200, content.text
        snapshot["file_content"] = content.content
    return snapshot


@pytest.fixture(scope="module")
def world(server: ServerProcess, upstream: ScriptedUpstream) -> World:
    """An assistant, a file, a thread with a message and one completed run, made up front."""
    upstream.reset([Text("hello")])
    data = b"keep these bytes\n" * 10
    with server.client() as sdk:
        assistant = sdk.beta.assistants.create(
            model=MODEL,
            name="Keeper",
            instructions="Be brief.",
            tools=[{"type": "code_interpreter"}],
            metadata={"owner": "bad-input"},
            temperature=0.5,
        )
        file = sdk.files.create(file=("keep.txt", data), purpose="assistants")
        thread = sdk.beta.threads.create(metadata={"kind": "keeper"})
        message = sdk.beta.threads.messages.create(
            thread.id, role="user", content="Say hello.", metadata={"n": "1"}
        )
        run = sdk.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20
        )
        assert run.status == "completed", run.last_error
        steps = sdk.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
        assert steps, "the completed run has no steps"
    upstream.check()
    ids = {
        "assistant": assistant.id,
        "thread": thread.id,
        "message": message.id,
        "file": file.id,
        "run": run.id,
        "step": steps[0].id,
    }
    return World(**ids, file_bytes=data, snapshot=_snapshot(server, ids))


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx2.Client]:
    with raw_client(server) as client:
        yield client


# --------------------------------------------------------------------------- wrong ids

# (description, call, ids the message may name: the wrong one, or the object not found)
NotFoundCase = tuple[str, Callable[[openai.OpenAI, World], object], Callable[[World], list[str]]]

NOT_FOUND_CASES: list[NotFoundCase] = [
    (
        "retrieve assistant",
        lambda c, w: c.beta.assistants.retrieve(MISSING["assistant"]),
        lambda w: [MISSING["assistant"]],
    ),
    (
        "modify assistant",
        lambda c, w: c.beta.assistants.update(MISSING["assistant"], name="x"),
        lambda w: [MISSING["assistant"]],
    ),
    (
        "delete assistant",
        lambda c, w: c.beta.assistants.delete(MISSING["assistant"]),
        lambda w: [MISSING["assistant"]],
    ),
    (
        "retrieve thread",
        lambda c, w: c.beta.threads.retrieve(MISSING["thread"]),
        lambda w: [MISSING["thread"]],
    ),
    (
        "modify thread",
        lambda c, w: c.beta.threads.update(MISSING["thread"], metadata={"a": "b"}),
        lambda w: [MISSING["thread"]],
    ),
    (
        "delete thread",
        lambda c, w: c.beta.threads.delete(MISSING["thread"]),
        lambda w: [MISSING["thread"]],
    ),
    (
        "create message in a missing thread",
        lambda c, w: c.beta.threads.messages.create(MISSING["thread"], role="user", content="x"),
        lambda w: [MISSING["thread"]],
    ),
    (
        "list messages of a missing thread",
        lambda c, w: c.beta.threads.messages.list(MISSING["thread"]),
        lambda w: [MISSING["thread"]],
    ),
    (
        "retrieve message",
        lambda c, w: c.beta.threads.messages.retrieve(MISSING["message"], thread_id=w.thread),
        lambda w: [MISSING["message"]],
    ),
    (
        "modify message",
        lambda c, w: c.beta.threads.messages.update(
            MISSING["message"], thread_id=w.thread, metadata={"a": "b"}
        ),
        lambda w: [MISSING["message"]],
    ),
    (
        "delete message",
        lambda c, w: c.beta.threads.messages.delete(MISSING["message"], thread_id=w.thread),
        lambda w: [MISSING["message"]],
    ),
    (
        "retrieve a message through a missing thread",
        lambda c, w: c.beta.threads.messages.retrieve(w.message, thread_id=MISSING["thread"]),
        lambda w: [MISSING["thread"], w.message],
    ),
    (
        "create run in a missing thread",
        lambda c, w: c.beta.threads.runs.create(MISSING["thread"], assistant_id=w.assistant),
        lambda w: [MISSING["thread"]],
    ),
    (
        "create run with a missing assistant",
        lambda c, w: c.beta.threads.runs.create(w.thread, assistant_id=MISSING["assistant"]),
        lambda w: [MISSING["assistant"]],
    ),
    (
        "create thread and run with a missing assistant",
        lambda c, w: c.beta.threads.create_and_run(assistant_id=MISSING["assistant"]),
        lambda w: [MISSING["assistant"]],
    ),
    (
        "list runs of a missing thread",
        lambda c, w: c.beta.threads.runs.list(MISSING["thread"]),
        lambda w: [MISSING["thread"]],
    ),
    (
        "retrieve run",
        lambda c, w: c.beta.threads.runs.retrieve(MISSING["run"], thread_id=w.thread),
        lambda w: [MISSING["run"]],
    ),
    (
        "modify run",
        lambda c, w: c.beta.threads.runs.update(
            MISSING["run"], thread_id=w.thread, metadata={"a": "b"}
        ),
        lambda w: [MISSING["run"]],
    ),
    (
        "cancel run",
        lambda c, w: c.beta.threads.runs.cancel(MISSING["run"], thread_id=w.thread),
        lambda w: [MISSING["run"]],
    ),
    (
        "submit tool outputs to a missing run",
        lambda c, w: c.beta.threads.runs.submit_tool_outputs(
            MISSING["run"], thread_id=w.thread, tool_outputs=[{"tool_call_id": "call_x"}]
        ),
        lambda w: [MISSING["run"]],
    ),
    (
        "retrieve a run through a missing thread",
        lambda c, w: c.beta.threads.runs.retrieve(w.run, thread_id=MISSING["thread"]),
        lambda w: [MISSING["thread"], w.run],
    ),
    (
        "list steps of a missing run",
        lambda c, w: c.beta.threads.runs.steps.list(MISSING["run"], thread_id=w.thread),
        lambda w: [MISSING["run"]],
    ),
    (
        "retrieve step",
        lambda c, w: c.beta.threads.runs.steps.retrieve(
            MISSING["step"], thread_id=w.thread, run_id=w.run
        ),
        lambda w: [MISSING["step"]],
    ),
    (
        "retrieve a step through a missing run",
        lambda c, w: c.beta.threads.runs.steps.retrieve(
            w.step, thread_id=w.thread, run_id=MISSING["run"]
        ),
        lambda w: [MISSING["run"], w.step],
    ),
    (
        "retrieve file",
        lambda c, w: c.files.retrieve(MISSING["file"]),
        lambda w: [MISSING["file"]],
    ),
    (
        "delete file",
        lambda c, w: c.files.delete(MISSING["file"]),
        lambda w: [MISSING["file"]],
    ),
    (
        "file content",
        lambda c, w: c.files.content(MISSING["file"]),
        lambda w: [MISSING["file"]],
    ),
]


@pytest.mark.parametrize(
    ("call", "named"),
    [pytest.param(call, named, id=name) for name, call, named in NOT_FOUND_CASES],
)
def test_wrong_id_is_not_found(
    client: openai.OpenAI,
    world: World,
    call: Callable[[openai.OpenAI, World], object],
    named: Callable[[World], list[str]],
) -> None:
    """A wrong id on any resource is a 404 envelope whose message names the id not found."""
    with pytest.raises(openai.NotFoundError) as caught:
        call(client, world)
    error = assert_sdk_error(caught.value, 404)
    assert any(object_id in error["message"] for object_id in named(world)), error


# --------------------------------------------------------------------------- wrong types


BadCall = Callable[[openai.OpenAI, World], object]

BAD_VALUE_CASES: list[tuple[str, BadCall, str]] = [
    (
        "assistant temperature a string",
        lambda c, w: c.beta.assistants.create(model=MODEL, temperature="hot"),  # type: ignore[arg-type]
        "temperature",
    ),
    (
        "assistant temperature out of range",
        lambda c, w: c.beta.assistants.create(model=MODEL, temperature=7),
        "temperature",
    ),
    (
        "assistant tool of an unknown type",
        lambda c, w: c.beta.assistants.create(model=MODEL, tools=[{"type": "nope"}]),  # type: ignore[list-item]
        "tools",
    ),
    (
        "assistant metadata with 17 keys",
        lambda c, w: c.beta.assistants.create(model=MODEL, metadata=SEVENTEEN),
        "metadata",
    ),
    (
        "assistant metadata with a number value",
        lambda c, w: c.beta.assistants.create(model=MODEL, metadata={"n": 1}),  # type: ignore[dict-item]
        "metadata",
    ),
    (
        "assistant name too long",
        lambda c, w: c.beta.assistants.create(model=MODEL, name="n" * 257),
        "name",
    ),
    (
        "thread metadata with 17 keys",
        lambda c, w: c.beta.threads.create(metadata=SEVENTEEN),
        "metadata",
    ),
    (
        "message metadata with a number value",
        lambda c, w: c.beta.threads.messages.create(
            w.thread,
            role="user",
            content="x",
            metadata={"n": 1},  # type: ignore[dict-item]
        ),
        "metadata",
    ),
    (
        "message role system",
        lambda c, w: c.beta.threads.messages.create(w.thread, role="system", content="x"),  # type: ignore[arg-type]
        "role",
    ),
    (
        "run temperature a string",
        lambda c, w: c.beta.threads.runs.create(
            w.thread,
            assistant_id=w.assistant,
            temperature="hot",  # type: ignore[arg-type]
        ),
        "temperature",
    ),
    (
        "run tool of an unknown type",
        lambda c, w: c.beta.threads.runs.create(
            w.thread,
            assistant_id=w.assistant,
            tools=[{"type": "nope"}],  # type: ignore[list-item]
        ),
        "tools",
    ),
    (
        "run metadata with 17 keys",
        lambda c, w: c.beta.threads.runs.create(
            w.thread, assistant_id=w.assistant, metadata=SEVENTEEN
        ),
        "metadata",
    ),
]


@pytest.mark.parametrize(
    ("call", "param"), [pytest.param(call, param, id=name) for name, call, param in BAD_VALUE_CASES]
)
def test_wrong_value_is_bad_request(
    client: openai.OpenAI, world: World, call: BadCall, param: str
) -> None:
    """A body value of the wrong type or out of range is a 400 that names the parameter."""
    with pytest.raises(openai.BadRequestError) as caught:
        call(client, world)
    error = assert_sdk_error(caught.value, 400)
    assert param in error["message"], error
    assert error["param"] is not None and error["param"].startswith(param), error


LIST_CALLS: dict[str, Callable[[openai.OpenAI, World, dict[str, Any]], object]] = {
    "assistants": lambda c, w, q: c.beta.assistants.list(**q),
    "messages": lambda c, w, q: c.beta.threads.messages.list(w.thread, **q),
    "runs": lambda c, w, q: c.beta.threads.runs.list(w.thread, **q),
    "steps": lambda c, w, q: c.beta.threads.runs.steps.list(w.run, thread_id=w.thread, **q),
    "files": lambda c, w, q: c.files.list(**q),
}
BAD_QUERIES: list[tuple[str, str, dict[str, Any]]] = [
    *[(name, "limit", {"limit": 0}) for name in LIST_CALLS],
    *[(name, "limit", {"limit": 1000}) for name in LIST_CALLS if name != "files"],
    ("files", "limit", {"limit": 10_001}),
    *[(name, "order", {"order": "sideways"}) for name in LIST_CALLS],
]


@pytest.mark.parametrize(
    ("resource", "param", "query"),
    [
        pytest.param(resource, param, query, id=f"{resource}-{param}={next(iter(query.values()))}")
        for resource, param, query in BAD_QUERIES
    ],
)
def test_bad_list_query_is_bad_request(
    client: openai.OpenAI, world: World, resource: str, param: str, query: dict[str, Any]
) -> None:
    """A limit outside the list's range or an unknown order is a 400 naming the parameter."""
    with pytest.raises(openai.BadRequestError) as caught:
        LIST_CALLS[resource](client, world, query)
    error = assert_sdk_error(caught.value, 400, param=param)
    assert param in error["message"], error


def test_non_integer_limit_is_bad_request(http: httpx2.Client, world: World) -> None:
    """A limit that is not a number is a 400 naming ``limit``, not a validation 422."""
    error = assert_envelope(http.get("/assistants", params={"limit": "ten"}), 400)
    assert error["param"] == "limit" and "limit" in error["message"], error


# --------------------------------------------------------------------------- missing fields


def test_missing_required_fields_are_named(http: httpx2.Client, world: World) -> None:
    """A body without a required field is a 400 whose message and param name that field."""
    thread, run = world.thread, world.run
    cases = [
        ("/assistants", {"name": "no model"}, "model"),
        (f"/threads/{thread}/messages", {"content": "no role"}, "role"),
        (f"/threads/{thread}/messages", {"role": "user"}, "content"),
        (f"/threads/{thread}/runs", {"instructions": "no assistant"}, "assistant_id"),
        ("/threads/runs", {"thread": {}}, "assistant_id"),
        (f"/threads/{thread}/runs/{run}/submit_tool_outputs", {}, "tool_outputs"),
    ]
    for path, body, field in cases:
        error = assert_envelope(http.post(path, json=body), 400)
        assert error["param"] == field, (path, error)
        assert field in error["message"], (path, error)


@pytest.mark.parametrize(
    "path",
    [
        "/assistants",
        "/assistants/{assistant}",
        "/threads",
        "/threads/{thread}/messages",
        "/threads/{thread}/runs",
    ],
)
def test_malformed_json_is_bad_request(http: httpx2.Client, world: World, path: str) -> None:
    """A body that is not valid JSON is a 400 envelope that says so."""
    url = path.format(assistant=world.assistant, thread=world.thread)
    response = http.post(
        url, content=b'{"model": "gpt-test", "name": ', headers={"content-type": "application/json"}
    )
    error = assert_envelope(response, 400)
    assert "json" in error["message"].lower(), error


def test_json_that_is_not_an_object_is_bad_request(http: httpx2.Client, world: World) -> None:
    """A JSON body that is an array instead of an object is a 400 envelope."""
    assert_envelope(http.post("/assistants", json=[{"model": MODEL}]), 400)


# Every route that reads a JSON body (the chat route relays bodies without the code interpreter
# to the model; /mcp is the MCP door's JSON-RPC).
JSON_ROUTES = [
    "/v1/assistants",
    "/v1/assistants/{assistant}",
    "/v1/threads",
    "/v1/threads/{thread}",
    "/v1/threads/{thread}/messages",
    "/v1/threads/{thread}/messages/{message}",
    "/v1/threads/runs",
    "/v1/threads/{thread}/runs",
    "/v1/threads/{thread}/runs/{run}",
    "/v1/threads/{thread}/runs/{run}/submit_tool_outputs",
    "/v1/containers",
    "/v1/containers/{container}/files",
    "/v1/containers/{container}/execute",
    "/v1/responses",
    "/v1/chat/completions",
    "/mcp",
]
MAX_JSON_DEPTH = 128  # the documented limit on nesting


def _nested(depth: int) -> bytes:
    """A valid chat request whose `metadata` holds lists nested `depth` deep in all."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return (
        '{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], '
        f'"metadata": {{"deep": {inner}}}}}'
    ).encode()


@pytest.fixture(scope="module")
def scratch_container(server: ServerProcess) -> str:
    with server.client() as sdk:
        return sdk.containers.create(name="nested-json").id


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 50_000, id="50000-open-brackets"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="50000-nested-objects"),
        pytest.param(_nested(MAX_JSON_DEPTH + 1), id="just-over-the-limit"),
        pytest.param(b'{"model": "gpt-test", "messages": [', id="truncated"),
    ],
)
def test_deeply_nested_or_invalid_json_is_bad_request(
    server: ServerProcess,
    upstream: ScriptedUpstream,
    world: World,
    scratch_container: str,
    path: str,
    body: bytes,
) -> None:
    """Deep nesting (the classic RecursionError) or broken JSON on any JSON route is OpenAI's
    400 envelope, never a 500, and reaches neither the model nor the store."""
    upstream.reset()
    url = server.url + path.format(container=scratch_container, **world.ids)
    headers = {
        "Authorization": "Bearer local",
        "OpenAI-Beta": "assistants=v2",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    with httpx2.Client(timeout=60) as raw:
        response = raw.post(url, content=body, headers=headers)
    error = assert_envelope(response, 400)
    assert "json" in error["message"].lower(), error
    assert upstream.requests == [], "a bad body reached the model"


def test_nesting_at_the_limit_is_accepted(http: httpx2.Client, upstream: ScriptedUpstream) -> None:
    """The limit is not lower than documented: a relayed chat body nested exactly
    MAX_JSON_DEPTH deep goes through to the model."""
    upstream.reset([Text("fine")])
    response = http.post(
        "/chat/completions",
        content=_nested(MAX_JSON_DEPTH),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "fine"
    upstream.check()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("POST", "/v1/assistants/asst_x/nope"),
        ("GET", "/v1/threads/thread_x/runs/run_x/steps/step_x/nope"),
        ("GET", "/nope"),
    ],
)
def test_unknown_route_is_not_found(server: ServerProcess, method: str, path: str) -> None:
    """A path the API does not have is a 404 envelope."""
    with raw_client(server) as http:
        response = http.request(method, server.url + path)
    error = assert_envelope(response, 404)
    assert path in error["message"], error


# --------------------------------------------------------------------------- sizes


def _padded_body() -> bytes:
    """A valid assistant-create body over 32 MiB: only its size is wrong (JSON whitespace)."""
    head = json.dumps({"model": MODEL, "name": "too big"}).encode()
    return head + b" " * (JSON_LIMIT + 1 - len(head) + 1024)


def test_oversized_json_body_is_413(
    http: httpx2.Client, client: openai.OpenAI, world: World
) -> None:
    """A JSON body over 32 MiB is refused with a 413 envelope and nothing is created."""
    before = [a.id for a in client.beta.assistants.list(limit=100)]
    body = _padded_body()
    response = http.post("/assistants", content=body, headers={"content-type": "application/json"})
    error = assert_envelope(response, 413)
    assert "large" in error["message"].lower(), error
    assert [a.id for a in client.beta.assistants.list(limit=100)] == before


def _raw_exchange(server: ServerProcess, request: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send a request by hand and return everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(request)
        try:
            for chunk in body_chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered early: read it before its close resets us
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed; its answer is still to be read
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            if not answer:
                raise  # a reset before any answer is a failure; after one, the end of it
    return answer


def test_oversized_chunked_json_body_is_413(
    server: ServerProcess, client: openai.OpenAI, world: World
) -> None:
    """A JSON body over 32 MiB sent chunked (no Content-Length) is also refused with a 413."""
    before = [a.id for a in client.beta.assistants.list(limit=100)]
    body = _padded_body()
    head = (
        b"POST /v1/assistants HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer local\r\n"
        b"OpenAI-Beta: assistants=v2\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )

    def chunks() -> Iterator[bytes]:
        step = 1 << 20
        for start in range(0, len(body), step):
            piece = body[start : start + step]
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
        yield b"0\r\n\r\n"

    answer = _raw_exchange(server, head, chunks())
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:500]
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"x-request-id: req_" in headers.lower(), headers
    assert json.loads(payload)["error"]["type"] == "invalid_request_error", payload[:500]
    assert [a.id for a in client.beta.assistants.list(limit=100)] == before


# --------------------------------------------------------------------------- uploads


def test_upload_with_unknown_purpose_is_bad_request(client: openai.OpenAI) -> None:
    """An upload whose purpose is not one OpenAI accepts is a 400 naming ``purpose``."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("a.txt", b"abc"), purpose="nope")  # type: ignore[arg-type]
    error = assert_sdk_error(caught.value, 400, param="purpose")
    assert "purpose" in error["message"] and "nope" in error["message"], error


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body from (name, filename or None, data) parts."""
    boundary = secrets.token_hex(12)
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_upload_without_file_part_is_bad_request(
    http: httpx2.Client, client: openai.OpenAI
) -> None:
    """A multipart upload with a purpose but no file part is a 400 naming ``file``."""
    before = [f.id for f in client.files.list()]
    body, content_type = _multipart([("purpose", None, b"assistants")])
    response = http.post("/files", content=body, headers={"content-type": content_type})
    error = assert_envelope(response, 400, param="file")
    assert "file" in error["message"], error
    assert [f.id for f in client.files.list()] == before


def test_upload_without_purpose_is_bad_request(http: httpx2.Client, client: openai.OpenAI) -> None:
    """A multipart upload with a file but no purpose is a 400 naming ``purpose``."""
    before = [f.id for f in client.files.list()]
    body, content_type = _multipart([("file", "a.txt", b"abc")])
    response = http.post("/files", content=body, headers={"content-type": content_type})
    error = assert_envelope(response, 400, param="purpose")
    assert "purpose" in error["message"], error
    assert [f.id for f in client.files.list()] == before


CAP = 1024 * 1024


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second server whose upload cap is 1 MiB."""
    data_dir: Path = tmp_path_factory.mktemp("capped")
    env = {"CODEINTERP_MAX_UPLOAD_BYTES": str(CAP), "CODEINTERP_POOL_SIZE": "1"}
    with ServerProcess(env, data_dir=data_dir) as process:
        yield process


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(2_000_000, id="2MB"),
        pytest.param(2 * 1024 * 1024, id="2MiB"),
    ],
)
def test_upload_over_the_cap_is_413_and_stores_nothing(
    capped_server: ServerProcess, size: int
) -> None:
    """An upload over CODEINTERP_MAX_UPLOAD_BYTES is a 413 that states the limit; nothing stays."""
    with capped_server.client() as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.files.create(file=("big.bin", b"\0" * size), purpose="assistants")
        error = assert_sdk_error(caught.value, 413)
        assert sdk.files.list().data == []
    blobs = capped_server.data_dir / "blobs"
    assert list(blobs.iterdir()) == [], "the refused upload left bytes on disk"
    message = error["message"].lower()
    assert "large" in message or "limit" in message, error
    assert str(CAP) in error["message"], f"the message does not state the cap of {CAP}: {error}"


def test_chunked_upload_over_the_cap_is_413(capped_server: ServerProcess) -> None:
    """A multipart upload without Content-Length (chunked) is counted as it arrives: past the
    cap it is refused with the 413 envelope, before it reaches the disk."""
    boundary = "capboundary"
    head = (
        b"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer local\r\n"
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    preamble = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        f'assistants\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()

    pieces = [preamble] + [b"\0" * 65536] * 40  # 2.5 MiB of file, never finished
    with socket.create_connection(("127.0.0.1", capped_server.port), timeout=60) as sock:
        sock.sendall(head)
        answer = b""
        for piece in pieces:  # stop sending as soon as the server answers
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 413 " in status_line, answer[:300]
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "file_too_large" and str(CAP) in body["error"]["message"]
    with capped_server.client() as sdk:
        assert sdk.files.list().data == []


def test_upload_at_the_cap_is_accepted(capped_server: ServerProcess) -> None:
    """An upload of exactly CODEINTERP_MAX_UPLOAD_BYTES is stored whole."""
    data = secrets.token_bytes(CAP)
    with capped_server.client() as sdk:
        file = sdk.files.create(file=("exact.bin", data), purpose="assistants")
        assert file.bytes == CAP
        assert sdk.files.content(file.id).read() == data
        sdk.files.delete(file.id)


# --------------------------------------------------------------------------- run states


def test_second_run_on_a_busy_thread_is_refused(
    client: openai.OpenAI, upstream: ScriptedUpstream, world: World
) -> None:
    """Creating a run while the thread has an active one is a 400 naming the active run."""
    upstream.script = [Delay(5, then=Text("done"))]
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread.id, role="user", content="take your time")
    first = client.beta.threads.runs.create(thread.id, assistant_id=world.assistant)
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            client.beta.threads.runs.create(thread.id, assistant_id=world.assistant)
        error = assert_sdk_error(caught.value, 400)
        assert first.id in error["message"] and "active" in error["message"].lower(), error
    finally:
        client.beta.threads.runs.cancel(first.id, thread_id=thread.id)
        final = client.beta.threads.runs.poll(first.id, thread_id=thread.id, poll_interval_ms=20)
    assert final.status == "cancelled"
    runs = client.beta.threads.runs.list(thread.id).data
    assert [r.id for r in runs] == [first.id]


def test_message_on_a_busy_thread_is_refused(
    client: openai.OpenAI, upstream: ScriptedUpstream, world: World
) -> None:
    """Adding a message while the thread has an active run is a 400 naming the run, as OpenAI's."""
    upstream.script = [Delay(5, then=Text("done"))]
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread.id, role="user", content="take your time")
    first = client.beta.threads.runs.create(thread.id, assistant_id=world.assistant)
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            client.beta.threads.messages.create(thread.id, role="user", content="again?")
        error = assert_sdk_error(caught.value, 400)
        assert first.id in error["message"], error
    finally:
        client.beta.threads.runs.cancel(first.id, thread_id=thread.id)
        final = client.beta.threads.runs.poll(first.id, thread_id=thread.id, poll_interval_ms=20)
    assert final.status == "cancelled"
    assert len(client.beta.threads.messages.list(thread.id).data) == 1


def test_cancel_completed_run_is_refused(client: openai.OpenAI, world: World) -> None:
    """Cancelling a completed run is OpenAI's 400 "Cannot cancel run with status 'completed'."."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.cancel(world.run, thread_id=world.thread)
    error = assert_sdk_error(caught.value, 400)
    assert error["message"] == "Cannot cancel run with status 'completed'.", error
    assert client.beta.threads.runs.retrieve(world.run, thread_id=world.thread).status == (
        "completed"
    )


def test_submit_tool_outputs_outside_requires_action_is_refused(
    client: openai.OpenAI, world: World
) -> None:
    """Tool outputs for a run that is not in requires_action are a 400 naming its status."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.submit_tool_outputs(
            world.run,
            thread_id=world.thread,
            tool_outputs=[{"tool_call_id": "call_nope", "output": "x"}],
        )
    error = assert_sdk_error(caught.value, 400)
    assert "completed" in error["message"], error


# --------------------------------------------------------------------------- nothing damaged


def test_rejected_modifications_change_nothing(
    server: ServerProcess, client: openai.OpenAI, http: httpx2.Client, world: World
) -> None:
    """A modify request that is refused leaves the object exactly as it was, no field applied."""
    bad_calls: list[Callable[[], object]] = [
        lambda: client.beta.assistants.update(world.assistant, name="changed", temperature="hot"),  # type: ignore[arg-type]
        lambda: client.beta.assistants.update(
            world.assistant,
            name="changed",
            tools=[{"type": "nope"}],  # type: ignore[list-item]
        ),
        lambda: client.beta.assistants.update(world.assistant, name="changed", metadata=SEVENTEEN),
        lambda: client.beta.threads.update(world.thread, metadata=SEVENTEEN),
        lambda: client.beta.threads.messages.update(
            world.message,
            thread_id=world.thread,
            metadata={"n": 2},  # type: ignore[dict-item]
        ),
        lambda: client.beta.threads.runs.update(
            world.run, thread_id=world.thread, metadata=SEVENTEEN
        ),
    ]
    for call in bad_calls:
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        assert_sdk_error(caught.value, 400)
    response = http.post(
        f"/assistants/{world.assistant}",
        content=b'{"name": "changed", ',
        headers={"content-type": "application/json"},
    )
    assert_envelope(response, 400)
    snapshot = _snapshot(server, world.ids)
    for name in THREAD_SCOPED:
        assert snapshot[name] == world.snapshot[name], name


def test_successful_responses_carry_a_request_id(client: openai.OpenAI, world: World) -> None:
    """Successful responses have an ``x-request-id: req_...`` header too, distinct per request."""
    responses = [
        client.beta.assistants.with_raw_response.retrieve(world.assistant),
        client.beta.assistants.with_raw_response.list(limit=1),
        client.beta.threads.with_raw_response.retrieve(world.thread),
        client.beta.threads.messages.with_raw_response.list(world.thread),
        client.beta.threads.runs.with_raw_response.retrieve(world.run, thread_id=world.thread),
        client.files.with_raw_response.retrieve(world.file),
    ]
    ids = []
    for response in responses:
        assert_request_id(response.http_response)
        ids.append(response.http_response.headers["x-request-id"])
    assert len(set(ids)) == len(ids), ids


def test_nothing_stored_was_damaged(
    server: ServerProcess, client: openai.OpenAI, world: World
) -> None:
    """After every bad request above, the objects made first are all still there, unchanged."""
    snapshot = _snapshot(server, world.ids)
    for name in THREAD_SCOPED:
        assert snapshot[name] == world.snapshot[name], name
    assert snapshot["file_content"] == world.file_bytes
    assistant = client.beta.assistants.retrieve(world.assistant)
    assert assistant.name == "Keeper" and assistant.temperature == 0.5
    assert assistant.metadata == {"owner": "bad-input"}
    assert [t.type for t in assistant.tools] == ["code_interpreter"]
    # The thread still has its message and the run's answer, and nothing else.
    messages = client.beta.threads.messages.list(world.thread, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[0].id == world.message

"""The server against OpenAI's own OpenAPI document, with schemathesis.

openai-openapi.yaml beside this file is OpenAI's published document
(github.com/openai/openai-openapi, MIT license), cut down by scripts/reduce-openai-spec to the
Files, Assistants, Threads (messages, runs, run steps), Containers and Responses paths.

Every operation of those paths that this server serves (the others are skipped, named) gets
requests generated from the document, valid and invalid ones, MAX_EXAMPLES per operation,
derandomized so that a run is repeatable; each answer must pass schemathesis's
`not_a_server_error`, `response_schema_conformance` and `content_type_conformance`. The streams
that generated requests seldom reach are requested once each as well. Path parameters are the
ids of real objects made first (a delete gets an object of its own), and ids in bodies (a run's
assistant, a container file's File) are real too, so operations get past their 404s; a
Responses request keeps only the tools and input items this server runs. The scripted upstream
model answers every turn with a short text, and fails the module if the server ever sends it a
request OpenAI would refuse.

Where OpenAI's document is wrong about what OpenAI's API does, EXCEPTIONS says so and what is
checked there instead; load_document repairs two defects of the document as JSON Schema.
Nothing else is left out.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import jsonschema_rs
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from tests.support.server import ServerProcess
from tests.support.upstream import Request, ScriptedUpstream, Text

pytestmark = pytest.mark.root

DOCUMENT = Path(__file__).with_name("openai-openapi.yaml")
KEY = "sk-conformance"
# What the openai SDK sends: the server's key as a bearer token (it runs with that one key).
HEADERS = {"Authorization": f"Bearer {KEY}", "OpenAI-Beta": "assistants=v2"}
MODEL = "gpt-test"
# Examples per operation: enough to vary bodies and queries, few enough for under a minute.
MAX_EXAMPLES = 20
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
FILE_BYTES = b"x,y\n1,2\n3,4\n"


# --------------------------------------------------------------------------- the document


def load_document() -> dict[str, Any]:
    """The document, with its two defects as JSON Schema repaired (neither changes what it says
    an answer may hold):

    * ContainerResource names properties twice in `required`, which JSON Schema forbids (its
      items must be unique), so a validator refuses the whole schema: each is named once.
    * Its `discriminator`s have no `mapping`, and without one OpenAPI takes a member's schema
      name as its `type` (an input item's `type` would have to be "InputMessageResource"), which
      the document does not mean and OpenAI never sends: they are dropped, and the `oneOf` they
      annotate still decides which member an object is.
    """
    document: dict[str, Any] = yaml.load(DOCUMENT.read_text(), Loader=yaml.CSafeLoader)
    for schema in _subschemas(document["components"]):
        required = schema.get("required")
        if isinstance(required, list):
            schema["required"] = list(dict.fromkeys(required))
        discriminator = schema.get("discriminator")
        if isinstance(discriminator, dict) and "mapping" not in discriminator:
            del schema["discriminator"]
    return document


def _subschemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _subschemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _subschemas(value)


# Loaded with the module: its operations become the test's parameters. The server's address is
# given to each call.
DOCUMENT_SCHEMA = schemathesis.openapi.from_dict(load_document())
DOCUMENT_SCHEMA.config.update(headers=HEADERS, request_timeout=60)
DOCUMENT_SCHEMA.config.max_stream_events = 10_000  # a stream is read to its end (default: 20)
DOCUMENT_SCHEMA.config.generation.update(deterministic=True, database="none")
DOCUMENT_SCHEMA.config.phases.update(phases=["examples", "fuzzing"])


def _nullable_as_null(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true`, which the document still uses in places, as JSON Schema
    says it (schemathesis reads it so for the operations' own answers)."""
    if isinstance(node, list):
        return [_nullable_as_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _nullable_as_null(v) for k, v in node.items() if k != "nullable"}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") is True else converted


@functools.cache
def schema_validator(name: str) -> Any:
    """A validator for one of the document's schemas, such as AssistantStreamEvent."""
    components = _nullable_as_null(load_document()["components"])
    return jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{name}", "components": components}
    )


@functools.cache
def response_event_schemas() -> dict[str, str]:
    """The `type` of each of ResponseStreamEvent's members -> that member's schema name."""
    schemas = load_document()["components"]["schemas"]
    names = {}
    for member in schemas["ResponseStreamEvent"]["anyOf"]:
        name = member["$ref"].rsplit("/", 1)[-1]
        for kind in schemas[name].get("properties", {}).get("type", {}).get("enum", []):
            names[kind] = name
    return names


# --------------------------------------------------------------------------- exceptions

Check = Callable[[schemathesis.Case, schemathesis.Response], None]


@dataclass(frozen=True)
class DocumentException:
    """Where OpenAI's API does not do what its document says: the operations and answers it
    covers, why, and what is checked instead of the document there."""

    operations: tuple[str, ...]
    applies: Callable[[schemathesis.Case, schemathesis.Response], bool]
    reason: str
    check: Check


def _label(case: schemathesis.Case) -> str:
    return f"{case.method.upper()} {case.operation.path}"


def _streams(case: schemathesis.Case) -> bool:
    return isinstance(case.body, dict) and case.body.get("stream") is True


def _json(response: schemathesis.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _with_body(response: schemathesis.Response, body: Any) -> schemathesis.Response:
    return schemathesis.Response(
        status_code=response.status_code,
        headers=response.headers,
        content=json.dumps(body).encode(),
        request=response.request,
        elapsed=response.elapsed,
        verify=response.verify,
        encoding=response.encoding,
    )


def _is_empty_page(case: schemathesis.Case, response: schemathesis.Response) -> bool:
    body = _json(response)
    return response.status_code == 200 and isinstance(body, dict) and body.get("data") == []


def _check_empty_page(case: schemathesis.Case, response: schemathesis.Response) -> None:
    body = _json(response)
    assert body["first_id"] is None and body["last_id"] is None, body
    case.validate_response(_with_body(response, {**body, "first_id": "", "last_id": ""}), CHECKS)


def _check_file_bytes(case: schemathesis.Case, response: schemathesis.Response) -> None:
    not_a_server_error_only(case, response)
    if response.status_code == 200:
        assert response.content == FILE_BYTES, response.content[:200]


def _events(response: schemathesis.Response) -> list[dict[str, Any]]:
    """A text/event-stream answer's events as {"event": name, "data": its JSON} (or its text,
    for `[DONE]`); heartbeat comments are not events."""
    assert response.status_code == 200, response.status_code
    assert not response.stream_cut_short, "the stream was read only in part"
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("text/event-stream"), content_type
    events = []
    for block in response.content.decode().split("\n\n"):
        if block.startswith("event: "):
            name, _, data = block.removeprefix("event: ").partition("\ndata: ")
            events.append({"event": name, "data": data if data == "[DONE]" else json.loads(data)})
    assert events, response.content[:500]
    return events


def _invalid(schema: str, instance: Any) -> list[str]:
    """What is wrong with `instance` as one of the document's schemas, where."""
    errors = schema_validator(schema).iter_errors(instance)
    return [f"/{'/'.join(map(str, e.instance_path))}: {e.message}" for e in errors][:3]


def _check_run_stream(case: schemathesis.Case, response: schemathesis.Response) -> None:
    not_a_server_error_only(case, response)
    if response.status_code != 200:
        return
    *events, done = _events(response)
    for event in events:
        assert not _invalid("AssistantStreamEvent", event), (
            event,
            _invalid("AssistantStreamEvent", event),
        )
    assert not _invalid("DoneEvent", done), done


def _unfinished_without_usage(response: Any) -> bool:
    return (
        isinstance(response, dict)
        and response.get("status") in ("queued", "in_progress")
        and "usage" in response
        and response["usage"] is None
    )


def _check_response_stream(case: schemathesis.Case, response: schemathesis.Response) -> None:
    not_a_server_error_only(case, response)
    if response.status_code != 200:
        return
    for event in _events(response):
        data = event["data"]
        assert isinstance(data, dict) and data.get("type") == event["event"], event
        if _unfinished_without_usage(data.get("response")):  # as the document's example has it
            data = {**data, "response": {k: v for k, v in data["response"].items() if k != "usage"}}
        # the member of ResponseStreamEvent for this type, for a precise message
        schema = response_event_schemas().get(data["type"], "ResponseStreamEvent")
        assert not _invalid(schema, data), (schema, _invalid(schema, data), data)


def _evals_files(case: schemathesis.Case, response: schemathesis.Response) -> bool:
    body = _json(response)
    files = body.get("data") if isinstance(body, dict) and body.get("object") == "list" else [body]
    return any(isinstance(f, dict) and f.get("purpose") == "evals" for f in files or [])


def _check_evals_files(case: schemathesis.Case, response: schemathesis.Response) -> None:
    body = _json(response)

    def stand_in(file: dict[str, Any]) -> dict[str, Any]:
        return {**file, "purpose": "user_data"} if file.get("purpose") == "evals" else file

    if body.get("object") == "list":
        body = {**body, "data": [stand_in(f) for f in body["data"]]}
    else:
        body = stand_in(body)
    case.validate_response(_with_body(response, body), CHECKS)


def not_a_server_error_only(case: schemathesis.Case, response: schemathesis.Response) -> None:
    case.validate_response(response, checks=[not_a_server_error])


LISTS = (
    "GET /assistants",
    "GET /files",
    "GET /threads/{thread_id}/messages",
    "GET /threads/{thread_id}/runs",
    "GET /threads/{thread_id}/runs/{run_id}/steps",
    "GET /containers",
    "GET /containers/{container_id}/files",
    "GET /responses/{response_id}/input_items",
)
RUN_STARTS = (
    "POST /threads/runs",
    "POST /threads/{thread_id}/runs",
    "POST /threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
)

EXCEPTIONS = [
    DocumentException(
        ("POST /files", "GET /files", "GET /files/{file_id}"),
        _evals_files,
        "The document's upload accepts the purpose `evals` (CreateFileRequest), but its File "
        "object's `purpose` leaves it out; OpenAI's File object keeps the purpose it was "
        "uploaded with. Checked instead: the answer passes every check with another documented "
        "purpose standing in for `evals`.",
        _check_evals_files,
    ),
    DocumentException(
        ("GET /files/{file_id}/content",),
        lambda case, response: True,
        "The document declares a JSON string; OpenAI answers with the file's bytes (the SDK "
        "hands them over as binary content). Checked instead: no server error, and the bytes "
        "are the ones uploaded.",
        _check_file_bytes,
    ),
    DocumentException(
        RUN_STARTS,
        lambda case, response: _streams(case),
        "With `stream: true` OpenAI answers with a text/event-stream of run events (what the "
        "SDK's stream helpers read), which the document does not declare for these operations. "
        "Checked instead: no server error, and an event stream whose every event is one of the "
        "document's own AssistantStreamEvent schemas, ending with its DoneEvent.",
        _check_run_stream,
    ),
    DocumentException(
        ("POST /responses",),
        lambda case, response: _streams(case),
        "The document gives ResponseStreamEvent, the JSON object in each event's `data`, as the "
        "schema of the text/event-stream answer; schemathesis reads it as the schema of each "
        "whole event ({event, data: a string}), which nothing could pass. Checked instead: no "
        "server error, and every event's data is one of ResponseStreamEvent, its `type` being "
        "the event's name. One more: a response not yet finished has `usage: null` (so the "
        "document's own example of response.created), though its schema types usage as an "
        "object; there a null usage is let pass.",
        _check_response_stream,
    ),
    DocumentException(
        LISTS,
        _is_empty_page,
        "The document types a list's first_id and last_id as strings, but an empty page has no "
        "first or last object: OpenAI's lists send null there, and so does this server "
        "(tests/contract/test_pagination.py holds it to that). Checked instead: both are null, "
        "and the page passes every check with strings in their place.",
        _check_empty_page,
    ),
]


def exception_for(
    case: schemathesis.Case, response: schemathesis.Response
) -> DocumentException | None:
    label = _label(case)
    return next(
        (e for e in EXCEPTIONS if label in e.operations and e.applies(case, response)), None
    )


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    def answer(request: Request) -> Text:
        return Text("Done.")

    with ScriptedUpstream(answer) as scripted:
        yield scripted


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        "CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url,
        "CODEINTERP_UPSTREAM_API_KEY": "sk-upstream-test",
        "CODEINTERP_API_KEYS": f"{KEY}:proj_conformance",
        "CODEINTERP_POOL_SIZE": "2",
        "CODEINTERP_POLL_AFTER_MS": "20",
    }
    with ServerProcess(env, data_dir=tmp_path_factory.mktemp("conformance")) as process:
        yield process


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=server.base_url, headers=HEADERS, timeout=60.0) as client:
        yield client


@pytest.fixture(scope="module")
def served(http: httpx2.Client, server: ServerProcess) -> set[tuple[str, str]]:
    """(METHOD, path under /v1) of every operation the server has, from its own OpenAPI."""
    paths = _ok(http.get(f"{server.url}/openapi.json"))["paths"]
    return {
        (method.upper(), path.removeprefix("/v1"))
        for path, operations in paths.items()
        for method in operations
    }


# --------------------------------------------------------------------------- real objects


def _ok(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, (response.request.url, response.text)
    body: dict[str, Any] = response.json()
    return body


def settle(http: httpx2.Client, thread_id: str, run_id: str) -> dict[str, Any]:
    """The run once it is no longer queued or in progress."""
    deadline = time.monotonic() + 30
    while True:
        run = _ok(http.get(f"/threads/{thread_id}/runs/{run_id}"))
        if run["status"] not in ("queued", "in_progress", "cancelling"):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.02)


class Objects:
    """Real objects to name in paths; `fresh` makes one more of a kind, for a delete."""

    def __init__(self, http: httpx2.Client) -> None:
        self.http = http
        self.uploads = 0
        self.file = self.fresh("file_id")
        self.assistant = self.fresh("assistant_id")
        self.thread = self.fresh("thread_id")
        self.message = self.fresh("message_id")
        run = _ok(http.post(f"/threads/{self.thread}/runs", json={"assistant_id": self.assistant}))
        settle(http, self.thread, run["id"])
        self.run = run["id"]
        steps = _ok(http.get(f"/threads/{self.thread}/runs/{self.run}/steps"))
        self.step = steps["data"][0]["id"]
        self.container = self.fresh("container_id")
        self.container_file = self.fresh("container_file_id")
        self.response = self.fresh("response_id")

    def fresh(self, name: str) -> str:
        http = self.http
        if name == "file_id":
            files = {"file": ("data.csv", FILE_BYTES, "text/csv")}
            return str(_ok(http.post("/files", data={"purpose": "assistants"}, files=files))["id"])
        if name == "assistant_id":
            body = {"model": MODEL, "name": "conformance", "tools": [{"type": "code_interpreter"}]}
            return str(_ok(http.post("/assistants", json=body))["id"])
        if name == "thread_id":
            return str(_ok(http.post("/threads", json={}))["id"])
        if name == "message_id":
            body = {"role": "user", "content": "Hello."}
            return str(_ok(http.post(f"/threads/{self.thread}/messages", json=body))["id"])
        if name == "container_id":
            return str(_ok(http.post("/containers", json={"name": "conformance"}))["id"])
        if name == "container_file_id":
            path = f"/containers/{self.container}/files"
            if not hasattr(self, "container_file"):  # the shared one: a File copied in
                return str(_ok(http.post(path, json={"file_id": self.file}))["id"])
            self.uploads += 1  # one of its own, by a name of its own
            files = {"file": (f"upload-{self.uploads}.txt", b"fresh", "text/plain")}
            return str(_ok(http.post(path, files=files))["id"])
        if name == "response_id":
            return str(_ok(http.post("/responses", json={"model": MODEL, "input": "Hi."}))["id"])
        raise AssertionError(f"no way to make a {name}")

    def existing(self, name: str, path: str) -> str:
        if name == "file_id" and path.startswith("/containers/"):
            return self.container_file
        return {
            "file_id": self.file,
            "assistant_id": self.assistant,
            "thread_id": self.thread,
            "message_id": self.message,
            "run_id": self.run,
            "step_id": self.step,
            "container_id": self.container,
            "response_id": self.response,
        }[name]

    def fill(self, case: schemathesis.Case) -> None:
        """Real ids in the path (the last one new for a delete) and in a run's assistant_id."""
        path = case.operation.path
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        for position, name in enumerate(names):
            last = position == len(names) - 1
            if case.method.upper() == "DELETE" and last:
                fresh = (
                    "container_file_id" if name == "file_id" and "/containers/" in path else name
                )
                case.path_parameters[name] = self.fresh(fresh)
            else:
                case.path_parameters[name] = self.existing(name, path)
        body = case.body
        if isinstance(body, dict):
            if "assistant_id" in body:
                body["assistant_id"] = self.assistant
            if path == "/containers/{container_id}/files" and "file_id" in body:
                body["file_id"] = self.file
            if isinstance(body.get("previous_response_id"), str):
                body["previous_response_id"] = self.response
            if path == "/responses":
                supported_only(body)


# What a Responses request may hold here: other tools and input items are refused by design
# (tests/contract/test_responses_errors.py), so generated requests keep only these to get past
# that refusal; everything else in them is left as generated.
RESPONSES_TOOLS = ("function", "code_interpreter")
RESPONSES_ITEMS = ("message", "function_call", "function_call_output", "code_interpreter_call")


def supported_only(body: dict[str, Any]) -> None:
    if isinstance(body.get("tools"), list):
        body["tools"] = [
            tool
            for tool in body["tools"]
            if isinstance(tool, dict) and tool.get("type") in RESPONSES_TOOLS
        ]
    if isinstance(body.get("input"), list):
        body["input"] = [
            item
            for item in body["input"]
            if isinstance(item, dict) and item.get("type", "message") in RESPONSES_ITEMS
        ] or "Hello."


@pytest.fixture(scope="module")
def objects(http: httpx2.Client) -> Objects:
    return Objects(http)


# --------------------------------------------------------------------------- the tests


def after(case: schemathesis.Case, response: schemathesis.Response, objects: Objects) -> None:
    """Leave the shared objects usable: a run on the shared thread ends before the next case,
    and containers made by a case are deleted (each holds a sandbox)."""
    if response.status_code != 200:
        return
    label = _label(case)
    if label == "POST /threads/{thread_id}/runs" and not _streams(case):
        settle(objects.http, objects.thread, json.loads(response.content)["id"])
    elif label == "POST /containers":
        objects.http.delete(f"/containers/{json.loads(response.content)['id']}")


@DOCUMENT_SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_conforms_to_openai_document(
    case: schemathesis.Case,
    server: ServerProcess,
    served: set[tuple[str, str]],
    objects: Objects,
) -> None:
    if (case.method.upper(), case.operation.path) not in served:
        pytest.skip(f"{_label(case)}: this server does not serve it")
    objects.fill(case)
    response = case.call(base_url=server.base_url)
    conform(case, response, objects)


def conform(case: schemathesis.Case, response: schemathesis.Response, objects: Objects) -> None:
    """The answer passes the checks (or its exception's), and the shared objects stay usable."""
    try:
        exception = exception_for(case, response)
        if exception is not None:
            exception.check(case, response)
        else:
            case.validate_response(response, checks=CHECKS)
    finally:
        after(case, response, objects)


# Streams, which the generated requests seldom get to: each operation that streams, once.
STREAMS: list[tuple[str, str, Callable[[Objects], dict[str, Any]]]] = [
    (
        "POST",
        "/threads/runs",
        lambda o: {
            "assistant_id": o.assistant,
            "thread": {"messages": [{"role": "user", "content": "Hi."}]},
            "stream": True,
        },
    ),
    ("POST", "/threads/{thread_id}/runs", lambda o: {"assistant_id": o.assistant, "stream": True}),
    ("POST", "/responses", lambda o: {"model": MODEL, "input": "Hi.", "stream": True}),
    (
        "POST",
        "/responses",
        lambda o: {
            "model": MODEL,
            "input": "Hi.",
            "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
            "stream": True,
        },
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [pytest.param(*stream, id=f"{stream[0]} {stream[1]} {i}") for i, stream in enumerate(STREAMS)],
)
def test_stream_conforms_to_openai_document(
    method: str,
    path: str,
    body: Callable[[Objects], dict[str, Any]],
    server: ServerProcess,
    objects: Objects,
) -> None:
    case = DOCUMENT_SCHEMA[path][method].Case(body=body(objects))
    objects.fill(case)
    response = case.call(base_url=server.base_url, headers=HEADERS)
    assert response.status_code == 200, response.content[:500]
    assert (response.headers.get("content-type") or [""])[0].startswith("text/event-stream")
    conform(case, response, objects)

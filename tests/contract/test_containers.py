"""The Containers API end to end: containers, their files, and our execute/interrupt extensions.

Containers and container files go through the official ``openai`` SDK; execute goes through the
SDK's generic ``client.post`` (JSON) or ``httpx2`` (SSE, which we parse ourselves so that event
order, arrival times, heartbeats and disconnects can be checked). Expiry needs a server whose
containers idle out in seconds, so it has a server of its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.contract.helpers import assert_envelope, assert_sdk_error, raw_client
from tests.support.server import ServerProcess

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXECUTE_KEYS = {
    "status",
    "stdout",
    "stderr",
    "results",
    "error",
    "files",
    "execution_count",
    "duration_ms",
}
IDLE_CAP_MINUTES = 0.03  # 1.8 s


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def execute(client: openai.OpenAI, container_id: str, code: str, **extra: Any) -> dict[str, Any]:
    """POST /containers/{id}/execute (not streamed); the JSON body."""
    body = client.post(
        f"/containers/{container_id}/execute", body={"code": code, **extra}, cast_to=object
    )
    assert isinstance(body, dict), body
    return body


def text_result(body: dict[str, Any]) -> str:
    """The text/plain of the execution's last expression."""
    assert body["status"] == "ok", body
    values = [r for r in body["results"] if r["type"] == "execute_result"]
    assert values, body
    text = values[-1]["data"]["text/plain"]
    assert isinstance(text, str)
    return text


def sse_items(response: httpx2.Response) -> Iterator[tuple[str, Any, float]]:
    """(event, data, arrival time) per SSE event, and ("", comment, time) per comment line."""
    name: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "", line, time.monotonic()
        elif line.startswith("event:"):
            name = line.removeprefix("event:").removeprefix(" ")
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
        elif line == "" and (name is not None or data):
            yield name or "message", json.loads("\n".join(data)), time.monotonic()
            name, data = None, []


@pytest.fixture
def container(client: openai.OpenAI) -> Iterator[str]:
    """A fresh 1g container, deleted afterwards."""
    made = client.containers.create(name=unique("box"))
    yield made.id
    with contextlib.suppress(openai.NotFoundError):
        client.containers.delete(made.id)


# --------------------------------------------------------------------------- containers


def test_create_retrieve_list_delete(client: openai.OpenAI) -> None:
    """A container has OpenAI's shape and defaults; list filters by name and pages with
    limit/after in both orders; a deleted container is a 404 and leaves the list."""
    name = unique("crud")
    before = int(time.time())
    made = [client.containers.create(name=name) for _ in range(3)]
    first = made[0]
    assert first.id.startswith("cntr_"), first
    assert first.object == "container"
    assert first.name == name
    assert first.status == "running"
    assert first.expires_after is not None
    assert first.expires_after.model_dump() == {"anchor": "last_active_at", "minutes": 20}
    assert first.memory_limit == "1g"
    raw = first.model_dump()
    assert isinstance(raw["created_at"], int) and before <= raw["created_at"] <= time.time() + 1
    assert isinstance(raw["last_active_at"], int) and raw["last_active_at"] >= raw["created_at"]

    got = client.containers.retrieve(first.id)
    assert got.id == first.id and got.name == name and got.status == "running"
    assert got.object == "container" and got.memory_limit == "1g"

    ids = {c.id for c in made}
    listed = client.containers.list(name=name)
    assert {c.id for c in listed.data} == ids
    assert all(c.name == name for c in listed.data)
    assert client.containers.list(name=unique("nobody")).data == []

    page1 = client.containers.list(name=name, limit=2)
    assert len(page1.data) == 2 and page1.has_more is True
    page2 = client.containers.list(name=name, limit=2, after=page1.data[-1].id)
    assert len(page2.data) == 1 and page2.has_more is False
    desc = [c.id for c in page1.data + page2.data]
    assert set(desc) == ids
    asc = [c.id for c in client.containers.list(name=name, order="asc").data]
    assert asc == desc[::-1]
    all_ids = [c.id for c in client.containers.list(limit=100)]  # auto-paged
    assert ids <= set(all_ids)

    deleted = client.containers.with_raw_response.delete(first.id)  # the SDK returns None
    assert deleted.http_response.json() == {
        "id": first.id,
        "object": "container.deleted",
        "deleted": True,
    }
    with pytest.raises(openai.NotFoundError) as caught:
        client.containers.retrieve(first.id)
    assert_sdk_error(caught.value, 404)
    with pytest.raises(openai.NotFoundError) as caught:
        client.containers.delete(first.id)
    assert_sdk_error(caught.value, 404)
    assert {c.id for c in client.containers.list(name=name).data} == ids - {first.id}
    for other in made[1:]:
        client.containers.delete(other.id)
    assert client.containers.list(name=name).data == []


def test_create_with_options_echoes_them(client: openai.OpenAI) -> None:
    """expires_after, memory_limit and a disabled network policy are accepted and shown back."""
    made = client.containers.create(
        name=unique("opts"),
        expires_after={"anchor": "last_active_at", "minutes": 5},
        memory_limit="4g",
        network_policy={"type": "disabled"},
    )
    try:
        assert made.expires_after is not None
        assert made.expires_after.model_dump() == {"anchor": "last_active_at", "minutes": 5}
        assert made.memory_limit == "4g"
        got = client.containers.retrieve(made.id)
        assert got.memory_limit == "4g"
        assert got.expires_after is not None
        assert got.expires_after.model_dump() == made.expires_after.model_dump()
    finally:
        client.containers.delete(made.id)


ALLOCATE = "b = b'x' * (1536 * 2**20)\nlen(b)"


def test_memory_limit_is_enforced(client: openai.OpenAI) -> None:
    """1.5 GiB fits in a 4g container and does not in a 1g one (oom, or a MemoryError)."""
    big = client.containers.create(name=unique("mem4"), memory_limit="4g")
    small = client.containers.create(name=unique("mem1"), memory_limit="1g")
    try:
        fits = execute(client, big.id, ALLOCATE, timeout=30)
        assert text_result(fits) == str(1536 * 2**20)
        execute(client, big.id, "del b", timeout=30)

        too_big = execute(client, small.id, ALLOCATE, timeout=30)
        assert too_big["status"] in ("oom", "error"), too_big
        if too_big["status"] == "error":
            assert too_big["error"]["name"] == "MemoryError", too_big
        assert text_result(execute(client, small.id, "1 + 1")) == "2"  # it still works
    finally:
        client.containers.delete(big.id)
        client.containers.delete(small.id)


# --------------------------------------------------------------------------- container files


def test_uploaded_file_is_visible_to_code_and_deletable(
    client: openai.OpenAI, container: str
) -> None:
    """A multipart upload lands at /mnt/data/<name>, is listed as source "user", retrieves and
    downloads byte for byte; deleting it removes it from the code's view and the listing."""
    data = b"month,revenue\n2026-01,1000\n" + bytes(range(256))
    made = client.containers.files.create(container, file=("sales.csv", data))
    assert made.object == "container.file"
    assert made.path == "/mnt/data/sales.csv"
    assert made.source == "user"
    assert made.bytes == len(data)
    assert made.container_id == container
    assert isinstance(made.created_at, int)

    read = execute(client, container, "open('/mnt/data/sales.csv', 'rb').read().hex()")
    assert text_result(read) == repr(data.hex())

    listed = client.containers.files.list(container).data
    assert [(f.id, f.path, f.source, f.bytes) for f in listed] == [
        (made.id, "/mnt/data/sales.csv", "user", len(data))
    ]
    got = client.containers.files.retrieve(made.id, container_id=container)
    assert got.model_dump() == made.model_dump()
    content = client.containers.files.content.retrieve(made.id, container_id=container)
    assert content.read() == data
    assert 'filename="sales.csv"' in content.response.headers["content-disposition"]

    deleted = client.containers.files.with_raw_response.delete(made.id, container_id=container)
    assert deleted.http_response.json() == {
        "id": made.id,
        "object": "container.file.deleted",
        "deleted": True,
    }
    exists = execute(client, container, "import os; os.path.exists('/mnt/data/sales.csv')")
    assert text_result(exists) == "False"
    assert client.containers.files.list(container).data == []
    with pytest.raises(openai.NotFoundError) as caught:
        client.containers.files.retrieve(made.id, container_id=container)
    assert_sdk_error(caught.value, 404)


def test_file_with_a_non_latin_name_downloads(
    server: ServerProcess, client: openai.OpenAI, container: str
) -> None:
    """A file named in Chinese uploads, is seen by the code, is listed, and downloads."""
    data = "月份,收入\n1,1000\n".encode()
    made = client.containers.files.create(container, file=("销售.csv", data))
    assert made.path == "/mnt/data/销售.csv"
    read = execute(client, container, f"open('/mnt/data/销售.csv', 'rb').read() == {data!r}")
    assert text_result(read) == "True"
    assert [f.path for f in client.containers.files.list(container).data] == [made.path]
    with server.client() as fresh:  # after a 500 the server may drop the connection
        content = fresh.containers.files.content.retrieve(made.id, container_id=container)
        assert content.read() == data


def test_file_copied_by_id(client: openai.OpenAI, container: str) -> None:
    """JSON {"file_id"} copies an uploaded File in at /mnt/data/<its filename>."""
    uploaded = client.files.create(file=("notes.txt", b"copied by id"), purpose="assistants")
    made = client.containers.files.create(container, file_id=uploaded.id)
    assert made.path == "/mnt/data/notes.txt"
    assert made.source == "user" and made.bytes == len(b"copied by id")
    assert made.id != uploaded.id
    read = execute(client, container, "open('/mnt/data/notes.txt').read()")
    assert text_result(read) == repr("copied by id")
    assert [f.id for f in client.containers.files.list(container).data] == [made.id]


def test_file_written_by_code_is_listed_and_downloads(
    client: openai.OpenAI, container: str
) -> None:
    """A file the code writes is reported in `files` with an id, listed as source "assistant"
    under that id, and downloads."""
    body = execute(
        client,
        container,
        "import os\nos.makedirs('/mnt/data/out', exist_ok=True)\n"
        "open('/mnt/data/out/report.txt', 'w').write('written by code')",
    )
    assert body["status"] == "ok", body
    changes = [f for f in body["files"] if f["name"] == "out/report.txt"]
    assert len(changes) == 1, body["files"]
    change = changes[0]
    assert change["change"] == "created" and change["path"] == "/mnt/data/out/report.txt"
    assert isinstance(change["id"], str) and change["id"]

    listed = {f.path: f for f in client.containers.files.list(container).data}
    assert set(listed) == {"/mnt/data/out/report.txt"}
    found = listed["/mnt/data/out/report.txt"]
    assert found.id == change["id"]
    assert found.source == "assistant" and found.bytes == len("written by code")
    content = client.containers.files.content.retrieve(found.id, container_id=container)
    assert content.read() == b"written by code"


def test_container_files_page_and_stay_in_their_container(
    client: openai.OpenAI, container: str
) -> None:
    """The file list pages with limit/after in both orders; a file id of one container is a
    404 in another."""
    made = [
        client.containers.files.create(container, file=(f"f{i}.txt", b"x" * i)) for i in range(3)
    ]
    ids = {f.id for f in made}
    page1 = client.containers.files.list(container, limit=2)
    assert len(page1.data) == 2 and page1.has_more is True
    page2 = client.containers.files.list(container, limit=2, after=page1.data[-1].id)
    assert len(page2.data) == 1 and page2.has_more is False
    desc = [f.id for f in page1.data + page2.data]
    assert desc == [f.id for f in reversed(made)]  # newest first, even within one second
    assert [f.id for f in client.containers.files.list(container, order="asc").data] == desc[::-1]
    with pytest.raises(openai.BadRequestError) as unknown_cursor:
        client.containers.files.list(container, after="cfile_unknown")
    assert_sdk_error(unknown_cursor.value, 400, param="after")

    other = client.containers.create(name=unique("other"))
    try:
        with pytest.raises(openai.NotFoundError) as caught:
            client.containers.files.retrieve(made[0].id, container_id=other.id)
        assert_sdk_error(caught.value, 404)
        with pytest.raises(openai.NotFoundError) as caught:
            client.containers.files.content.retrieve(made[0].id, container_id=other.id)
        assert_sdk_error(caught.value, 404)
        with pytest.raises(openai.NotFoundError) as caught:
            client.containers.files.delete(made[0].id, container_id=other.id)
        assert_sdk_error(caught.value, 404)
    finally:
        client.containers.delete(other.id)
    assert {f.id for f in client.containers.files.list(container).data} == ids


def test_create_with_file_ids_loads_them(client: openai.OpenAI) -> None:
    """file_ids given at creation are in /mnt/data from the start, listed as source "user"."""
    one = client.files.create(file=("one.txt", b"first"), purpose="assistants")
    two = client.files.create(file=("two.csv", b"a,b\n1,2\n"), purpose="assistants")
    made = client.containers.create(name=unique("preload"), file_ids=[one.id, two.id])
    try:
        listed = client.containers.files.list(made.id).data
        assert sorted((f.path, f.source, f.bytes) for f in listed) == [
            ("/mnt/data/one.txt", "user", 5),
            ("/mnt/data/two.csv", "user", 8),
        ]
        read = execute(
            client, made.id, "open('/mnt/data/one.txt').read() + open('/mnt/data/two.csv').read()"
        )
        assert text_result(read) == repr("first" + "a,b\n1,2\n")
    finally:
        client.containers.delete(made.id)


# --------------------------------------------------------------------------- execute


def test_execute_value_state_and_count(client: openai.OpenAI, container: str) -> None:
    """`1+1` is an execute_result "2"; state persists and execution_count goes up by one."""
    first = execute(client, container, "1+1")
    assert set(first) >= EXECUTE_KEYS, first
    assert first["status"] == "ok" and first["error"] is None
    assert first["results"][0]["type"] == "execute_result"
    assert first["results"][0]["data"]["text/plain"] == "2"
    assert isinstance(first["execution_count"], int)
    assert isinstance(first["duration_ms"], int | float) and first["duration_ms"] >= 0

    second = execute(client, container, "x = 41\nprint('set')")
    assert second["status"] == "ok" and second["stdout"] == "set\n" and second["results"] == []
    third = execute(client, container, "x + 1")
    assert text_result(third) == "42"
    assert second["execution_count"] == first["execution_count"] + 1
    assert third["execution_count"] == first["execution_count"] + 2


def test_execute_exception(client: openai.OpenAI, container: str) -> None:
    """An exception ends the execution as "error" with its name, value and traceback."""
    body = execute(client, container, "print('before')\n1 / 0")
    assert body["status"] == "error", body
    assert body["stdout"] == "before\n"
    assert body["error"]["name"] == "ZeroDivisionError"
    assert "division by zero" in body["error"]["value"]
    assert isinstance(body["error"]["traceback"], str)
    assert text_result(execute(client, container, "'still alive'")) == repr("still alive")


def test_execute_plot_is_saved_as_container_file(client: openai.OpenAI, container: str) -> None:
    """A displayed plot is a display_data result with image/png and a container file under
    /mnt/data/outputs/ whose content is that PNG; written files are in `files` with ids."""
    body = execute(
        client,
        container,
        "import matplotlib.pyplot as plt\n"
        "open('/mnt/data/values.txt', 'w').write('3 1 4')\n"
        "plt.plot([3, 1, 4])\nplt.show()",
    )
    assert body["status"] == "ok", body
    images = [r for r in body["results"] if "image/png" in r["data"]]
    assert len(images) == 1, body["results"]
    image = images[0]
    assert image["type"] == "display_data"
    assert image["path"].startswith("/mnt/data/outputs/") and image["path"].endswith(".png")
    png = client.containers.files.content.retrieve(image["file_id"], container_id=container).read()
    assert png.startswith(PNG_MAGIC)
    assert png == base64.b64decode(image["data"]["image/png"])

    written = [f for f in body["files"] if f["name"] == "values.txt"]
    assert len(written) == 1 and written[0]["change"] == "created", body["files"]
    listed = {f.id: f for f in client.containers.files.list(container).data}
    assert written[0]["id"] in listed
    assert listed[written[0]["id"]].path == "/mnt/data/values.txt"
    assert listed[image["file_id"]].path == image["path"]
    assert listed[image["file_id"]].source == "assistant"
    assert all(f["id"] in listed for f in body["files"] if f["change"] != "deleted")


def test_execute_timeout(client: openai.OpenAI, container: str) -> None:
    """A sleep past `timeout` ends as "timeout" soon after it; the container works on."""
    execute(client, container, "kept = 'yes'")
    started = time.monotonic()
    body = execute(client, container, "import time; time.sleep(10)", timeout=0.5)
    assert body["status"] == "timeout", body
    assert time.monotonic() - started < 4
    assert text_result(execute(client, container, "1 + 1")) == "2"
    assert text_result(execute(client, container, "kept")) == repr("yes")


# --------------------------------------------------------------------------- streaming


STREAMED = """import time
print("first", flush=True)
time.sleep(1)
print("second")
6 * 7
"""


def test_execute_stream_events_and_heartbeats(server: ServerProcess, container: str) -> None:
    """stream: true sends stdout as it happens (before the code ends), then result, then end
    (the whole non-streamed body); quiet stretches carry `: keep-alive` comment lines."""
    events: list[tuple[str, Any, float]] = []
    with (
        raw_client(server) as http,
        http.stream(
            "POST", f"/containers/{container}/execute", json={"code": STREAMED, "stream": True}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_items(response))

    names = [name for name, _, _ in events if name]
    collapsed = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
    assert collapsed == ["stdout", "result", "end"], names
    stdout = [(data, at) for name, data, at in events if name == "stdout"]
    assert "".join(d["text"] for d, _ in stdout) == "first\nsecond\n"
    assert stdout[0][0]["text"].startswith("first")
    end_at = events[-1][2]
    assert end_at - stdout[0][1] > 0.7, "the first line came only when the code ended"

    heartbeats = [data for name, data, _ in events if name == ""]
    assert heartbeats and all(h == ": keep-alive" for h in heartbeats), heartbeats

    result = next(data for name, data, _ in events if name == "result")
    assert result["type"] == "execute_result" and result["data"]["text/plain"] == "42"
    end = events[-1][1]
    assert events[-1][0] == "end"
    assert set(end) >= EXECUTE_KEYS, end
    assert end["status"] == "ok" and end["stdout"] == "first\nsecond\n" and end["error"] is None
    assert end["results"] == [result]
    with server.client() as sdk:
        plain = execute(sdk, container, STREAMED)
    assert set(plain) == set(end)
    assert plain["stdout"] == end["stdout"] and plain["results"] == end["results"]
    assert plain["execution_count"] == end["execution_count"] + 1


def test_execute_stream_error_event(server: ServerProcess, container: str) -> None:
    """An exception in streamed code is an `error` event before `end` (status "error")."""
    with (
        raw_client(server) as http,
        http.stream(
            "POST", f"/containers/{container}/execute", json={"code": "1/0", "stream": True}
        ) as response,
    ):
        events = [(n, d) for n, d, _ in sse_items(response) if n]
    assert [n for n, _ in events] == ["error", "end"], events
    assert events[0][1]["name"] == "ZeroDivisionError"
    assert events[1][1]["status"] == "error"
    assert events[1][1]["error"] == events[0][1]


LOOP = """import time
n = 0
print("looping", flush=True)
while True:
    n += 1
    time.sleep(0.01)
"""


def test_disconnect_interrupts_the_code(
    server: ServerProcess, client: openai.OpenAI, container: str
) -> None:
    """Closing the stream stops the running code; the container keeps its state and answers
    promptly afterwards."""
    with (
        raw_client(server) as http,
        http.stream(
            "POST", f"/containers/{container}/execute", json={"code": LOOP, "stream": True}
        ) as response,
    ):
        assert response.status_code == 200
        # Read on (heartbeats) for 0.3 s after the first line, so that the loop has run a while
        # (n > 0), then hang up: leaving the iteration closes the connection at once.
        printed_at: float | None = None
        for name, _data, at in sse_items(response):
            assert name != "end", "the loop ended by itself"
            if name == "stdout" and printed_at is None:
                printed_at = at
            if printed_at is not None and at - printed_at >= 0.3:
                break
        else:
            pytest.fail("the stream ended without stdout")

    started = time.monotonic()
    first = execute(client, container, "n", timeout=10)
    assert time.monotonic() - started < 3, "the container stayed busy after the disconnect"
    time.sleep(0.5)
    second = execute(client, container, "n", timeout=10)
    assert text_result(first) == text_result(second), "the loop still runs"
    assert int(text_result(first)) > 0  # the state survived the interrupt
    assert text_result(execute(client, container, "1 + 1")) == "2"


def test_interrupt_endpoint(server: ServerProcess, client: openai.OpenAI, container: str) -> None:
    """POST /interrupt stops a running execute: it ends "interrupted", and interrupt says so."""
    execute(client, container, "kept = 1")
    outcome: dict[str, Any] = {}

    def run() -> None:
        with server.client() as sdk:
            started = time.monotonic()
            outcome["body"] = execute(
                sdk,
                container,
                "open('/mnt/data/started', 'w').close()\nimport time\ntime.sleep(30)",
                timeout=60,
            )
            outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while not any(
            f.path == "/mnt/data/started" for f in client.containers.files.list(container).data
        ):
            assert time.monotonic() < deadline, "the code never started"
            time.sleep(0.05)
        answer = client.post(f"/containers/{container}/interrupt", cast_to=object)
    finally:
        worker.join(40)
    assert answer == {"id": container, "object": "container.interrupt", "interrupted": True}
    assert outcome["body"]["status"] == "interrupted", outcome["body"]
    assert outcome["seconds"] < 10
    assert text_result(execute(client, container, "kept")) == "1"

    idle = client.post(f"/containers/{container}/interrupt", cast_to=object)
    assert idle == {"id": container, "object": "container.interrupt", "interrupted": False}


# --------------------------------------------------------------------------- bad input


def _count(client: openai.OpenAI) -> int:
    return len(list(client.containers.list(limit=100)))


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "name"),
        ({"name": "x", "memory_limit": "2g"}, 400, "memory_limit"),
        ({"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}}, 400, Any),
        ({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 0}}, 400, Any),
        (
            {"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": []}},
            400,
            Any,
        ),
        ({"name": "x", "file_ids": ["file-doesnotexist"]}, 404, Any),
    ],
    ids=["no-name", "memory-2g", "anchor", "minutes-0", "allowlist-empty", "missing-file"],
)
def test_bad_create_is_refused_and_makes_nothing(
    server: ServerProcess, client: openai.OpenAI, body: dict[str, Any], status: int, param: Any
) -> None:
    """Each bad create is OpenAI's error envelope with the right status, and no container."""
    before = _count(client)
    with raw_client(server) as http:
        response = http.post("/containers", json=body)
    error = assert_envelope(response, status, param=param)
    if status == 400 and param is Any:
        first_key = next(k for k in body if k != "name")
        assert error["param"] is not None and error["param"].startswith(first_key), error
    assert _count(client) == before


def test_bad_execute_and_file_requests(server: ServerProcess, container: str) -> None:
    """Execute without code or with a negative timeout is a 400; a missing container or
    container file is a 404; an upload with neither a file part nor a file_id is a 400."""
    missing = "cntr_doesnotexist"
    with raw_client(server) as http:
        assert_envelope(http.post(f"/containers/{container}/execute", json={}), 400, param="code")
        assert_envelope(
            http.post(f"/containers/{container}/execute", json={"code": "1", "timeout": -1}),
            400,
            param="timeout",
        )
        assert_envelope(http.post(f"/containers/{missing}/execute", json={"code": "1"}), 404)
        assert_envelope(
            http.post(f"/containers/{missing}/execute", json={"code": "1", "stream": True}), 404
        )
        assert_envelope(http.post(f"/containers/{missing}/interrupt"), 404)
        assert_envelope(http.get(f"/containers/{missing}"), 404)
        assert_envelope(http.delete(f"/containers/{missing}"), 404)
        assert_envelope(http.get(f"/containers/{missing}/files"), 404)

        gone = "cfile_doesnotexist"
        assert_envelope(http.get(f"/containers/{container}/files/{gone}"), 404)
        assert_envelope(http.get(f"/containers/{container}/files/{gone}/content"), 404)
        assert_envelope(http.delete(f"/containers/{container}/files/{gone}"), 404)

        assert_envelope(http.post(f"/containers/{container}/files", json={}), 400)
        assert_envelope(http.post(f"/containers/{container}/files"), 400)
        assert_envelope(
            http.post(f"/containers/{container}/files", files={"other": ("a.txt", b"a")}), 400
        )
        assert_envelope(
            http.post(f"/containers/{container}/files", json={"file_id": "file-nope"}), 404
        )
        assert http.get(f"/containers/{container}/files").json()["data"] == []


# --------------------------------------------------------------------------- expiry


@pytest.fixture(scope="module")
def expiring_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that caps every container's idle time at 1.8 s, with session persistence off:
    idle containers expire, as with OpenAI (test_persistence.py has them sleep and wake)."""
    data_dir: Path = tmp_path_factory.mktemp("containers-expiry")
    env = {
        "CODEINTERP_SESSION_PERSISTENCE": "false",
        "CODEINTERP_CONTAINER_IDLE_CAP_MINUTES": str(IDLE_CAP_MINUTES),
        "CODEINTERP_POOL_SIZE": "1",
    }
    with ServerProcess(env, data_dir=data_dir) as process:
        yield process


@pytest.fixture
def quick(expiring_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with expiring_server.client() as sdk:
        yield sdk


def _sessions(client: openai.OpenAI, since: int) -> int:
    usage = client.get(
        "/organization/usage/code_interpreter_sessions",
        cast_to=object,
        options={"params": {"start_time": since}},
    )
    assert isinstance(usage, dict) and usage["object"] == "page", usage
    return sum(r["num_sessions"] for b in usage["data"] for r in b["results"])


def test_list_shows_an_idle_container_as_expired(quick: openai.OpenAI) -> None:
    """Past its idle time a container is "expired" in the list too, not only in retrieve."""
    name = unique("listed")
    made = quick.containers.create(name=name)
    time.sleep(IDLE_CAP_MINUTES * 60 + 1.2)
    listed = {c.id: c.status for c in quick.containers.list(name=name).data}
    retrieved = quick.containers.retrieve(made.id).status
    quick.containers.delete(made.id)
    assert retrieved == "expired"
    assert listed == {made.id: "expired"}


def test_idle_container_expires_and_used_one_does_not(quick: openai.OpenAI) -> None:
    """Left alone past its idle time a container shows "expired"; one retrieved every 0.6 s
    stays running, with its state."""
    idle = quick.containers.create(name=unique("idle"))
    busy = quick.containers.create(name=unique("busy"))
    execute(quick, busy.id, "kept = 'here'")
    stop = time.monotonic() + 4
    while time.monotonic() < stop:
        assert quick.containers.retrieve(busy.id).status == "running"
        time.sleep(0.6)

    assert quick.containers.retrieve(idle.id).status == "expired"
    kept = quick.containers.retrieve(busy.id)
    assert kept.status == "running"
    assert kept.last_active_at >= busy.created_at + 3  # every retrieve counted as activity
    assert text_result(execute(quick, busy.id, "kept")) == repr("here")
    quick.containers.delete(busy.id)
    quick.containers.delete(idle.id)


def test_expired_container_refuses_work(
    expiring_server: ServerProcess, quick: openai.OpenAI
) -> None:
    """Retrieve shows an expired container as such; execute, interrupt and the files calls are
    400 container_expired; it can still be deleted (then 404)."""
    made = quick.containers.create(name=unique("gone"))
    upload = quick.containers.files.create(made.id, file=("a.txt", b"a"))
    time.sleep(IDLE_CAP_MINUTES * 60 + 1.2)
    got = quick.containers.retrieve(made.id)
    assert got.status == "expired" and got.id == made.id

    calls = [
        lambda: execute(quick, made.id, "1"),
        lambda: quick.post(f"/containers/{made.id}/interrupt", cast_to=object),
        lambda: quick.containers.files.list(made.id),
        lambda: quick.containers.files.create(made.id, file=("b.txt", b"b")),
        lambda: quick.containers.files.retrieve(upload.id, container_id=made.id),
        lambda: quick.containers.files.content.retrieve(upload.id, container_id=made.id),
        lambda: quick.containers.files.delete(upload.id, container_id=made.id),
    ]
    for call in calls:
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        assert assert_sdk_error(caught.value, 400)["code"] == "container_expired"
    with raw_client(expiring_server) as http:
        response = http.post(f"/containers/{made.id}/execute", json={"code": "1", "stream": True})
    assert assert_envelope(response, 400)["code"] == "container_expired"

    quick.containers.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        quick.containers.retrieve(made.id)


def test_usage_counts_a_session_per_container(quick: openai.OpenAI) -> None:
    """Each container is one code interpreter session in the usage report."""
    since = int(time.time()) - 1
    before = _sessions(quick, since)
    made = quick.containers.create(name=unique("usage"))
    try:
        assert text_result(execute(quick, made.id, "2 + 2")) == "4"
        assert _sessions(quick, since) == before + 1
    finally:
        quick.containers.delete(made.id)

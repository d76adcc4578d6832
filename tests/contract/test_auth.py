"""API keys and projects: each key sees only its project's objects; a bad key is a 401.

With ``CODEINTERP_API_KEYS="key-a:proj_a,key-b:proj_b"`` an object made with key-a does not exist
for key-b (404, absent from lists). Without keys any key is accepted, and only on loopback: the
CLI refuses to listen on 0.0.0.0 with no keys.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.contract.helpers import assert_envelope, assert_sdk_error, raw_client
from tests.support.server import ServerProcess, free_port, port_is_free

pytestmark = pytest.mark.root

MODEL = "gpt-test"
KEYS = "key-a:proj_a,key-b:proj_b"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with two keys, each in its own project."""
    data_dir: Path = tmp_path_factory.mktemp("keyed")
    env = {"CODEINTERP_API_KEYS": KEYS, "CODEINTERP_POOL_SIZE": "1"}
    with ServerProcess(env, data_dir=data_dir) as process:
        yield process


@pytest.fixture
def client_a(keyed_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with keyed_server.client(api_key="key-a") as sdk:
        yield sdk


@pytest.fixture
def client_b(keyed_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with keyed_server.client(api_key="key-b") as sdk:
        yield sdk


@dataclass(frozen=True)
class Owned:
    """What key-a made."""

    assistant: str
    thread: str
    message: str
    file: str


@pytest.fixture(scope="module")
def owned(keyed_server: ServerProcess) -> Owned:
    """An assistant, a thread with a message and a file, all made with key-a."""
    with keyed_server.client(api_key="key-a") as sdk:
        assistant = sdk.beta.assistants.create(model=MODEL, name="A's assistant")
        thread = sdk.beta.threads.create()
        message = sdk.beta.threads.messages.create(thread.id, role="user", content="A's words")
        file = sdk.files.create(file=("a.txt", b"A's bytes"), purpose="assistants")
    return Owned(assistant.id, thread.id, message.id, file.id)


# --------------------------------------------------------------------------- isolation


def test_other_project_cannot_retrieve(client_b: openai.OpenAI, owned: Owned) -> None:
    """Key-b gets a 404 for each of key-a's objects, exactly as for an id that never existed."""
    calls = [
        lambda: client_b.beta.assistants.retrieve(owned.assistant),
        lambda: client_b.beta.threads.retrieve(owned.thread),
        lambda: client_b.beta.threads.messages.retrieve(owned.message, thread_id=owned.thread),
        lambda: client_b.beta.threads.messages.list(owned.thread),
        lambda: client_b.beta.threads.runs.list(owned.thread),
        lambda: client_b.files.retrieve(owned.file),
        lambda: client_b.files.content(owned.file),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert_sdk_error(caught.value, 404)


def test_other_project_file_content_is_404_over_http(
    keyed_server: ServerProcess, owned: Owned
) -> None:
    """``GET /files/{id}/content`` with key-b is a 404 envelope and not one byte of the file."""
    with raw_client(keyed_server, api_key="key-b") as http:
        response = http.get(f"/files/{owned.file}/content")
    assert_envelope(response, 404)
    assert b"A's bytes" not in response.content


def test_other_project_cannot_modify_delete_or_use(
    client_a: openai.OpenAI, client_b: openai.OpenAI, owned: Owned
) -> None:
    """Key-b can neither change, delete nor use key-a's objects; they stay intact for key-a."""
    own_thread = client_b.beta.threads.create()
    calls = [
        lambda: client_b.beta.assistants.update(owned.assistant, name="hijacked"),
        lambda: client_b.beta.assistants.delete(owned.assistant),
        lambda: client_b.beta.threads.update(owned.thread, metadata={"x": "y"}),
        lambda: client_b.beta.threads.delete(owned.thread),
        lambda: client_b.beta.threads.messages.create(owned.thread, role="user", content="hi"),
        lambda: client_b.beta.threads.messages.delete(owned.message, thread_id=owned.thread),
        lambda: client_b.files.delete(owned.file),
        lambda: client_b.beta.threads.runs.create(own_thread.id, assistant_id=owned.assistant),
        lambda: client_b.beta.threads.messages.create(
            own_thread.id,
            role="user",
            content="use A's file",
            attachments=[{"file_id": owned.file, "tools": [{"type": "code_interpreter"}]}],
        ),
        lambda: client_b.beta.assistants.create(
            model=MODEL, tool_resources={"code_interpreter": {"file_ids": [owned.file]}}
        ),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert_sdk_error(caught.value, 404)

    assert client_a.beta.assistants.retrieve(owned.assistant).name == "A's assistant"
    assert client_a.beta.threads.retrieve(owned.thread).metadata == {}
    messages = client_a.beta.threads.messages.list(owned.thread).data
    assert [m.id for m in messages] == [owned.message]
    assert client_a.files.content(owned.file).read() == b"A's bytes"
    assert client_b.beta.threads.messages.list(own_thread.id).data == []


def test_lists_exclude_other_projects(
    client_a: openai.OpenAI, client_b: openai.OpenAI, owned: Owned
) -> None:
    """Each key's lists hold its own objects and none of the other key's."""
    b_assistant = client_b.beta.assistants.create(model=MODEL, name="B's assistant")
    b_file = client_b.files.create(file=("b.txt", b"B's bytes"), purpose="assistants")

    a_assistants = [a.id for a in client_a.beta.assistants.list()]
    b_assistants = [a.id for a in client_b.beta.assistants.list()]
    assert owned.assistant in a_assistants and b_assistant.id not in a_assistants
    assert b_assistant.id in b_assistants and owned.assistant not in b_assistants

    a_files = [f.id for f in client_a.files.list()]
    b_files = [f.id for f in client_b.files.list()]
    assert owned.file in a_files and b_file.id not in a_files
    assert b_file.id in b_files and owned.file not in b_files
    assert [f.id for f in client_b.files.list(purpose="assistants")] == b_files


def test_other_project_cannot_see_or_use_containers(
    client_a: openai.OpenAI, client_b: openai.OpenAI, owned: Owned
) -> None:
    """Key-a's container and its files are a 404 for key-b on every call, absent from key-b's
    list, and untouched for key-a; key-b cannot load key-a's file into a container."""
    box = client_a.containers.create(name="A's container")
    try:
        stored = client_a.containers.files.create(box.id, file=("a.txt", b"A's secret"))
        calls = [
            lambda: client_b.containers.retrieve(box.id),
            lambda: client_b.containers.delete(box.id),
            lambda: client_b.post(
                f"/containers/{box.id}/execute", body={"code": "1"}, cast_to=object
            ),
            lambda: client_b.post(f"/containers/{box.id}/interrupt", cast_to=object),
            lambda: client_b.containers.files.list(box.id),
            lambda: client_b.containers.files.create(box.id, file=("b.txt", b"B")),
            lambda: client_b.containers.files.retrieve(stored.id, container_id=box.id),
            lambda: client_b.containers.files.content.retrieve(stored.id, container_id=box.id),
            lambda: client_b.containers.files.delete(stored.id, container_id=box.id),
            lambda: client_b.containers.create(name="B's", file_ids=[owned.file]),
        ]
        for call in calls:
            with pytest.raises(openai.NotFoundError) as caught:
                call()
            assert_sdk_error(caught.value, 404)
        assert box.id not in [c.id for c in client_b.containers.list(limit=100)]
        assert box.id in [c.id for c in client_a.containers.list(limit=100)]
        assert client_a.containers.retrieve(box.id).status == "running"
        content = client_a.containers.files.content.retrieve(stored.id, container_id=box.id)
        assert content.read() == b"A's secret"
        assert [f.id for f in client_a.containers.files.list(box.id).data] == [stored.id]
    finally:
        client_a.containers.delete(box.id)


def test_cursor_from_another_project_is_not_accepted(
    keyed_server: ServerProcess, owned: Owned
) -> None:
    """An id from another project is not a cursor in this project's list (a 400, not a page)."""
    with raw_client(keyed_server, api_key="key-b") as http:
        response = http.get("/assistants", params={"after": owned.assistant})
    assert_envelope(response, 400, param="after")


# --------------------------------------------------------------------------- bad keys


def test_wrong_key_is_unauthorized(keyed_server: ServerProcess) -> None:
    """An unknown key is an ``AuthenticationError`` (401) with OpenAI's envelope."""
    with keyed_server.client(api_key="key-c") as sdk:
        for call in (
            lambda: sdk.beta.assistants.list(),
            lambda: sdk.files.list(),
            lambda: sdk.beta.threads.create(),
        ):
            with pytest.raises(openai.AuthenticationError) as caught:
                call()
            error = assert_sdk_error(caught.value, 401)
            assert error["code"] == "invalid_api_key", error


def test_missing_key_is_unauthorized(keyed_server: ServerProcess) -> None:
    """No Authorization header, or not a Bearer one, is a 401 envelope that says what to send."""
    with raw_client(keyed_server, api_key=None) as http:
        error = assert_envelope(http.get("/assistants"), 401)
        assert "api key" in error["message"].lower(), error
        assert_envelope(http.post("/threads", json={}), 401)
        basic = http.get("/files", headers={"Authorization": "Basic a2V5LWE6"})
        assert_envelope(basic, 401)
        empty = http.get("/files", headers={"Authorization": "Bearer"})
        assert_envelope(empty, 401)


def test_long_wrong_key_is_not_echoed_whole(keyed_server: ServerProcess) -> None:
    """A rejected key is shown masked in the message, never in full."""
    secret = "sk-this-is-a-long-secret-key-1234"
    with (
        keyed_server.client(api_key=secret) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.beta.assistants.list()
    error = assert_sdk_error(caught.value, 401)
    assert secret not in error["message"], error


def test_unauthorized_writes_store_nothing(
    keyed_server: ServerProcess, client_a: openai.OpenAI
) -> None:
    """A create refused for its key leaves nothing behind in any project."""
    before = [a.id for a in client_a.beta.assistants.list(limit=100)]
    with keyed_server.client(api_key="key-c") as sdk:
        with pytest.raises(openai.AuthenticationError):
            sdk.beta.assistants.create(model=MODEL, name="intruder")
        with pytest.raises(openai.AuthenticationError):
            sdk.files.create(file=("x.txt", b"intruder"), purpose="assistants")
    assert [a.id for a in client_a.beta.assistants.list(limit=100)] == before
    assert "intruder" not in [f.filename for f in client_a.files.list()]


# --------------------------------------------------------------------------- keys without a project

# Two keys that differ only before their last six characters, configured without projects.
UNNAMED = ("team-a-key-000001", "team-b-key-000001")


def _fingerprint(key: str) -> str:
    """How the server names a key in its output (README: the first 12 hex digits of the key's
    SHA-256)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def test_keys_without_a_project_each_get_their_own(tmp_path: Path) -> None:
    """Keys configured without a project are in projects of their own, however alike they are:
    one key's containers, container files and files are a 404 for the other. The server says
    at start-up which project each key is in, naming keys only by fingerprint."""
    env = {"CODEINTERP_API_KEYS": ",".join(UNNAMED), "CODEINTERP_POOL_SIZE": "1"}
    with (
        ServerProcess(env, data_dir=tmp_path / "data") as server,
        server.client(api_key=UNNAMED[0]) as team_a,
        server.client(api_key=UNNAMED[1]) as team_b,
    ):
        box = team_a.containers.create(name="team a's")
        stored = team_a.containers.files.create(box.id, file=("plan.txt", b"team a's plan"))
        file = team_a.files.create(file=("a.txt", b"team a's file"), purpose="assistants")
        calls = [
            lambda: team_b.containers.retrieve(box.id),
            lambda: team_b.containers.files.list(box.id),
            lambda: team_b.containers.files.content.retrieve(stored.id, container_id=box.id),
            lambda: team_b.post(
                f"/containers/{box.id}/execute", body={"code": "1"}, cast_to=object
            ),
            lambda: team_b.files.retrieve(file.id),
            lambda: team_b.files.content(file.id),
        ]
        for call in calls:
            with pytest.raises(openai.NotFoundError) as caught:
                call()
            assert_sdk_error(caught.value, 404)
        assert box.id not in [c.id for c in team_b.containers.list(limit=100)]
        assert file.id not in [f.id for f in team_b.files.list()]
        content = team_a.containers.files.content.retrieve(stored.id, container_id=box.id)
        assert content.read() == b"team a's plan"
        logs = server.logs()

    projects = {}
    for key in UNNAMED:
        assert key not in logs, "the server printed a key"
        lines = [line for line in logs.splitlines() if _fingerprint(key) in line]
        assert len(lines) == 1, (key, logs[-3000:])
        named = [word for word in lines[0].split() if word.startswith("proj_")]
        assert len(named) == 1, lines[0]
        projects[key] = named[0]
    assert len(set(projects.values())) == 2, projects
    assert all(len(p) >= len("proj_") + 24 for p in projects.values()), projects


def test_objects_of_the_earlier_shared_project_are_kept_and_reachable(tmp_path: Path) -> None:
    """Earlier versions put a key without a project in `proj_` + its last six characters. Such
    objects stay where they are: the server says so at start-up (by fingerprint) and naming
    that project for the key reaches them again."""
    key = UNNAMED[0]
    earlier = f"{key}:proj_{key[-6:]}"  # what an earlier version did for this key
    server = ServerProcess({"CODEINTERP_API_KEYS": earlier}, data_dir=tmp_path / "data")
    with server:
        with server.client(api_key=key) as sdk:
            kept = sdk.beta.assistants.create(model=MODEL, name="made earlier")
        server.env["CODEINTERP_API_KEYS"] = key
        server.restart()
        with server.client(api_key=key) as sdk, pytest.raises(openai.NotFoundError):
            sdk.beta.assistants.retrieve(kept.id)
        start = server.logs().rsplit("===== start", 1)[-1]
        warning = [line for line in start.splitlines() if "earlier version" in line]
        assert len(warning) == 1 and _fingerprint(key) in warning[0], start[-3000:]
        assert key not in start and key[-6:] not in warning[0], warning
        server.env["CODEINTERP_API_KEYS"] = earlier
        server.restart()
        with server.client(api_key=key) as sdk:
            assert sdk.beta.assistants.retrieve(kept.id).name == "made earlier"


# --------------------------------------------------------------------------- no keys


def test_without_keys_any_key_works(server: ServerProcess) -> None:
    """With no keys configured every key is accepted, and all share one project."""
    with server.client(api_key="anything") as one, server.client(api_key="sk-other") as two:
        assistant = one.beta.assistants.create(model=MODEL, name="shared")
        assert two.beta.assistants.retrieve(assistant.id).name == "shared"
        assert assistant.id in [a.id for a in two.beta.assistants.list()]
    with raw_client(server, api_key=None) as http:
        response = http.get(f"/assistants/{assistant.id}")
    assert response.status_code == 200, response.text


def test_serve_on_all_interfaces_without_keys_refuses_to_start(tmp_path: Path) -> None:
    """``codeinterp serve --host 0.0.0.0`` with no keys exits at once, non-zero, with one line."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "codeinterp.cli.main",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env={k: v for k, v in os.environ.items() if not k.startswith(("CODEINTERP_", "OPENAI_"))},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"serve --host 0.0.0.0 without keys kept running; stderr:\n{stderr}")
    elapsed = time.monotonic() - started
    assert process.returncode != 0, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "CODEINTERP_API_KEYS" in lines[0] and "0.0.0.0" in lines[0], lines[0]
    assert "Traceback" not in stderr and stdout == ""
    assert elapsed < 20, f"took {elapsed:.1f}s to refuse"
    assert port_is_free(port, "0.0.0.0")
    assert not (tmp_path / "data").exists(), "it created its data directory before refusing"

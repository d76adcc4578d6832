"""A crash (SIGKILL) or a stop loses nothing stored; runs cut short are failed, not resumed.

The module has its own server and scripted upstream, since it kills and restarts the server.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.contract.helpers import raw_client
from tests.support.server import ServerProcess
from tests.support.upstream import Delay, ScriptedUpstream, Text

pytestmark = pytest.mark.root

MODEL = "gpt-test"
CSV = b"month,revenue\n2026-01,1000\n2026-02,1100\n" + bytes(range(256))


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as scripted:
        yield scripted


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("restart")
    env = {
        "CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url,
        "CODEINTERP_UPSTREAM_API_KEY": "sk-upstream-test",
        "CODEINTERP_POOL_SIZE": "1",
        "CODEINTERP_POLL_AFTER_MS": "20",
        # no checkpoints: a session the crash cuts off was never saved (test_persistence.py)
        "CODEINTERP_CHECKPOINT_SECONDS": "0",
    }
    with ServerProcess(env, data_dir=data_dir) as process:
        yield process


@pytest.fixture(autouse=True)
def _clean_upstream(upstream: ScriptedUpstream) -> Iterator[None]:
    upstream.reset()
    yield
    upstream.check()


@dataclass
class Made:
    """Objects made before the server goes down."""

    assistant: str
    thread: str
    file: str
    run: str


def make_objects(server: ServerProcess, upstream: ScriptedUpstream, answer: str) -> Made:
    """An assistant, a file, a thread with messages (one with the file) and a completed run."""
    upstream.reset([Text(answer)])
    with server.client() as sdk:
        assistant = sdk.beta.assistants.create(
            model=MODEL,
            name="Survivor",
            description="outlives restarts",
            instructions="Answer briefly.",
            tools=[{"type": "code_interpreter"}],
            metadata={"case": answer},
            temperature=0.25,
        )
        file = sdk.files.create(file=("sales.csv", CSV), purpose="assistants")
        thread = sdk.beta.threads.create(
            messages=[
                {
                    "role": "user",
                    "content": "Here is the data.",
                    "attachments": [{"file_id": file.id, "tools": [{"type": "code_interpreter"}]}],
                }
            ],
            metadata={"topic": "restart"},
        )
        sdk.beta.threads.messages.create(
            thread.id, role="user", content="Say hello.", metadata={"order": "2"}
        )
        run = sdk.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20
        )
        assert run.status == "completed", run.last_error
    upstream.check()
    return Made(assistant.id, thread.id, file.id, run.id)


def snapshot(server: ServerProcess, made: Made) -> dict[str, Any]:
    """The wire form of every object in ``made`` (and its file's bytes), read over raw HTTP."""
    thread, run = made.thread, made.run
    paths = {
        "assistant": f"/assistants/{made.assistant}",
        "thread": f"/threads/{thread}",
        "messages": f"/threads/{thread}/messages?order=asc&limit=100",
        "file": f"/files/{made.file}",
        "run": f"/threads/{thread}/runs/{run}",
        "steps": f"/threads/{thread}/runs/{run}/steps?order=asc&limit=100",
    }
    result: dict[str, Any] = {}
    with raw_client(server) as http:
        for name, path in paths.items():
            response = http.get(path)
            assert response.status_code == 200, (path, response.text)
            result[name] = response.json()
        content = http.get(f"/files/{made.file}/content")
        assert content.status_code == 200, content.text
        result["content"] = content.content
        for message in result["messages"]["data"]:
            one = http.get(f"/threads/{thread}/messages/{message['id']}")
            assert one.json() == message
        for step in result["steps"]["data"]:
            one = http.get(f"/threads/{thread}/runs/{run}/steps/{step['id']}")
            assert one.json() == step
    return result


def start_hanging_run(server: ServerProcess, upstream: ScriptedUpstream, made: Made) -> str:
    """A run whose model turn hangs for 30 s; returns its id once the model has been asked."""
    upstream.reset([Delay(30, then=Text("never seen"))])
    with server.client() as sdk:
        run = sdk.beta.threads.runs.create(made.thread, assistant_id=made.assistant)
        upstream.wait_for_requests(1, timeout=20)
        live = sdk.beta.threads.runs.retrieve(run.id, thread_id=made.thread)
        assert live.status == "in_progress", live
    return run.id


def check_survived(server: ServerProcess, made: Made, before: dict[str, Any]) -> None:
    after = snapshot(server, made)
    for name in before:
        assert after[name] == before[name], f"{name} changed across the restart"
    assert after["content"] == CSV


def check_new_run_works(server: ServerProcess, upstream: ScriptedUpstream, made: Made) -> None:
    """A new run on the same thread completes and the model sees the thread's history."""
    upstream.reset([Text("back again")])
    with server.client() as sdk:
        run = sdk.beta.threads.runs.create_and_poll(
            thread_id=made.thread, assistant_id=made.assistant, poll_interval_ms=20
        )
        assert run.status == "completed", run.last_error
        newest = sdk.beta.threads.messages.list(made.thread, limit=1).data[0]
        assert newest.run_id == run.id
        assert newest.content[0].text.value == "back again"  # type: ignore[union-attr]
    assert len(upstream.requests) == 1, "the failed run was resumed after the restart"
    contents = [m.get("content") for m in upstream.requests[0]["messages"]]
    history = "\n".join(str(c) for c in contents)
    assert "Here is the data." in history and "Say hello." in history, history
    upstream.check()


def test_kill_during_run_keeps_data_and_fails_the_run(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    """After SIGKILL mid-run every stored object is intact and the interrupted run is failed."""
    made = make_objects(server, upstream, "hello")
    before = snapshot(server, made)
    inflight = start_hanging_run(server, upstream, made)

    assert server.kill() == -9
    upstream.wait_for_disconnect(0, timeout=10)
    upstream.reset()
    server.restart()

    check_survived(server, made, before)
    with server.client() as sdk:
        run = sdk.beta.threads.runs.retrieve(inflight, thread_id=made.thread)
        assert run.status == "failed", run
        assert run.last_error is not None and run.last_error.code == "server_error"
        assert "restart" in run.last_error.message.lower(), run.last_error
        assert run.failed_at is not None and run.expires_at is None
        listed = sdk.beta.threads.runs.list(made.thread, order="asc").data
        assert [(r.id, r.status) for r in listed] == [(made.run, "completed"), (inflight, "failed")]
        for step in sdk.beta.threads.runs.steps.list(inflight, thread_id=made.thread):
            assert step.status != "in_progress", step
        for message in sdk.beta.threads.messages.list(made.thread, run_id=inflight):
            assert message.status != "in_progress", message
    assert upstream.requests == [], "the failed run was resumed after the restart"
    check_new_run_works(server, upstream, made)


def test_graceful_stop_keeps_data(server: ServerProcess, upstream: ScriptedUpstream) -> None:
    """A stop (SIGTERM) and start keeps every object; a run cut short by the stop is failed."""
    made = make_objects(server, upstream, "graceful")
    before = snapshot(server, made)
    inflight = start_hanging_run(server, upstream, made)

    logged = len(server.logs())
    # uvicorn shuts down, then re-raises the SIGTERM it caught: -15 is a clean exit, -9 is not.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in server.logs()[logged:], server.logs_tail()
    upstream.wait_for_disconnect(0, timeout=10)
    upstream.reset()
    server.start()

    check_survived(server, made, before)
    with server.client() as sdk:
        run = sdk.beta.threads.runs.retrieve(inflight, thread_id=made.thread)
        assert run.status == "failed", run
        assert run.last_error is not None and run.last_error.code == "server_error"
        message = run.last_error.message.lower()
        assert "shut down" in message or "restart" in message, run.last_error
    assert upstream.requests == []
    check_new_run_works(server, upstream, made)


def test_objects_survive_several_restarts_in_a_row(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    """Objects survive a crash and two stops in a row, listed in the order they were made."""
    made = make_objects(server, upstream, "again")
    before = snapshot(server, made)
    with server.client() as sdk:
        assistants = [a.id for a in sdk.beta.assistants.list(order="asc")]
        files = [f.id for f in sdk.files.list(order="asc")]
    assert made.assistant in assistants and made.file in files
    server.kill()
    server.restart()
    server.restart()
    check_survived(server, made, before)
    with server.client() as sdk:
        assert [a.id for a in sdk.beta.assistants.list(order="asc")] == assistants
        assert [f.id for f in sdk.files.list(order="asc")] == files
        for file_id in files:
            assert sdk.files.content(file_id).read() == CSV


def test_containers_and_responses_after_a_crash(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    """A stored response survives a crash; a container's files and state lived in its session,
    so after the restart it is shown expired and refuses work, with a clear error."""
    upstream.reset([Text("stored answer")])
    with server.client() as sdk:
        box = sdk.containers.create(name="before-crash")
        sdk.post(f"/containers/{box.id}/execute", body={"code": "x = 1"}, cast_to=object)
        response = sdk.responses.create(model="m", input="hi")
    server.kill()
    server.restart()
    with server.client() as sdk:
        assert sdk.responses.retrieve(response.id).output_text == "stored answer"
        assert sdk.containers.retrieve(box.id).status == "expired"
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.post(f"/containers/{box.id}/execute", body={"code": "x"}, cast_to=object)
        assert refused.value.code == "container_expired"
        assert "restart" in refused.value.message
        fresh = sdk.containers.create(name="after-crash")
        result = sdk.post(f"/containers/{fresh.id}/execute", body={"code": "2 + 2"}, cast_to=object)
        assert isinstance(result, dict) and result["results"][0]["data"]["text/plain"] == "4"

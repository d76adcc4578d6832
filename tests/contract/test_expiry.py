"""Expiry: runs past expires_at, and sessions idle past their lifetime (short settings here),
with session persistence off (test_persistence.py has idle sessions sleep and wake)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.server import ServerProcess
from tests.support.upstream import Delay, ScriptedUpstream, Text, ToolCall, ToolCalls, python_call

RUN_EXPIRY = 2
SESSION_IDLE_SECONDS = 1.5


@pytest.fixture(scope="module")
def quick_server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        "CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url,
        "CODEINTERP_RUN_EXPIRY_SECONDS": str(RUN_EXPIRY),
        "CODEINTERP_SESSION_IDLE_MINUTES": str(SESSION_IDLE_SECONDS / 60),
        "CODEINTERP_SESSION_PERSISTENCE": "false",
        "CODEINTERP_POOL_SIZE": "1",
        "CODEINTERP_POLL_AFTER_MS": "20",
    }
    with ServerProcess(env, data_dir=tmp_path_factory.mktemp("expiry")) as process:
        yield process


@pytest.fixture
def quick(quick_server: ServerProcess, upstream: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    upstream.reset()
    with quick_server.client() as sdk:
        yield sdk


def test_a_run_past_its_expiry_is_expired(quick: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    """A run whose model never answers ends as expired at expires_at, not later."""
    upstream.script = [Delay(30, then=Text("too late"))]
    assistant = quick.beta.assistants.create(model="m")
    thread = quick.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    started = time.monotonic()
    run = quick.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "expired"
    assert RUN_EXPIRY - 0.5 < time.monotonic() - started < RUN_EXPIRY + 3
    assert run.expires_at is None


def test_a_run_waiting_for_tool_outputs_expires(
    quick: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Tool outputs never submitted: the run goes from requires_action to expired."""
    upstream.script = [ToolCalls([ToolCall("lookup", "{}")])]
    assistant = quick.beta.assistants.create(
        model="m", tools=[{"type": "function", "function": {"name": "lookup"}}]
    )
    thread = quick.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = quick.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"
    time.sleep(RUN_EXPIRY + 1)
    run = quick.beta.threads.runs.retrieve(run_id=run.id, thread_id=thread.id)
    assert run.status == "expired"
    with pytest.raises(openai.BadRequestError):
        quick.beta.threads.runs.submit_tool_outputs(
            run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "x", "output": "y"}]
        )


def test_an_idle_session_expires_and_the_next_run_gets_a_new_one(
    quick: openai.OpenAI, upstream: ScriptedUpstream, quick_server: ServerProcess
) -> None:
    """After the idle lifetime the thread's session is gone: state is lost, files come back,
    and the usage report counts a second session."""
    since = int(time.time()) - 1
    assistant = quick.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    upstream.script = [python_call("x = 1"), Text("set")]
    thread = quick.beta.threads.create(messages=[{"role": "user", "content": "set"}])
    assert (
        quick.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        ).status
        == "completed"
    )
    time.sleep(SESSION_IDLE_SECONDS + 2)  # the expiry sweep runs every idle/4 seconds
    upstream.script = [python_call("print(x)"), Text("gone")]
    quick.beta.threads.messages.create(thread_id=thread.id, role="user", content="read")
    assert (
        quick.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        ).status
        == "completed"
    )
    assert "NameError" in upstream.last_tool_results()[-1]  # [0]: the earlier run, replayed
    usage = quick.get(
        "/organization/usage/code_interpreter_sessions",
        cast_to=object,
        options={"params": {"start_time": since}},
    )
    assert isinstance(usage, dict)
    assert sum(r["num_sessions"] for b in usage["data"] for r in b["results"]) == 2


def test_deleting_a_thread_closes_its_session(
    quick: openai.OpenAI, upstream: ScriptedUpstream, quick_server: ServerProcess, tmp_path: Path
) -> None:
    """Deleting a thread ends its session at once (its workspace mount disappears)."""
    assistant = quick.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    upstream.script = [python_call("open('/mnt/data/marker.txt', 'w').write('x')"), Text("ok")]
    thread = quick.beta.threads.create(messages=[{"role": "user", "content": "go"}])
    assert (
        quick.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        ).status
        == "completed"
    )
    mounts_before = _workspace_mounts()
    deleted = quick.beta.threads.delete(thread.id)
    assert deleted.deleted
    assert len(_workspace_mounts()) == len(mounts_before) - 1
    with pytest.raises(openai.NotFoundError):
        quick.beta.threads.retrieve(thread.id)


def _workspace_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [
            line.split()[4]
            for line in f
            if "/run/codeinterp/" in line.split()[4] and "/sessions/" in line.split()[4]
        ]

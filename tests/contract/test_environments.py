"""Environments through every door: built with `codeinterp env build` into a server's data
directory, listed by /v1/environments, chosen per container, per one-shot task, by the Python
client and by `codeinterp exec --env` (locally and with --server), kept across a sleep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from codeinterp import Client
from tests.contract.helpers import assert_envelope, raw_client, server_env
from tests.contract.test_containers import execute, text_result, unique
from tests.support.server import ServerProcess
from tests.support.upstream import Request, ScriptedUpstream, Text, ToolCalls, python_call
from tests.support.wheels import make_demo_wheels

pytestmark = pytest.mark.root

CLI = [sys.executable, "-m", "codeinterp.cli.main"]
IDLE_MINUTES = 0.03  # 1.8 s: a container goes to sleep soon


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with demo@1 (ci_demo, which needs ci_helper), built offline."""
    base = tmp_path_factory.mktemp("env-server")
    wheels = make_demo_wheels(base / "wheels")
    (base / "requirements.txt").write_text("ci_demo==1.0\n")
    data = base / "data"
    built = subprocess.run(
        [*CLI, "env", "--data-dir", str(data), "build", "demo", "-r",
         str(base / "requirements.txt"), "--no-index", "--find-links", str(wheels)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return data


@pytest.fixture(scope="module")
def server(data_dir: Path, upstream: ScriptedUpstream) -> Iterator[ServerProcess]:
    env = {
        **server_env(upstream),
        "CODEINTERP_POOL_SIZE": "1",
        "CODEINTERP_CONTAINER_IDLE_CAP_MINUTES": str(IDLE_MINUTES),
        "CODEINTERP_CHECKPOINT_SECONDS": "0",
    }
    with ServerProcess(env, data_dir=data_dir) as process:
        yield process


def test_environments_are_listed_with_their_packages(server: ServerProcess) -> None:
    with server.client() as client:
        listed = client.get("/environments", cast_to=object)
        assert isinstance(listed, dict) and listed["object"] == "list", listed
        [demo] = listed["data"]
        assert demo["id"] == "demo@1" and demo["object"] == "environment"
        assert demo["name"] == "demo" and demo["version"] == 1
        assert demo["packages"] == [
            {"name": "ci_demo", "version": "1.0", "requested": True},
            {"name": "ci_helper", "version": "1.2", "requested": False},
        ]
        assert client.get("/environments/demo", cast_to=object) == demo
        assert client.get("/environments/demo@1", cast_to=object) == demo
    with raw_client(server) as http:
        assert_envelope(http.get("/environments/nope"), 404)
        assert_envelope(http.get("/environments/demo@7"), 404)


def test_a_container_has_its_environment_and_keeps_it_through_a_sleep(
    server: ServerProcess,
) -> None:
    with server.client() as client:
        box = client.containers.create(name=unique("env"), extra_body={"environment": "demo"})
        assert (box.model_extra or {}).get("environment") == "demo@1"
        assert client.containers.retrieve(box.id).model_extra == {"environment": "demo@1"}
        assert text_result(execute(client, box.id, "import ci_demo\nci_demo.VALUE")) == "42"

        plain = client.containers.create(name=unique("plain"))
        assert "environment" not in client.containers.retrieve(plain.id).model_dump()
        missing = execute(client, plain.id, "import ci_demo")
        assert missing["status"] == "error" and "ModuleNotFoundError" in json.dumps(missing)

        time.sleep(IDLE_MINUTES * 60 + 2.5)  # both go to sleep
        assert text_result(execute(client, box.id, "ci_demo.VALUE + 1")) == "43"
        client.containers.delete(box.id)
        client.containers.delete(plain.id)


def test_an_unknown_environment_is_a_clear_400(server: ServerProcess) -> None:
    with server.client() as client:
        for name in ("nope", "demo@9", "Bad Name"):
            with pytest.raises(openai.BadRequestError) as refused:
                client.containers.create(name="x", extra_body={"environment": name})
            body = refused.value.body
            assert isinstance(body, dict) and body["param"] == "environment", body
            assert "demo@1" in body["message"]  # what there is
    with raw_client(server) as http:
        answer = http.post("/executions", json={"code": "1", "environment": "nope"})
        assert assert_envelope(answer, 400)["param"] == "environment"


def test_one_shot_tasks_and_the_python_client_choose_it(server: ServerProcess) -> None:
    with raw_client(server) as http:
        answer = http.post(
            "/executions",
            json={"code": "import ci_demo; print(ci_demo.VALUE)", "environment": "demo"},
        )
        assert answer.status_code == 200 and answer.json()["stdout"] == "42\n", answer.text
    with Client(server.base_url) as client:
        with client.container(environment="demo@1") as box:
            assert box.run("import ci_demo\nci_demo.VALUE").text == "42"
        done = client.run_task("import ci_demo; print(ci_demo.VALUE)", environment="demo")
        assert done["stdout"] == "42\n"


def test_exec_env_runs_locally_and_on_the_server(server: ServerProcess, data_dir: Path) -> None:
    code = "import ci_demo; print(ci_demo.VALUE)"
    environment = {**os.environ, "CODEINTERP_DATA_DIR": str(data_dir)}
    for extra in ([], ["--server", server.url]):
        done = subprocess.run(
            [*CLI, "exec", code, "--env", "demo", *extra],
            capture_output=True, text=True, timeout=120, env=environment, cwd=data_dir.parent,
        )  # fmt: skip
        assert done.returncode == 0, (extra, done.stderr)
        assert done.stdout.splitlines()[0] == "42", (extra, done.stdout)
    unknown = subprocess.run(
        [*CLI, "exec", code, "--env", "nope"],
        capture_output=True, text=True, timeout=120, env=environment, cwd=data_dir.parent,
    )  # fmt: skip
    assert unknown.returncode == 2
    assert unknown.stderr.strip().startswith("codeinterp: error: No environment 'nope'")


def test_an_assistant_s_environment_is_its_threads_sessions(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    def script(request: Request) -> Text | ToolCalls:
        if not any(m.get("role") == "tool" for m in request["messages"]):
            return python_call("import ci_demo\nprint(ci_demo.VALUE)")
        return Text("done")

    upstream.reset(script)
    with server.client() as client:
        assistant = client.beta.assistants.create(
            model="gpt-4o", tools=[{"type": "code_interpreter"}], extra_body={"environment": "demo"}
        )
        assert assistant.model_dump()["environment"] == "demo@1"
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "go"}])
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        assert run.status == "completed", run.last_error
        assert upstream.tool_results(-1) == ["42"]
        with pytest.raises(openai.BadRequestError) as caught:
            client.beta.assistants.update(assistant.id, extra_body={"environment": "nope"})
        assert caught.value.body["param"] == "environment"  # type: ignore[index]
        unchanged = client.beta.assistants.retrieve(assistant.id).model_dump()
        assert unchanged["environment"] == "demo@1"


def test_an_environment_in_use_is_not_removed(server: ServerProcess, data_dir: Path) -> None:
    """`env rm` is refused while a running container (or a saved session) uses the version,
    naming it; once it is gone the version goes, its number stays taken, and asking for it is a
    400. Runs last: it removes demo@1."""

    def remove(reference: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "env", "--data-dir", str(data_dir), "rm", reference],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    with server.client() as client:
        box = client.containers.create(name=unique("user"), extra_body={"environment": "demo"})
        refused = remove("demo@1")
        assert refused.returncode == 2
        assert "demo@1 is in use by" in refused.stderr and box.id in refused.stderr
        unnamed = remove("demo")
        assert unnamed.returncode == 2 and "name the version to remove" in unnamed.stderr
        client.containers.delete(box.id)

        done = remove("demo@1")
        assert done.returncode == 0, done.stderr
        assert client.get("/environments", cast_to=object)["data"] == []  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):
            client.containers.create(name="x", extra_body={"environment": "demo"})
    assert sorted(os.listdir(data_dir / "environments" / "demo")) == ["1.removed"]

"""/metrics after a known workload, read with prometheus-client's own parser; and the JSON log
lines of the same server (one per request and per execution, with request and trace ids)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.contract.helpers import server_env
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream, Text, python_call

pytestmark = pytest.mark.root

KEY = "metrics-key-000001"


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = server_env(upstream, api_keys=KEY, log_format="json")
    with ServerProcess(env, data_dir=tmp_path_factory.mktemp("metrics")) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess, upstream: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    upstream.reset()
    with server.client(api_key=KEY) as sdk:
        yield sdk


def scrape(server: ServerProcess, key: str | None = KEY) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx2.get(f"{server.url}/metrics", headers=headers, timeout=10)
    if answer.status_code != 200:
        return answer.status_code, {}
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return 200, samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return float(samples.get((name, tuple(sorted(labels.items()))), 0.0))


def test_metrics_count_a_known_workload(
    server: ServerProcess, client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Two executions (one ok, one error) through the execute door and one run with one
    execution: the counters move by exactly that much; the session gauges see the sessions."""
    _, before = scrape(server)
    box = client.containers.create(name="measured")
    for code in ("print(1)", "1/0"):
        client.post(f"/containers/{box.id}/execute", cast_to=object, body={"code": code})
    upstream.script = [python_call("print(2)"), Text("done")]
    assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "go"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    status, after = scrape(server)
    assert status == 200

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("codeinterp_executions_total", status="ok") == 2
    assert grew("codeinterp_executions_total", status="error") == 1
    assert grew("codeinterp_execution_seconds_count") == 3
    assert grew("codeinterp_loops_total", door="assistants", outcome="completed") == 1
    assert grew("codeinterp_upstream_seconds_count") == 2
    assert grew("codeinterp_upstream_tokens_total", kind="input") == run.usage.prompt_tokens
    assert grew("codeinterp_upstream_tokens_total", kind="output") == run.usage.completion_tokens
    assert grew("codeinterp_sessions_created_total") >= 2  # the container's, the thread's
    assert value(after, "codeinterp_sessions", state="live") >= 2
    route = "/v1/containers/{container_id}/execute"
    assert grew("codeinterp_http_requests_total", method="POST", route=route, status="200") == 2
    assert value(after, "process_resident_memory_bytes") > 0


def test_metrics_need_a_key_when_keys_are_configured(server: ServerProcess) -> None:
    assert scrape(server, key=None)[0] == 401
    assert scrape(server, key="not-a-key")[0] == 401


def test_a_json_log_line_per_request_and_per_execution(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    box = client.containers.create(name="logged")
    raw = client.containers.with_raw_response.retrieve(box.id)
    request_id = raw.headers["x-request-id"]
    client.post(f"/containers/{box.id}/execute", cast_to=object, body={"code": "print(3)"})
    lines = []
    for text in server.logs().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    requests = [line for line in lines if line.get("logger") == "codeinterp.requests"]
    (mine,) = [line for line in requests if line.get("request_id") == request_id]
    assert mine["method"] == "GET" and mine["status"] == 200
    assert mine["route"] == "/v1/containers/{container_id}"
    assert mine["duration_ms"] >= 0
    executions = [line for line in lines if line.get("logger") == "codeinterp.executions"]
    (ran,) = [line for line in executions if line.get("container_id") == box.id]
    assert ran["status"] == "ok" and ran["session_id"].startswith("sess_")
    assert ran["request_id"]

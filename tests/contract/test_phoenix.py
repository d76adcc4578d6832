"""Our spans in a real OTLP receiver that users run: Arize Phoenix (tests/support/phoenix.py, a
venv of its own made by scripts/setup-phoenix). The server is pointed at it with nothing but the
standard OTEL_EXPORTER_OTLP_* variables; the spans are read back through Phoenix's own API, and
the same trace from the server's own trace viewer (/ui)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html import unescape
from typing import Any

import httpx2
import pytest

from tests.contract.helpers import server_env
from tests.support.phoenix import PhoenixServer
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream, Text, python_call

pytestmark = [pytest.mark.root, pytest.mark.slow]

PROJECT = "codeinterp-tests"


@pytest.fixture(scope="module")
def phoenix() -> Iterator[PhoenixServer]:
    with PhoenixServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, phoenix: PhoenixServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {**server_env(upstream), **phoenix.exporter_env(project=PROJECT)}
    with ServerProcess(env, data_dir=tmp_path_factory.mktemp("phoenix")) as process:
        yield process


def test_a_run_that_fails_then_fixes_its_code_in_phoenix(
    server: ServerProcess, phoenix: PhoenixServer, upstream: ScriptedUpstream
) -> None:
    """One trace: invoke_agent over three model turns and two executions, carrying the code,
    the traceback, the fixed output, the tokens and the session's price."""
    upstream.reset(
        [
            python_call("numbers = [5, 6]\nprint(sum(numbrs))", id="call_typo"),
            python_call("print(sum(numbers))", id="call_fixed"),
            Text("The sum is 11."),
        ]
    )
    with server.client() as client:
        assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "5 + 6?"}])
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
    assert run.status == "completed", run.last_error

    (root,) = phoenix.wait_for_spans(1, PROJECT, name="invoke_agent codeinterp")
    assert root["attributes"]["codeinterp.run.id"] == run.id
    spans = phoenix.wait_for_spans(6, PROJECT, trace_id=root["trace_id"])
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    assert len(by_name["chat m"]) == 3
    executions = sorted(by_name["execute_tool python"], key=lambda s: s["start_time"])
    assert len(executions) == 2
    assert all(s["parent_id"] == root["span_id"] for s in [*by_name["chat m"], *executions])

    typo, fixed = (s["attributes"] for s in executions)
    assert typo["gen_ai.tool.call.id"] == "call_typo"
    assert typo["gen_ai.tool.call.arguments"] == "numbers = [5, 6]\nprint(sum(numbrs))"
    assert typo["codeinterp.execution.error.name"] == "NameError"
    assert executions[0]["status"] == "ERROR"
    assert fixed["codeinterp.execution.stdout"] == "11\n"
    assert fixed["codeinterp.session.cost_usd"] == pytest.approx(0.03)
    totals = root["attributes"]
    assert totals["gen_ai.usage.input_tokens"] == run.usage.prompt_tokens
    assert totals["gen_ai.usage.output_tokens"] == run.usage.completion_tokens

    # The same trace in the server's own viewer: the root span Phoenix has is the stored trace
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        deadline = time.monotonic() + 10
        while (page := http.get(f"/ui/traces/{root['span_id']}")).status_code == 404:
            assert time.monotonic() < deadline, "the trace never reached the trace store"
            time.sleep(0.1)
    assert page.status_code == 200
    shown = unescape(re.sub(r"<[^>]+>", "", page.text))
    assert root["trace_id"] in shown and run.id in shown
    assert shown.count("Model turn") == 3 and shown.count("Execution ") == 2
    assert "NameError" in shown and "11\n" in shown and "$0.0300" in shown

"""The PhoenixServer helper: a real Phoenix (from .venv-phoenix, made by scripts/setup-phoenix)
receives spans from a plain OpenTelemetry SDK over OTLP/HTTP, and they come back intact."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.phoenix import (
    DEFAULT_PROJECT,
    PhoenixNotInstalled,
    PhoenixServer,
    phoenix_python,
)
from tests.support.server import port_is_free

# Two nested spans, as the server will send them: the SDK, its batch processor and the OTLP/HTTP
# exporter, configured by the OTEL_* variables alone. Prints the trace id.
EMITTER = """
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

provider = TracerProvider(resource=Resource.create({"service.name": "codeinterp-harness"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
tracer = provider.get_tracer("harness")
with tracer.start_as_current_span("chat harness-model", kind=trace.SpanKind.CLIENT) as parent:
    parent.set_attribute("gen_ai.operation.name", "chat")
    parent.set_attribute("gen_ai.request.model", "harness-model")
    parent.set_attribute("gen_ai.usage.input_tokens", 12)
    parent.set_attribute("gen_ai.response.finish_reasons", ["tool_calls", "stop"])
    with tracer.start_as_current_span("execute_tool python") as child:
        child.set_attribute("gen_ai.operation.name", "execute_tool")
        child.set_attribute("gen_ai.tool.name", "python")
        child.set_attribute("codeinterp.exec.seconds", 0.25)
        child.set_attribute("codeinterp.exec.timed_out", False)
        child.set_status(Status(StatusCode.ERROR, "ZeroDivisionError"))
    parent.set_status(Status(StatusCode.OK))
provider.shutdown()
print(format(parent.get_span_context().trace_id, "032x"))
"""


def sdk_python() -> str:
    """Ours if it has the OpenTelemetry SDK and OTLP/HTTP exporter, else Phoenix's (it does)."""
    try:
        ours = all(
            importlib.util.find_spec(module) is not None
            for module in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
        )
    except ModuleNotFoundError:
        ours = False
    return sys.executable if ours else str(phoenix_python())


@pytest.mark.slow
def test_nested_spans_come_back_from_phoenix_and_it_stops_cleanly() -> None:
    with PhoenixServer() as phoenix:
        data_dir = phoenix.data_dir
        assert data_dir is not None and (data_dir / "working" / "phoenix.db").exists()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env = {**inherited, **phoenix.exporter_env(project="harness")}
        emitted = subprocess.run(
            [sdk_python(), "-c", EMITTER],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert emitted.returncode == 0, emitted.stderr
        trace_id = emitted.stdout.strip()

        spans = phoenix.wait_for_spans(2, project="harness", trace_id=trace_id)
        by_name = {span["name"]: span for span in spans}
        assert sorted(by_name) == ["chat harness-model", "execute_tool python"]
        parent, child = by_name["chat harness-model"], by_name["execute_tool python"]
        assert [span["name"] for span in spans] == ["chat harness-model", "execute_tool python"]

        assert parent["parent_id"] is None
        assert child["parent_id"] == parent["span_id"]
        assert parent["trace_id"] == child["trace_id"] == trace_id
        assert len(parent["span_id"]) == len(child["span_id"]) == 16

        # What was sent comes back as sent (Phoenix adds OpenInference keys beside it).
        assert (
            parent["attributes"].items()
            >= {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "harness-model",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.response.finish_reasons": ["tool_calls", "stop"],
            }.items()
        )
        assert (
            child["attributes"].items()
            >= {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "python",
                "codeinterp.exec.seconds": 0.25,
                "codeinterp.exec.timed_out": False,
            }.items()
        )
        assert (parent["status"], parent["status_message"]) == ("OK", "")
        assert (child["status"], child["status_message"]) == ("ERROR", "ZeroDivisionError")
        assert (parent["span_kind"], child["span_kind"]) == ("LLM", "TOOL")

        # The project attribute routed them; nothing went to the default project.
        assert phoenix.spans(DEFAULT_PROJECT, trace_id=trace_id) == []
        assert phoenix.spans("no-such-project") == []
        assert set(phoenix.projects()) >= {DEFAULT_PROJECT, "harness"}

        pid = phoenix.pid
        assert pid is not None
    # A graceful stop: uvicorn finishes its shutdown, then exits by the SIGTERM it caught.
    assert phoenix.returncode in (0, -signal.SIGTERM), phoenix.logs_tail()
    assert "Application shutdown complete" in phoenix.logs()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
    assert port_is_free(phoenix.port) and port_is_free(phoenix.grpc_port)
    assert not data_dir.exists()  # a temporary data dir is removed


def test_endpoints_and_exporter_environment() -> None:
    phoenix = PhoenixServer(port=16006, grpc_port=14317)
    assert phoenix.otlp_endpoint == "http://127.0.0.1:16006"
    assert phoenix.otlp_traces_endpoint == "http://127.0.0.1:16006/v1/traces"
    assert phoenix.otlp_grpc_endpoint == "http://127.0.0.1:14317"
    assert phoenix.exporter_env(project="chat") == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:16006",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_RESOURCE_ATTRIBUTES": "openinference.project.name=chat",
    }
    assert "OTEL_RESOURCE_ATTRIBUTES" not in phoenix.exporter_env()
    with pytest.raises(ValueError, match="cannot contain"):
        phoenix.exporter_env(project="a,b=c")

    free = PhoenixServer()
    assert free.port != free.grpc_port


def test_phoenix_environment_is_local_and_scrubbed(tmp_path: Path) -> None:
    phoenix = PhoenixServer(tmp_path, port=16006, grpc_port=14317, env={"PHOENIX_LOG_SQL": "1"})
    env = phoenix.environment(
        {
            "PATH": "/usr/bin",
            "PHOENIX_ENABLE_AUTH": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://elsewhere:4318",
            "OPENAI_API_KEY": "sk-real",
            "CODEINTERP_API_KEYS": "k",
        }
    )
    assert env["PATH"] == "/usr/bin"
    assert not any(key.startswith(("OTEL_", "OPENAI_", "CODEINTERP_")) for key in env)
    assert "PHOENIX_ENABLE_AUTH" not in env
    assert env["PHOENIX_HOST"] == "127.0.0.1"
    assert (env["PHOENIX_PORT"], env["PHOENIX_GRPC_PORT"]) == ("16006", "14317")
    assert env["PHOENIX_WORKING_DIR"] == str(tmp_path / "working")
    assert env["PHOENIX_TELEMETRY_ENABLED"] == "false"
    assert env["PHOENIX_ALLOW_EXTERNAL_RESOURCES"] == "false"
    assert env["PHOENIX_LOG_SQL"] == "1"


def test_a_missing_venv_names_the_setup_script(tmp_path: Path) -> None:
    with pytest.raises(PhoenixNotInstalled, match=r"does not exist; run scripts/setup-phoenix"):
        PhoenixServer(venv=tmp_path / "missing").start()


def test_an_unfinished_venv_is_refused(tmp_path: Path) -> None:
    venv = tmp_path / ".venv-phoenix"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    server = PhoenixServer(venv=venv)
    with pytest.raises(PhoenixNotInstalled, match=r"unfinished .*run scripts/setup-phoenix"):
        server.start()
    assert server.data_dir is None and not server.running  # nothing was made or started

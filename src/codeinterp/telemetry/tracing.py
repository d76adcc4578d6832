"""Traces of every code interpreter call, in OpenTelemetry's GenAI semantic conventions.

Conventions: GenAI semantic conventions v1.37.0 (``SEMCONV_VERSION``; span names
``invoke_agent {agent}``, ``chat {model}``, ``execute_tool {tool}``, attribute names as there).
What we add that they do not name is under ``codeinterp.*``.

One trace per run, response, chat request, MCP call and container execute:

    invoke_agent codeinterp            a run, a response, a chat completion (agent/loop.py)
    ├── chat {model}                   each model turn (agent/loop.py)
    └── execute_tool python            each execution (sessions/execution.py)

A container execute or an MCP ``run_python`` call is an ``execute_tool`` span of its own, the
root of its trace unless the request carried a W3C ``traceparent`` (api/middleware.py), which
makes every trace of the request a part of the caller's.

Nothing is recorded unless a tracer provider is installed: :func:`configure` installs one when
spans are wanted, by the server's own trace store (telemetry/recorder.py, on by default) or by an
OTLP collector named by the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` variable (the SDK reads the rest of the ``OTEL_*``
variables itself). With neither, the API's no-op tracer makes every span free. The code, the
output and the prompts are recorded only while ``capture_content`` is on, each cut to
``max_content_chars``. Every root span names its project (``codeinterp.project``): the trace
store keeps each trace for its project's keys alone.
"""

from __future__ import annotations

import json
import os
from asyncio import CancelledError
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

SEMCONV_VERSION = "1.37.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
AGENT_NAME = "codeinterp"
PROVIDER_NAME = "openai"  # the upstream speaks OpenAI's Chat Completions protocol


@dataclass
class ContentPolicy:
    """Whether spans hold content (prompts, code, output), and how much of each."""

    capture: bool = True
    max_chars: int = 8192

    def clip(self, text: str) -> str | None:
        if not self.capture:
            return None
        if len(text) <= self.max_chars:
            return text
        return f"{text[: self.max_chars]}... [{len(text) - self.max_chars} characters more]"


content = ContentPolicy()


def tracer() -> trace.Tracer:
    return trace.get_tracer("codeinterp", schema_url=SCHEMA_URL)


def configure(
    capture_content: bool, max_content_chars: int, recorder: SpanProcessor | None = None
) -> Any | None:
    """Set the content policy and make sure spans go where they are wanted: to the OTLP
    endpoint the OTEL_EXPORTER_OTLP_* variables name, and to `recorder` (the trace store's).

    An SDK provider already installed (by a test, or by `opentelemetry-instrument`) is used as it
    is, with `recorder` added; otherwise one is installed if anything wants spans. Returns the
    provider installed here, for `shutdown` at exit, or None."""
    content.capture = capture_content
    content.max_chars = max_content_chars
    from opentelemetry.sdk.trace import TracerProvider

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if recorder is not None:
            current.add_span_processor(recorder)
        return None
    wanted = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        wanted = None
    if not wanted and recorder is None:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", "codeinterp")})
    provider = TracerProvider(resource=resource)
    if recorder is not None:
        provider.add_span_processor(recorder)
    if wanted:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


@contextmanager
def span(
    name: str, attributes: Mapping[str, Any], kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span]:
    """A span that records the exception that ends it as `error.type` and an error status."""
    with tracer().start_as_current_span(
        name,
        kind=kind,
        attributes=_clean(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            # Stopping is not failing: a cancelled run, a client that went away.
            if current.is_recording() and not isinstance(exc, GeneratorExit | CancelledError):
                current.set_attribute("error.type", type(exc).__name__)
                current.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
            raise


def start_span(name: str, attributes: Mapping[str, Any]) -> Span:
    """A span that the caller ends, not made current: for a generator, whose context between
    its yields is its consumer's."""
    return tracer().start_span(name, attributes=_clean(attributes))


def set_attributes(current: Span, attributes: Mapping[str, Any]) -> None:
    if current.is_recording():
        current.set_attributes(_clean(attributes))


def fail(current: Span, error_type: str, description: str = "") -> None:
    """Mark the span failed without an exception (a run that ended `failed`, code that raised)."""
    if current.is_recording():
        current.set_attribute("error.type", error_type)
        current.set_status(Status(StatusCode.ERROR, description[:500]))


def as_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OTel attributes take str, bool, int, float or lists of one of them; None means unset."""
    return {k: v for k, v in attributes.items() if v is not None}

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

import asyncio
import json
import logging
import os
import time
from asyncio import CancelledError
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

log = logging.getLogger("codeinterp.tracing")

SEMCONV_VERSION = "1.37.0"
MAX_STATUS_CHARS = 500  # a span's status message
MAX_NAME_CHARS = 200  # an error's name (error.type)
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


_tracer: tuple[Any, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """Our tracer from the installed provider, made once per provider: getting one from the SDK
    costs ~50 us (and resets a global warnings filter) each time."""
    global _tracer
    provider = trace.get_tracer_provider()
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer("codeinterp", schema_url=SCHEMA_URL))
    return _tracer[1]


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
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

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
    # Every trace is recorded, whatever a caller's traceparent asks, so the trace store has them
    # all; an operator's OTEL_TRACES_SAMPLER (the SDK reads it) decides otherwise.
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ALWAYS_ON
    provider = TracerProvider(resource=resource, sampler=sampler)
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
    # start_span and attach by hand: start_as_current_span's generator-based context manager
    # costs about a third more.
    current = tracer().start_span(name, kind=kind, attributes=_clean(attributes))
    token = otel_context.attach(trace.set_span_in_context(current))
    try:
        yield current
    except BaseException as exc:
        # Stopping is not failing: a cancelled run, a client that went away.
        if current.is_recording() and not isinstance(exc, GeneratorExit | CancelledError):
            current.set_attribute("error.type", type(exc).__name__)
            current.set_status(Status(StatusCode.ERROR, short(str(exc))))
        raise
    finally:
        otel_context.detach(token)
        current.end()


def enabled() -> bool:
    """Whether spans are recorded at all (a provider other than the API's no-op is installed)."""
    return not isinstance(trace.get_tracer_provider(), _NO_OP_PROVIDERS)


_NO_OP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


class LeafSpan:
    """A span with no children of its own, handed to the SDK only once it is over, a turn of
    the event loop later: by then the answer it belongs to has gone out, so making the span
    (~150 us: attribute checks, processors) costs the caller no latency. Its times, parent and
    attributes are the ones it had. Not made current: an async generator's context between its
    yields is its consumer's. Attributes given as a function are computed then too."""

    __slots__ = (
        "_attributes",
        "_error",
        "_later",
        "_parent",
        "_start_ns",
        "_tracer",
        "name",
        "recording",
    )

    def __init__(
        self, name: str, attributes: Mapping[str, Any], using: trace.Tracer | None = None
    ) -> None:
        """`using`: a tracer other than the installed provider's (tests)."""
        self.name = name
        self._tracer = using
        self.recording = using is not None or enabled()
        if self.recording:
            self._start_ns = time.time_ns()
            self._parent = otel_context.get_current()
            self._attributes = dict(attributes)
            self._later: list[Callable[[], Mapping[str, Any]]] = []
            self._error: tuple[str, str] | None = None

    def add(self, attributes: Callable[[], Mapping[str, Any]]) -> None:
        if self.recording:
            self._later.append(attributes)

    def fail(self, error_type: str, description: str = "") -> None:
        if self.recording:
            self._error = (short(error_type, MAX_NAME_CHARS), short(description))

    def end(self) -> None:
        if not self.recording:
            return
        self.recording = False  # once
        end_ns = time.time_ns()
        try:
            asyncio.get_running_loop().call_soon(self._record, end_ns)
        except RuntimeError:  # no event loop: now
            self._record(end_ns)

    def _record(self, end_ns: int) -> None:
        try:
            for more in self._later:
                self._attributes.update(more())
            if self._error is not None:
                self._attributes["error.type"] = self._error[0]
            made = (self._tracer or tracer()).start_span(
                self.name,
                context=self._parent,
                attributes=_clean(self._attributes),
                start_time=self._start_ns,
            )
            if self._error is not None:
                made.set_status(Status(StatusCode.ERROR, self._error[1]))
            made.end(end_time=end_ns)
        except Exception:  # a span must never fail the server
            log.exception("could not record span %s", self.name)


def set_attributes(current: Span, attributes: Mapping[str, Any]) -> None:
    if current.is_recording():
        current.set_attributes(_clean(attributes))


def short(text: str, limit: int = MAX_STATUS_CHARS) -> str:
    """A name or a status message cut to `limit`: they are kept even when content is not, and
    sandboxed code chooses them (an exception's class name can be 64 KB)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OTel attributes take str, bool, int, float or lists of one of them; None means unset.
    Empty text is left out too (no output): each attribute costs on every span, and more again
    to encode for OTLP."""
    return {k: v for k, v in attributes.items() if v is not None and v != ""}

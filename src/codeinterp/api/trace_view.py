"""What the trace viewer shows of a stored trace: its prompt, its steps in order (each model turn,
each execution with its code beside its output) and a waterfall of all its spans. Pure functions
of the stored spans (services/traces.py keeps them; recorder.span_dict says their shape)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from codeinterp.store import TraceRecord
from codeinterp.telemetry.recorder import duration_ms


@dataclass
class Bar:
    """One span in the waterfall: where it starts and how long it lasts, in % of the trace."""

    name: str
    depth: int
    start_ms: float
    duration_ms: float
    offset_pct: float
    width_pct: float
    failed: bool


@dataclass
class Turn:
    model: str
    duration_ms: float
    input_tokens: int | None
    output_tokens: int | None
    text: str | None
    tool_calls: list[str]
    finish_reasons: list[str]
    error: str | None


@dataclass
class Execution:
    code: str | None
    code_html: Markup
    status: str
    duration_ms: float
    execution_count: int | None
    stdout: str | None
    stderr: str | None
    result: str | None
    error_name: str | None
    error_value: str | None
    traceback: str | None
    files: list[dict[str, Any]]
    files_omitted: int
    network: list[dict[str, Any]]  # what the code tried to reach, allowed or refused
    network_omitted: int
    images: list[dict[str, Any]]
    memory_peak_bytes: int | None
    cost_usd: float | None
    call_id: str | None
    container_id: str | None
    failed: bool


@dataclass
class TraceView:
    record: TraceRecord
    prompt: str | None
    steps: list[Turn | Execution] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    root_status_message: str | None = None


@cache
def code_css() -> Markup:
    """The highlighting's style sheet (Pygments' default style, scoped to `.code`)."""
    return Markup(HtmlFormatter(style="default").get_style_defs(".code"))


def highlight_python(code: str) -> Markup:
    # Pygments escapes the code it formats; the result is safe to put in the page as it is.
    return Markup(highlight(code, PythonLexer(), HtmlFormatter(cssclass="code", nowrap=False)))


def build(record: TraceRecord) -> TraceView:
    spans = sorted(record.spans or [], key=lambda s: s["start_ns"])
    root = next((s for s in spans if s["span_id"] == record.id), spans[0] if spans else None)
    if root is None:
        return TraceView(record, None)
    view = TraceView(
        record,
        prompt=root["attributes"].get("codeinterp.prompt"),
        root_status_message=root.get("status_message"),
    )
    for span in spans:
        operation = span["attributes"].get("gen_ai.operation.name")
        if operation == "chat":
            view.steps.append(_turn(span))
        elif operation == "execute_tool":
            view.steps.append(_execution(span, record.container_id))
    view.bars = _waterfall(root, spans)
    return view


def _turn(span: dict[str, Any]) -> Turn:
    a = span["attributes"]
    return Turn(
        model=str(a.get("gen_ai.request.model", "")),
        duration_ms=duration_ms(span),
        input_tokens=a.get("gen_ai.usage.input_tokens"),
        output_tokens=a.get("gen_ai.usage.output_tokens"),
        text=a.get("codeinterp.output.text"),
        tool_calls=list(a.get("codeinterp.output.tool_calls") or ()),
        finish_reasons=list(a.get("gen_ai.response.finish_reasons") or ()),
        error=a.get("error.type") if span["status"] == "error" else None,
    )


def _execution(span: dict[str, Any], container_id: str | None) -> Execution:
    a = span["attributes"]
    code = a.get("gen_ai.tool.call.arguments")
    return Execution(
        code=code,
        code_html=highlight_python(code) if code else Markup(""),
        status=str(a.get("codeinterp.execution.status", span["status"])),
        duration_ms=duration_ms(span),
        execution_count=a.get("codeinterp.execution.count"),
        stdout=a.get("codeinterp.execution.stdout") or None,
        stderr=a.get("codeinterp.execution.stderr") or None,
        result=a.get("codeinterp.execution.result") or None,
        error_name=a.get("codeinterp.execution.error.name"),
        error_value=a.get("codeinterp.execution.error.value"),
        traceback=a.get("codeinterp.execution.error.traceback"),
        files=_json_list(a.get("codeinterp.execution.files")),
        files_omitted=int(a.get("codeinterp.execution.files_omitted") or 0),
        network=_json_list(a.get("codeinterp.execution.network")),
        network_omitted=int(a.get("codeinterp.execution.network_omitted") or 0),
        images=_json_list(a.get("codeinterp.execution.image_files")),
        memory_peak_bytes=a.get("codeinterp.session.memory_peak_bytes"),
        cost_usd=a.get("codeinterp.session.cost_usd"),
        call_id=a.get("gen_ai.tool.call.id"),
        container_id=a.get("codeinterp.container.id") or container_id,
        failed=span["status"] == "error",
    )


def _waterfall(root: dict[str, Any], spans: list[dict[str, Any]]) -> list[Bar]:
    start = root["start_ns"]
    total = max(max((s["end_ns"] or s["start_ns"]) for s in spans) - start, 1)
    parents = {s["span_id"]: s["parent_span_id"] for s in spans}
    bars = []
    for span in spans:
        depth, parent = 0, span["parent_span_id"]
        while parent in parents and depth < 32:
            depth, parent = depth + 1, parents[parent]
        offset = span["start_ns"] - start
        length = duration_ms(span)
        bars.append(
            Bar(
                name=span["name"],
                depth=depth,
                start_ms=offset / 1e6,
                duration_ms=length,
                offset_pct=100 * offset / total,
                width_pct=max(100 * length * 1e6 / total, 0.3),
                failed=span["status"] == "error",
            )
        )
    return bars


def _json_list(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, str):
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        return []
    return [item for item in parsed if isinstance(item, dict)] if isinstance(parsed, list) else []

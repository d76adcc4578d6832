"""Keeping our own spans, for the trace store: a span processor that gathers the spans of each of
our traces and hands the group over, as plain dicts, once its root has ended.

"Our trace" is a span that names its project (the `root_attribute`, set by each door) and is
not under another of ours, with every span under it; other spans (a library's, an HTTP
server's) are not kept, though ours may sit under them or under a caller's `traceparent`.
`on_start` notes each span's root and `on_end` files the span under it: two dict operations,
so the request that ends a span pays nothing more. Turning spans into dicts waits for `take`,
which the trace store's writer calls every so often (services/traces.py). A span that ends
after its root (an execution's span is recorded a loop turn after it ends, tracing.LeafSpan)
comes out of `take` on its own, under its root's id: the roots and spans that ended last are
remembered for that.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

# Spans held for roots still open (started, or ended and waiting for their root), at most; past
# it the oldest open root's spans are dropped (a root that never ends is a bug, and must not
# grow the server without bound).
MAX_OPEN_SPANS = 100_000
# Ended spans remembered with their root, for children that start after them.
RECENTLY_ENDED = 4096


@dataclass
class Taken:
    """What `take` hands over: whole traces (root first) and late spans by root span id."""

    traces: list[list[dict[str, Any]]] = field(default_factory=list)
    late: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class TraceRecorder(SpanProcessor):
    def __init__(
        self, root_attribute: str = "codeinterp.project", max_open_spans: int = MAX_OPEN_SPANS
    ) -> None:
        self._root_attribute = root_attribute
        self._lock = threading.Lock()
        self._root_of: dict[int, int] = {}  # started, not ended span -> its local root
        self._open: dict[int, list[ReadableSpan]] = {}  # open root -> its ended spans
        self._waiting = 0  # spans in _open
        self._finished: list[list[ReadableSpan]] = []
        self._late: list[tuple[int, ReadableSpan]] = []
        self._ended: dict[int, int] = {}  # recently ended span -> its root
        self._max_open = max_open_spans
        self._closed = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._closed:
            return
        parent = span.parent
        own = span.context.span_id
        with self._lock:
            root = None
            if parent is not None and not parent.is_remote:
                root = self._root_of.get(parent.span_id) or self._ended.get(parent.span_id)
            if root is None:
                if self._root_attribute not in (span.attributes or {}):
                    return  # not ours
                root = own
            self._root_of[own] = root
            if len(self._root_of) + self._waiting > self._max_open:
                self._drop_oldest_root()

    def on_end(self, span: ReadableSpan) -> None:
        if self._closed or span.context is None:
            return
        own = span.context.span_id
        with self._lock:
            root = self._root_of.pop(own, None)
            if root is None:
                return  # not ours
            self._ended[own] = root
            if len(self._ended) > RECENTLY_ENDED:
                del self._ended[next(iter(self._ended))]
            if root == own:
                group = self._open.pop(own, [])
                self._waiting -= len(group)
                group.append(span)
                self._finished.append(group)
            elif root in self._root_of:
                self._open.setdefault(root, []).append(span)
                self._waiting += 1
                if len(self._root_of) + self._waiting > self._max_open:
                    self._drop_oldest_root()
            else:
                self._late.append((root, span))

    def take(self) -> Taken:
        """Everything finished since the last call, as plain dicts."""
        with self._lock:
            finished, self._finished = self._finished, []
            late, self._late = self._late, []
        taken = Taken()
        for group in finished:
            # the root ended last; it goes first
            taken.traces.append([span_dict(s) for s in (group[-1], *group[:-1])])
        for root, span in late:
            taken.late.setdefault(format(root, "016x"), []).append(span_dict(span))
        return taken

    def shutdown(self) -> None:
        # A provider cannot drop a processor: a closed recorder stays attached and does nothing.
        self._closed = True
        with self._lock:
            self._root_of.clear()
            self._open.clear()
            self._ended.clear()
            self._finished.clear()
            self._late.clear()
            self._waiting = 0

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def _drop_oldest_root(self) -> None:
        oldest = next(iter(self._root_of.values()))
        self._waiting -= len(self._open.pop(oldest, ()))
        for span_id in [s for s, r in self._root_of.items() if r == oldest]:
            del self._root_of[span_id]


def span_dict(span: ReadableSpan) -> dict[str, Any]:
    """A span as JSON-ready values: ids in hex, times in unix nanoseconds."""
    context = span.context
    parent = span.parent
    return {
        "trace_id": format(context.trace_id, "032x") if context else None,
        "span_id": format(context.span_id, "016x") if context else None,
        "parent_span_id": format(parent.span_id, "016x") if parent else None,
        "name": span.name,
        "kind": span.kind.name.lower(),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name.lower(),
        "status_message": span.status.description,
        "attributes": _plain(span.attributes),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": _plain(e.attributes)}
            for e in span.events
        ],
    }


def _plain(attributes: Any) -> dict[str, Any]:
    if not attributes:
        return {}
    return {
        k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        for k, v in attributes.items()
    }


def duration_ms(span: dict[str, Any]) -> float:
    """How long a span (as `span_dict` gives it) lasted; 0 if it never ended."""
    return float(((span["end_ns"] or span["start_ns"]) - span["start_ns"]) / 1e6)

"""Prometheus metrics, served at /metrics (prometheus-client's own exposition format).

Each is counted in the one place its event happens: executions in sessions/execution.py, model
turns and whole loops in agent/loop.py, sessions in sessions/manager.py, HTTP requests in
api/middleware.py. Gauges of the sessions that exist now are read when /metrics is scraped, from
the sources the server registers (:func:`watch_sessions`).

Names follow Prometheus' conventions (base units, ``_total`` for counters); every one starts with
``codeinterp_``. The process collector of prometheus-client (CPU, memory, open files of the
server) is included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Seconds: from a millisecond cell to a ten-minute run.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

EXECUTIONS = Counter("codeinterp_executions", "Code executions, by how they ended.", ["status"])
EXECUTION_SECONDS = Histogram(
    "codeinterp_execution_seconds", "Wall time of one code execution.", buckets=_SECONDS
)
LOOPS = Counter(
    "codeinterp_loops",
    "Model-and-tool loops (runs, responses, chat completions), by door and outcome.",
    ["door", "outcome"],
)
LOOP_SECONDS = Histogram(
    "codeinterp_loop_seconds", "Wall time of one loop, by door.", ["door"], buckets=_SECONDS
)
MODEL_TURN_SECONDS = Histogram(
    "codeinterp_upstream_seconds",
    "Latency of one model turn at the upstream endpoint (the whole stream).",
    buckets=_SECONDS,
)
MODEL_TURN_FAILURES = Counter(
    "codeinterp_upstream_failures", "Model turns that failed at the upstream endpoint."
)
TOKENS = Counter("codeinterp_upstream_tokens", "Tokens the upstream counted, by kind.", ["kind"])
SESSIONS_CREATED = Counter("codeinterp_sessions_created", "Sandbox sessions created.")
SESSION_COST = Counter("codeinterp_session_cost_usd", "What the sessions created are billed.")
SESSIONS_SLEPT = Counter("codeinterp_sessions_slept", "Idle sessions saved to disk and ended.")
SESSION_SAVES = Counter(
    "codeinterp_session_saves",
    "Session states saved to disk, by why: sleep, checkpoint (the crash policy) or stop.",
    ["reason"],
)
SESSIONS_WOKEN = Counter("codeinterp_sessions_woken", "Sessions woken from their saved state.")
HTTP_REQUESTS = Counter(
    "codeinterp_http_requests", "HTTP requests, by route and status.", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "codeinterp_http_request_seconds",
    "Time to an HTTP response's last byte, by route.",
    ["method", "route"],
    buckets=_SECONDS,
)

SessionCounts = Callable[[], dict[str, int]]


class _Sessions(Collector):
    """codeinterp_sessions{state}: read from the registered sources at each scrape."""

    def __init__(self) -> None:
        self.sources: list[SessionCounts] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "codeinterp_sessions", "Sandbox sessions that exist now, by state.", labels=["state"]
        )
        totals: dict[str, int] = {}
        for source in self.sources:
            for state, count in source().items():
                totals[state] = totals.get(state, 0) + count
        for state, count in sorted(totals.items()):
            family.add_metric([state], count)
        yield family


_SESSIONS = _Sessions()
REGISTRY.register(_SESSIONS)


def watch_sessions(source: SessionCounts) -> Callable[[], None]:
    """Count `source`'s sessions ({state: n}) at each scrape; returns the call that stops it."""
    _SESSIONS.sources.append(source)
    return lambda: _SESSIONS.sources.remove(source)


def model_turn(seconds: float, input_tokens: int, output_tokens: int, failed: bool) -> None:
    MODEL_TURN_SECONDS.observe(seconds)
    TOKENS.labels("input").inc(input_tokens)
    TOKENS.labels("output").inc(output_tokens)
    if failed:
        MODEL_TURN_FAILURES.inc()

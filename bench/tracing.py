"""What tracing costs: the same workload against four servers of one run: tracing off (no trace
store, no OTEL_EXPORTER_OTLP_* variables: no provider, no spans) twice, the default (spans kept
in the server's trace store for /ui), and the default plus export over OTLP/HTTP. Samples rotate
among the four. The second untraced server ("off_again") is the control: how far two identical
servers differ here is the noise any other difference has to stand out of. Not a test.

    .venv/bin/python bench/tracing.py --json PATH [--samples N]

The exporting server sends to a sink on 127.0.0.1 that answers every POST /v1/traces with 200
(a real exporter, batch processor and HTTP transport; no receiver's work measured). Figures, ms:

run_overhead_p50 (off / off_again / store / otlp)
    An Assistants run with one python call, as bench/server.py measures it (the model's time
    subtracted), with the SDK's create_and_poll.
execute_http_1plus1_p50 (off / off_again / store / otlp)
    POST /v1/containers/{id}/execute with 1+1 on a warm container, from a keep-alive client.
run_ratio, execute_added_ms (off_again / store / otlp)
    each / off for runs; each - off for execute.
exported_requests
    OTLP requests the sink received (proof that spans left the exporting server).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2
from bench.server import percentile, script
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream

NAMES = ["off", "off_again", "store", "otlp"]


class _Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def run_sample(server: ServerProcess, client: Any, assistant_id: str, upstream: Any) -> float:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "1+1?"}])
    first = len(upstream.requests)
    start = time.perf_counter()
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id)
    elapsed = (time.perf_counter() - start) * 1000
    if run.status != "completed":
        raise RuntimeError(f"run ended {run.status}: {run.last_error}")
    return elapsed - upstream.model_seconds(first) * 1000


def measure(samples: int, pause: float) -> dict[str, Any]:
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    with tempfile.TemporaryDirectory() as data, ScriptedUpstream(script) as upstream:
        base = {"CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url, "CODEINTERP_POOL_SIZE": "8"}
        off_env = {**base, "CODEINTERP_TRACE_STORE": "false"}
        otlp_env = {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        with (
            ServerProcess(off_env, data_dir=Path(data) / "off") as off,
            ServerProcess(off_env, data_dir=Path(data) / "off_again") as off_again,
            ServerProcess(base, data_dir=Path(data) / "store") as store,
            ServerProcess(otlp_env, data_dir=Path(data) / "otlp") as otlp,
        ):
            servers = {"off": off, "off_again": off_again, "store": store, "otlp": otlp}
            clients = {name: s.client() for name, s in servers.items()}
            assistants = {
                name: c.beta.assistants.create(model="bench", tools=[{"type": "code_interpreter"}])
                for name, c in clients.items()
            }
            runs: dict[str, list[float]] = {name: [] for name in NAMES}
            for i in range(samples + 3):
                for name in rotated(i):
                    time.sleep(pause)  # the warm pool refills behind the previous sample
                    ms = run_sample(servers[name], clients[name], assistants[name].id, upstream)
                    if i >= 3:
                        runs[name].append(ms)
            executes = execute_samples(servers, max(200, samples))
            for client in clients.values():
                client.close()
    sink.shutdown()
    run_p50 = {name: percentile(runs[name], 50) for name in NAMES}
    exec_p50 = {name: percentile(executes[name], 50) for name in NAMES}
    return {
        "run_overhead_p50": run_p50,
        "run_ratio": {name: run_p50[name] / run_p50["off"] for name in NAMES[1:]},
        "execute_http_1plus1_p50": exec_p50,
        "execute_added_ms": {name: exec_p50[name] - exec_p50["off"] for name in NAMES[1:]},
        "exported_requests": _Sink.received,
        "samples": {"runs": len(runs["off"]), "executes": len(executes["off"])},
    }


def rotated(i: int) -> list[str]:
    """The servers in a different order each round, so none is always first after a pause."""
    return [*NAMES[i % len(NAMES) :], *NAMES[: i % len(NAMES)]]


def execute_samples(servers: dict[str, ServerProcess], n: int) -> dict[str, list[float]]:
    https = {
        name: httpx2.Client(
            base_url=s.base_url, headers={"Authorization": "Bearer bench"}, timeout=60
        )
        for name, s in servers.items()
    }
    boxes = {}
    for name, http in https.items():
        box = http.post("/containers", json={"name": "bench"})
        box.raise_for_status()
        boxes[name] = box.json()["id"]
        for _ in range(20):
            http.post(f"/containers/{boxes[name]}/execute", json={"code": "1+1"})
    samples: dict[str, list[float]] = {name: [] for name in NAMES}
    for i in range(n):
        for name in rotated(i):
            start = time.perf_counter()
            answer = https[name].post(f"/containers/{boxes[name]}/execute", json={"code": "1+1"})
            samples[name].append((time.perf_counter() - start) * 1000)
            if answer.json()["results"][0]["data"]["text/plain"] != "2":
                raise RuntimeError(f"unexpected execute answer: {answer.text}")
    for http in https.values():
        http.close()
    return samples


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the Assistants API
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--pause", type=float, default=0.05)
    args = parser.parse_args()
    figures = measure(args.samples, args.pause)
    Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""Server overhead of an Assistants run, measured through the official openai SDK. Not a test.

    .venv/bin/python bench/server.py --json PATH [--samples N]

A scripted Chat Completions upstream answers instantly (model time excluded): the first turn
calls the python tool with `print(1+1)`, the second answers with text. Figures, in ms:

run_overhead_p50, run_overhead_p99
    From `runs.create_and_poll(...)` being called until it returns the completed run, with the
    SDK honouring the server's `openai-poll-after-ms` hint (no custom poll interval), minus the
    model's time: what the scripted upstream spent answering the run's two requests (from each
    request's arrival to its last byte). What remains is the server: HTTP, the store, the run
    loop, one sandbox execution, the polling. `run_total_p50` is the figure before subtracting.
health_rtt_p50 (baseline)
    `GET /health` from the same HTTP client: the cost of one request to this server.
sandbox_exec_p50 (baseline)
    `print(1+1)` through the engine's host API in this process (no HTTP, no database).
overhead_over_health, overhead_over_exec
    The ratios of run_overhead_p50 to the two baselines.
execute_http_1plus1_p50
    `POST /v1/containers/{id}/execute` with `1+1` on a warm container (after warm-up runs), from
    a keep-alive HTTP client (httpx2, the openai SDK's transport, without the SDK on top), until
    the JSON result has arrived. `health_raw_p50` is `GET /health` from the same client.
container_create_p50
    `POST /v1/containers` until it answers: the container is ready then (its session is
    running, from the warm pool). Containers are deleted between samples, outside the clock.
execute_over_exec, create_over_health_raw
    execute_http_1plus1_p50 over sandbox_exec_1plus1_p50 (the engine alone, same code), and
    container_create_p50 over health_raw_p50.

The thread for each sample is created before the clock starts; sessions come from the warm pool
on the first python call of a thread (a new thread per sample, as a new conversation would), and
samples are `--pause` seconds apart so that the pool's background refill (a fork, ~15 ms of CPU
on this 2-core machine) is not measured as part of the next run; `--pause 0` shows that case.
run_overhead_tail, execute_tail
    run_overhead_p99 / run_overhead_p50 and execute_http_1plus1_p99 / execute_http_1plus1_p50: how
    far the slowest 1% strays from the typical request.
Targets: run_overhead_p50 <= 20 ms, execute_http_1plus1_p50 <= 2 ms, container_create_p50 <= 5 ms,
both tails <= 3x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import ServerProcess
from tests.support.upstream import Request, ScriptedUpstream, Text, ToolCalls, python_call

from stats import percentile


def script(request: Request) -> Text | ToolCalls:
    answered = any(m.get("role") == "tool" for m in request["messages"])
    return Text("2") if answered else python_call("print(1+1)")


async def sandbox_exec_samples(n: int, code: str) -> list[float]:
    from codeinterp.sandbox import Sandbox, SandboxConfig

    async with await Sandbox.start(SandboxConfig(pool_size=1)) as sandbox:
        session = await sandbox.create_session()
        for _ in range(5):
            await session.run(code)
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            await session.run(code)
            samples.append((time.perf_counter() - start) * 1000)
        await session.close()
    return samples


def timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def container_samples(server: ServerProcess, samples: int, pause: float) -> dict[str, list[float]]:
    """HTTP execute on a warm container, container creation, and the health baseline."""
    import httpx2

    with httpx2.Client(
        base_url=server.base_url, headers={"Authorization": "Bearer bench"}, timeout=60
    ) as http:
        health_url = server.base_url.removesuffix("/v1") + "/health"
        health = [timed(lambda: http.get(health_url)) for _ in range(200)]

        def create() -> str:
            response = http.post("/containers", json={"name": "bench"})
            response.raise_for_status()
            return str(response.json()["id"])

        creates = []
        for i in range(samples + 3):
            time.sleep(pause)  # the pool refills behind the previous sample
            start = time.perf_counter()
            container_id = create()
            elapsed = (time.perf_counter() - start) * 1000
            http.delete(f"/containers/{container_id}").raise_for_status()
            if i >= 3:
                creates.append(elapsed)

        container_id = create()
        body = {"code": "1+1"}

        def execute() -> None:
            response = http.post(f"/containers/{container_id}/execute", json=body)
            if response.json()["results"][0]["data"]["text/plain"] != "2":
                raise RuntimeError(f"unexpected execute answer: {response.text}")

        for _ in range(20):
            execute()
        executes = [timed(execute) for _ in range(max(200, samples))]
    return {"health_raw": health, "container_create": creates, "execute_http_1plus1": executes}


def measure(samples: int, pause: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data, ScriptedUpstream(script) as upstream:
        env = {"CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url, "CODEINTERP_POOL_SIZE": "8"}
        with ServerProcess(env, data_dir=Path(data)) as server, server.client() as client:
            assistant = client.beta.assistants.create(
                model="bench", tools=[{"type": "code_interpreter"}]
            )
            overhead: list[float] = []
            totals: list[float] = []
            for i in range(samples + 3):
                thread = client.beta.threads.create(messages=[{"role": "user", "content": "1+1?"}])
                time.sleep(pause)  # let the warm pool refill behind the previous sample
                first_request = len(upstream.requests)
                start = time.perf_counter()
                run = client.beta.threads.runs.create_and_poll(
                    thread_id=thread.id, assistant_id=assistant.id
                )
                elapsed = (time.perf_counter() - start) * 1000
                model_ms = upstream.model_seconds(first_request) * 1000
                if run.status != "completed":
                    raise RuntimeError(f"run ended {run.status}: {run.last_error}")
                if i >= 3:  # warm-up
                    overhead.append(elapsed - model_ms)
                    totals.append(elapsed)
            health: list[float] = []
            for _ in range(200):
                start = time.perf_counter()
                client.get("/../health", cast_to=object)
                health.append((time.perf_counter() - start) * 1000)
            containers = container_samples(server, samples, pause)
    execs = asyncio.run(sandbox_exec_samples(200, "print(1+1)"))
    execs_value = asyncio.run(sandbox_exec_samples(200, "1+1"))
    p50 = percentile(overhead, 50)
    execute_p50 = percentile(containers["execute_http_1plus1"], 50)
    create_p50 = percentile(containers["container_create"], 50)
    health_raw = percentile(containers["health_raw"], 50)
    run_tail = percentile(overhead, 99) / p50
    execute_tail = percentile(containers["execute_http_1plus1"], 99) / execute_p50
    return {
        "run_overhead_p50": p50,
        "run_overhead_p99": percentile(overhead, 99),
        "run_overhead_tail": run_tail,
        "execute_tail": execute_tail,
        "run_total_p50": percentile(totals, 50),
        "health_rtt_p50": percentile(health, 50),
        "sandbox_exec_p50": percentile(execs, 50),
        "overhead_over_health": p50 / percentile(health, 50),
        "overhead_over_exec": p50 / percentile(execs, 50),
        "execute_http_1plus1_p50": execute_p50,
        "execute_http_1plus1_p99": percentile(containers["execute_http_1plus1"], 99),
        "container_create_p50": create_p50,
        "container_create_p99": percentile(containers["container_create"], 99),
        "health_raw_p50": health_raw,
        "sandbox_exec_1plus1_p50": percentile(execs_value, 50),
        "execute_over_exec": execute_p50 / percentile(execs_value, 50),
        "create_over_health_raw": create_p50 / health_raw,
        "samples": len(overhead),
        "targets": {
            "run_overhead_p50": 20,
            "execute_http_1plus1_p50": 2,
            "container_create_p50": 5,
            "run_overhead_tail": 3,
            "execute_tail": 3,
        },
        "targets_met": {
            "run_overhead_p50": p50 <= 20,
            "execute_http_1plus1_p50": execute_p50 <= 2,
            "container_create_p50": create_p50 <= 5,
            "run_overhead_tail": run_tail <= 3,
            "execute_tail": execute_tail <= 3,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "spread": {"run_overhead_stdev": statistics.pstdev(overhead)},
    }


def main() -> None:
    # The openai SDK marks the Assistants API deprecated (OpenAI shut it down); we serve it.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument(
        "--pause",
        type=float,
        default=0.3,
        help="seconds between runs (each takes a session from the warm pool, which refills "
        "in the background; 0 measures back-to-back new conversations)",
    )
    args = parser.parse_args()
    report = measure(args.samples, args.pause)
    report["pause_seconds"] = args.pause
    Path(args.json).write_text(json.dumps(report, indent=2))
    for key in (
        "run_overhead_p50",
        "run_overhead_p99",
        "run_total_p50",
        "health_rtt_p50",
        "sandbox_exec_p50",
        "execute_http_1plus1_p50",
        "execute_http_1plus1_p99",
        "container_create_p50",
        "container_create_p99",
        "health_raw_p50",
        "sandbox_exec_1plus1_p50",
    ):
        print(f"{key:24s} {report[key]:9.3f} ms")
    for key in (
        "overhead_over_health",
        "overhead_over_exec",
        "execute_over_exec",
        "create_over_health_raw",
        "run_overhead_tail",
        "execute_tail",
    ):
        print(f"{key:24s} {report[key]:9.1f} x")
    for key, target in report["targets"].items():
        met = "yes" if report["targets_met"][key] else "NO"
        unit = "x" if key.endswith("_tail") else "ms"
        print(f"target {key} <= {target} {unit}: {met}")


if __name__ == "__main__":
    main()

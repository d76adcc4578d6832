"""Throughput of one-shot tasks, each in a fresh session of its own (the door for evaluation and
RL pipelines). Not a test: it measures this machine, prints a table and writes JSON.

    .venv/bin/python bench/throughput.py --json PATH [--quick]

A task is run the way `Sandbox.map` runs it: a fresh session in a task jail (namespaces and a
cgroup kept for one task after another, see sandbox/task_jails.py), forked from the light zygote,
or from the full one when the code imports the preloaded library set; the session is closed
after its result. `concurrency` tasks run at once. Figures:

tasks_per_s[snippet][concurrency]
    Tasks finished per second of wall-clock time, for `concurrency` in 1, 2, 4, 8: the number of
    tasks of a pass divided by the time from the first task's start until the last result (the
    last session closed). Every task must end `ok` with the expected output, or the bench fails.
    Snippets: "trivial" (`print(6 * 7)`) and "pandas" (`import pandas` and a small DataFrame
    summed: pandas is preloaded by the zygote, so this measures using it, not loading it).
cpu_ms_per_task[snippet][concurrency]
    CPU time of the whole machine (every process and the kernel, from /proc/stat) during the
    pass, divided by its tasks: what a task costs, whoever pays. 2 cores give 2,000 ms per
    second, so 300 tasks/s needs at most ~6.7 ms.
http_batch_tasks_per_s[snippet]
    The same tasks through a real server's `POST /v1/executions/batch` (NDJSON stream, read to
    the end), concurrency 4: what a pipeline gets over HTTP. The server runs in a subprocess
    with its default settings.
baseline_subprocess_per_s[snippet]
    The same snippets as `python -c` subprocesses of this interpreter with no sandbox at all
    (start, run, exit), concurrency 4 (a thread pool), in the same run: what a fresh interpreter
    per task costs here. Ratios: `over_subprocess` = tasks_per_s at concurrency 4 over it.

Before the timed passes a short warm-up pass (not timed) fills the pool and the page cache.
`--quick` runs fewer tasks per pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import ServerProcess

from codeinterp.sandbox import Sandbox, SandboxConfig, Task
from stats import machine

PYTHON = sys.executable
SNIPPETS = {
    "trivial": ("print(6 * 7)", "42"),
    "pandas": ("import pandas as pd\nprint(pd.DataFrame({'a': [1, 2, 3]}).a.sum())", "6"),
}
CONCURRENCY = (1, 2, 4, 8)
TARGET_TRIVIAL_PER_S = 300.0  # at any concurrency, on 2 cores


def tasks_for(snippet: str, n: int) -> list[Task]:
    code, expected = SNIPPETS[snippet]
    return [Task(code, expected_output=expected) for _ in range(n)]


def busy_cpu_seconds() -> float:
    """CPU seconds the machine spent on anything but idling, since boot."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


async def measure_engine(
    passes: int,
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    rates: dict[str, dict[int, float]] = {name: {} for name in SNIPPETS}
    cpu: dict[str, dict[int, float]] = {name: {} for name in SNIPPETS}
    async with await Sandbox.start(SandboxConfig()) as sandbox:
        async for _, result in sandbox.map(tasks_for("trivial", 20), concurrency=4):  # warm-up
            _check(result)
        for snippet in SNIPPETS:
            for concurrency in CONCURRENCY:
                await sandbox.wait_pool_full()
                tasks = tasks_for(snippet, passes)
                busy = busy_cpu_seconds()
                started = time.perf_counter()
                async for _, result in sandbox.map(tasks, concurrency=concurrency):
                    _check(result)
                rates[snippet][concurrency] = len(tasks) / (time.perf_counter() - started)
                cpu[snippet][concurrency] = (busy_cpu_seconds() - busy) / len(tasks) * 1000
    return rates, cpu


def _check(result: Any) -> None:
    if isinstance(result, Exception) or result.passed is not True:
        raise SystemExit(f"a task failed: {result!r}")


def measure_http(passes: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory() as data_dir,
        ServerProcess({}, data_dir) as server,
        httpx2.Client(base_url=server.base_url, timeout=600) as http,
    ):
        # The first pass is a warm-up: the second "trivial" replaces its figure.
        for snippet in ("trivial", *SNIPPETS):
            code, expected = SNIPPETS[snippet]
            body = {
                "tasks": [{"code": code, "expected_output": expected}] * passes,
                "concurrency": 4,
            }
            started = time.perf_counter()
            with http.stream("POST", "/executions/batch", json=body) as response:
                lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
            elapsed = time.perf_counter() - started
            if len(lines) != passes or not all(line.get("passed") for line in lines):
                raise SystemExit(f"a task failed over HTTP: {lines[:3]}")
            rates[snippet] = passes / elapsed
    return rates


def measure_subprocess(passes: int) -> dict[str, float]:
    rates: dict[str, float] = {}

    def one(code: str) -> None:
        subprocess.run([PYTHON, "-c", code], check=True, capture_output=True)

    for snippet, (code, _) in SNIPPETS.items():
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, [code] * 4))  # warm-up
            started = time.perf_counter()
            list(pool.map(one, [code] * passes))
            rates[snippet] = passes / (time.perf_counter() - started)
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="fewer tasks per pass")
    args = parser.parse_args(argv)
    passes = 40 if args.quick else 200

    engine, cpu = asyncio.run(measure_engine(passes))
    http = measure_http(passes)
    baseline = measure_subprocess(passes // 2)
    best_trivial = max(engine["trivial"].values())
    report = {
        "tasks_per_s": engine,
        "cpu_ms_per_task": cpu,
        "http_batch_tasks_per_s": http,
        "baseline_subprocess_per_s": baseline,
        "over_subprocess": {s: engine[s][4] / baseline[s] for s in SNIPPETS},
        "target": f"tasks_per_s trivial >= {TARGET_TRIVIAL_PER_S:g} at some concurrency",
        "target_met": best_trivial >= TARGET_TRIVIAL_PER_S,
        "tasks_per_pass": passes,
        "quick": args.quick,
        "machine": machine(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{'snippet':<10}"
        + "".join(f"{f'c={c}':>10}" for c in CONCURRENCY)
        + "   http c=4"
        + "   python -c c=4"
    )
    for snippet in SNIPPETS:
        row = "".join(f"{engine[snippet][c]:>10.1f}" for c in CONCURRENCY)
        print(f"{snippet:<10}{row}{http[snippet]:>11.1f}{baseline[snippet]:>16.1f}")
    for snippet in SNIPPETS:
        row = "".join(f"{cpu[snippet][c]:>10.1f}" for c in CONCURRENCY)
        print(f"{snippet:<10}{row}   CPU ms per task")
    print(f"tasks/s; target {report['target']}: {'met' if report['target_met'] else 'NOT met'}")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()

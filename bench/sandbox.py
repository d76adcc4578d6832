"""Benchmark of the sandbox engine against its targets, with Jupyter and a bare interpreter as
baselines. Not a test: it measures this machine, prints a table and writes JSON.

    .venv/bin/python bench/sandbox.py --json PATH [--quick]

Every time is wall-clock `time.perf_counter()`, in milliseconds. Figures:

create_warm_p50
    `await sandbox.create_session()` on a Sandbox with the default pool (4) when the pool holds a
    ready session. Before each sample the pool is allowed to refill (`wait_pool_full`, not timed);
    the session is closed after the sample (not timed).
create_cold_p50, create_cold_p99
    `await sandbox.create_session()` on a Sandbox with `pool_size=0`: workspace and cgroup set-up,
    the zygote's fork, the jail and the kernel, until the kernel has said "ready". Samples run
    back to back; each session is closed after its sample (not timed). One creation is made and
    discarded before the samples (the first fork after the zygote starts is slower; it is
    reported as `create_cold_first`). A second, instrumented pass times the phases of cold
    creation on the host side (`cold_breakdown_p50`, see `_phase_probes`).
burst20_p95
    20 `create_session()` calls at once (`asyncio.gather`) on a Sandbox with the default pool
    size (`burst_pool_size`), pool full at the start. A session's time runs from the moment the
    burst is issued until its `create_session()` returns. p95 over all sessions of all bursts
    (3 bursts of 20); the sessions are closed and the pool refilled between bursts.
exec_1plus1_p50
    `await session.run("1+1")` on a warm session after some warm-up runs: the host API round
    trip (channel, IPython, workspace scan, result). `exec_ping_p50` is `session.ping()`, the bare
    channel round trip without IPython, for comparison.
idle_uss_mb
    20 sessions, each having run `1+1` once, then idle: the mean over sessions of the USS of the
    session's init and REPL processes together, where a process's USS is Private_Clean +
    Private_Dirty from /proc/PID/smaps_rollup. Unit: MB = 10**6 bytes (`uss_unit`).
jupyter_create_p50 (baseline)
    `jupyter_client.KernelManager` starting this venv's `python3` ipykernel, `wait_for_ready`, then
    `import pandas` run to completion (`execute_interactive`). Shut down after each sample (not
    timed).
subprocess_pandas_p50 (baseline)
    `python -c "import pandas"` with this venv's interpreter, as a subprocess, start to exit.

Baselines run after the sandbox phases, so the page cache is warm for them as it is for the
zygote. Ratios: `jupyter_over_cold` = jupyter_create_p50 / create_cold_p50 and
`jupyter_over_warm` = jupyter_create_p50 / create_warm_p50.

Percentiles (`percentile`): linear interpolation between the two nearest ranks of the sorted
samples, i.e. numpy's default and `statistics.quantiles(..., method="inclusive")`. p50 of an
even count is the mean of the two middle samples; p99 of 30 samples lies between the 29th and
30th.

`--quick` cuts the sample counts so the whole run takes well under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from unittest import mock

from codeinterp.sandbox import Sandbox, SandboxConfig, Session
from codeinterp.sandbox.session import KernelProcess
from codeinterp.sandbox.workspace import Workspace

P = ParamSpec("P")
T = TypeVar("T")

PYTHON = sys.executable  # run the bench with .venv/bin/python: the sandbox and baselines use it
BURST_SIZE = 20
BURST_POOL_SIZE = SandboxConfig().pool_size  # the default pool size
USS_UNIT = "MB (10**6 bytes)"
USS_BYTES = 1_000_000

# metric -> (comparison, bound)
TARGETS: dict[str, tuple[str, float]] = {
    "create_warm_p50": ("<=", 2.0),
    "create_cold_p50": ("<=", 20.0),
    "burst20_p95": ("<=", 100.0),
    "exec_1plus1_p50": ("<=", 1.0),
    "idle_uss_mb": ("<=", 15.0),
    "jupyter_over_cold": (">=", 50.0),
}


@dataclass(frozen=True)
class Counts:
    """Sample counts of one run."""

    warm: int
    cold: int
    bursts: int
    exec_warmup: int
    exec: int
    ping: int
    idle: int
    jupyter: int
    subprocess: int


FULL = Counts(warm=30, cold=30, bursts=3, exec_warmup=20, exec=500, ping=200, idle=20,
              jupyter=5, subprocess=10)
QUICK = Counts(warm=10, cold=10, bursts=1, exec_warmup=5, exec=100, ping=50, idle=20,
               jupyter=3, subprocess=5)


# -- helpers ------------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (see the module docstring)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "p99": percentile(samples, 99),
        "min": min(samples),
        "max": max(samples),
        "mean": sum(samples) / len(samples),
    }


def uss_bytes(pid: int) -> int:
    """Private_Clean + Private_Dirty of one process, from smaps_rollup (the kernel says kB)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Private_Clean", "Private_Dirty"):
                total += int(rest.split()[0]) * 1024
    return total


def session_pids(session: Session) -> tuple[int, int]:
    process = session.process
    if process is None:
        raise RuntimeError(f"session {session.id} has no process")
    repl = process.repl_pid()
    if not repl:
        raise RuntimeError(f"session {session.id}: cannot find the REPL's pid")
    return process.init_pid, repl


async def run_ok(session: Session, code: str) -> None:
    execution = await session.run(code)
    if execution.status != "ok":
        raise RuntimeError(f"{code!r} ended {execution.status}: {execution.error or execution}")


async def close_all(sessions: list[Session]) -> None:
    await asyncio.gather(*(s.close() for s in sessions))


# -- cold creation, with a host-side breakdown ---------------------------------------------------


def _timed_sync(fn: Callable[P, T], sink: list[float]) -> Callable[P, T]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(elapsed_ms(start))

    return wrapper


def _timed_async(fn: Callable[P, Awaitable[T]], sink: list[float]) -> Callable[P, Awaitable[T]]:
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            sink.append(elapsed_ms(start))

    return wrapper


@contextlib.contextmanager
def _phase_probes(sandbox: Sandbox, phases: dict[str, list[float]]) -> Iterator[None]:
    """Time the host-side phases of `Sandbox._new_session`, one entry per session and phase.

    workspace       Workspace.create: the session directory and its quota tmpfs
    cgroup          CgroupManager.create: the session's cgroups and their limits
    zygote_spawn    ZygoteClient.spawn: request to the zygote until its reply with the fds
                    (the zygote's unshare + fork; the child's jail runs after this)
    channel_open    KernelProcess.open: asyncio streams on the channel, pipe readers
    wait_ready      KernelProcess.wait_ready: the child's jail and kernel start, until "ready"
    other           the rest of create_session (total minus the phases above)
    """
    probes: list[tuple[object, str, str]] = [
        (Workspace, "create", "workspace"),
        (sandbox.cgroups, "create", "cgroup"),
        (sandbox.zygote, "spawn", "zygote_spawn"),
        (KernelProcess, "open", "channel_open"),
        (KernelProcess, "wait_ready", "wait_ready"),
    ]
    with contextlib.ExitStack() as stack:
        for target, attribute, phase in probes:
            original = getattr(target, attribute, None)
            if original is None:  # no cgroups (unsafe mode), or the engine changed: skip it
                continue
            sink = phases[phase] = []
            timed = _timed_async if inspect.iscoroutinefunction(original) else _timed_sync
            stack.enter_context(mock.patch.object(target, attribute, timed(original, sink)))
        yield


async def measure_cold(counts: Counts) -> dict[str, Any]:
    sandbox = await Sandbox.start(SandboxConfig(pool_size=0))
    try:
        start = time.perf_counter()
        first = await sandbox.create_session()
        first_ms = elapsed_ms(start)
        await first.close()

        samples: list[float] = []
        close_samples: list[float] = []
        for _ in range(counts.cold):
            start = time.perf_counter()
            session = await sandbox.create_session()
            samples.append(elapsed_ms(start))
            start = time.perf_counter()
            await session.close()
            close_samples.append(elapsed_ms(start))

        phases: dict[str, list[float]] = {}
        totals: list[float] = []
        with _phase_probes(sandbox, phases):
            for _ in range(counts.cold):
                start = time.perf_counter()
                session = await sandbox.create_session()
                totals.append(elapsed_ms(start))
                await session.close()
        phases = {name: values for name, values in phases.items() if values}
        phases["other"] = [
            total - sum(values[i] for values in phases.values())
            for i, total in enumerate(totals)
        ]
        phases["total"] = totals
        return {
            "create_cold": samples,
            "create_cold_first": first_ms,
            "session_close": close_samples,
            "cold_breakdown_p50": {name: percentile(v, 50) for name, v in phases.items()},
            "zygote_preload_ms": float(sandbox.zygote.hello.get("preload_ms", 0.0)),
        }
    finally:
        await sandbox.close()


# -- with the warm pool -------------------------------------------------------------------------


async def measure_warm(sandbox: Sandbox, n: int) -> list[float]:
    samples: list[float] = []
    for _ in range(n):
        await sandbox.wait_pool_full()
        start = time.perf_counter()
        session = await sandbox.create_session()
        samples.append(elapsed_ms(start))
        await session.close()
    return samples


async def measure_exec(sandbox: Sandbox, counts: Counts) -> tuple[list[float], list[float]]:
    session = await sandbox.create_session()
    try:
        await sandbox.wait_pool_full()  # no refill running behind the samples
        first = await session.run("1+1")
        if first.status != "ok" or first.text != "2":
            raise RuntimeError(f"1+1 gave {first.status} {first.text!r}")
        for _ in range(counts.exec_warmup):
            await run_ok(session, "1+1")
        runs: list[float] = []
        for _ in range(counts.exec):
            start = time.perf_counter()
            execution = await session.run("1+1")
            runs.append(elapsed_ms(start))
            if execution.status != "ok":
                raise RuntimeError(f"1+1 ended {execution.status}")
        pings: list[float] = []
        for _ in range(counts.ping):
            start = time.perf_counter()
            await session.ping()
            pings.append(elapsed_ms(start))
        return runs, pings
    finally:
        await session.close()


async def measure_burst(sandbox: Sandbox, bursts: int) -> list[float]:
    samples: list[float] = []

    async def one(issued: float) -> tuple[float, Session]:
        session = await sandbox.create_session()
        return elapsed_ms(issued), session

    for _ in range(bursts):
        await sandbox.wait_pool_full()
        issued = time.perf_counter()
        results = await asyncio.gather(*(one(issued) for _ in range(BURST_SIZE)))
        samples.extend(ms for ms, _ in results)
        await close_all([session for _, session in results])
    return samples


async def measure_idle_uss(sandbox: Sandbox, n: int) -> dict[str, Any]:
    sessions: list[Session] = []
    try:
        for _ in range(n):
            session = await sandbox.create_session()
            sessions.append(session)
            await run_ok(session, "1+1")
        await asyncio.sleep(0.2)  # let the last outputs and the pool refill settle
        init_uss: list[float] = []
        repl_uss: list[float] = []
        for session in sessions:
            init_pid, repl_pid = session_pids(session)
            init_uss.append(uss_bytes(init_pid) / USS_BYTES)
            repl_uss.append(uss_bytes(repl_pid) / USS_BYTES)
        totals = [a + b for a, b in zip(init_uss, repl_uss, strict=True)]
        return {
            "idle_uss_mb": sum(totals) / len(totals),
            "idle_uss_max_mb": max(totals),
            "idle_uss_init_mean_mb": sum(init_uss) / len(init_uss),
            "idle_uss_repl_mean_mb": sum(repl_uss) / len(repl_uss),
        }
    finally:
        await close_all(sessions)


async def measure_sandbox(counts: Counts) -> dict[str, Any]:
    cold = await measure_cold(counts)
    sandbox = await Sandbox.start(SandboxConfig(pool_size=BURST_POOL_SIZE))
    try:
        await sandbox.wait_pool_full()
        warm = await measure_warm(sandbox, counts.warm)
        runs, pings = await measure_exec(sandbox, counts)
        burst = await measure_burst(sandbox, counts.bursts)
        await sandbox.wait_pool_full()
        idle = await measure_idle_uss(sandbox, counts.idle)
    finally:
        await sandbox.close()
    return {**cold, "create_warm": warm, "exec_1plus1": runs, "exec_ping": pings,
            "burst20": burst, **idle}


# -- baselines ----------------------------------------------------------------------------------


def jupyter_once() -> float:
    from jupyter_client.manager import KernelManager

    start = time.perf_counter()
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive("import pandas", timeout=60, output_hook=lambda _: None)
        took = elapsed_ms(start)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"import pandas in ipykernel: {reply['content']}")
        return took
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def subprocess_once() -> float:
    start = time.perf_counter()
    subprocess.run([PYTHON, "-c", "import pandas"], check=True)
    return elapsed_ms(start)


# -- report -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        memory_kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_total_mb": round(memory_kb * 1024 / 1e6),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_executable": PYTHON,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],  # other work skews results
    }


def build_report(raw: dict[str, Any], jupyter: list[float], spawn: list[float],
                 counts: Counts, quick: bool) -> dict[str, Any]:
    warm = summary(raw["create_warm"])
    cold = summary(raw["create_cold"])
    burst = summary(raw["burst20"])
    exec_runs = summary(raw["exec_1plus1"])
    jupyter_p50 = percentile(jupyter, 50)
    metrics: dict[str, Any] = {
        "create_warm_p50": warm["p50"],
        "create_cold_p50": cold["p50"],
        "create_cold_p99": cold["p99"],
        "burst20_p95": burst["p95"],
        "burst_pool_size": BURST_POOL_SIZE,
        "exec_1plus1_p50": exec_runs["p50"],
        "idle_uss_mb": raw["idle_uss_mb"],
        "uss_unit": USS_UNIT,
        "jupyter_create_p50": jupyter_p50,
        "subprocess_pandas_p50": percentile(spawn, 50),
        "jupyter_over_cold": jupyter_p50 / cold["p50"],
        "jupyter_over_warm": jupyter_p50 / warm["p50"],
    }
    met = {
        name: (metrics[name] <= bound if op == "<=" else metrics[name] >= bound)
        for name, (op, bound) in TARGETS.items()
    }
    details = {
        "create_warm": warm,
        "create_cold": cold,
        "create_cold_first": raw["create_cold_first"],
        "cold_breakdown_p50": raw["cold_breakdown_p50"],
        "session_close": summary(raw["session_close"]),
        "burst20": burst,
        "exec_1plus1": exec_runs,
        "exec_ping": summary(raw["exec_ping"]),
        "idle_uss_max_mb": raw["idle_uss_max_mb"],
        "idle_uss_init_mean_mb": raw["idle_uss_init_mean_mb"],
        "idle_uss_repl_mean_mb": raw["idle_uss_repl_mean_mb"],
        "jupyter_create": summary(jupyter),
        "subprocess_pandas": summary(spawn),
        "zygote_preload_ms": raw["zygote_preload_ms"],
    }
    samples = {**asdict(counts), "burst_size": BURST_SIZE,
               "burst_samples": len(raw["burst20"])}
    return {
        **metrics,
        "targets": {name: f"{op} {bound:g}" for name, (op, bound) in TARGETS.items()},
        "targets_met": met,
        "all_targets_met": all(met.values()),
        "details": details,
        "samples": samples,
        "quick": quick,
        "unit": "ms unless the key names another unit",
        "percentile_method": "linear interpolation between closest ranks (numpy default)",
        "machine": machine_info(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_table(report: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str, str]] = []
    for name in ("create_warm_p50", "create_cold_p50", "create_cold_p99", "burst20_p95",
                 "exec_1plus1_p50", "idle_uss_mb", "jupyter_create_p50",
                 "subprocess_pandas_p50", "jupyter_over_cold", "jupyter_over_warm"):
        value = report[name]
        unit = "MB" if name == "idle_uss_mb" else "x" if "_over_" in name else "ms"
        target = report["targets"].get(name, "")
        met = {True: "yes", False: "NO"}.get(report["targets_met"].get(name), "")
        rows.append((name, f"{value:,.3f} {unit}", target, met))
    rows.append(("", "", "", ""))
    for phase, value in report["details"]["cold_breakdown_p50"].items():
        rows.append((f"  cold phase {phase} (p50)", f"{value:,.3f} ms", "", ""))
    for name in ("exec_ping", "session_close", "create_cold"):
        stats = report["details"][name]
        rows.append((f"  {name} p50 / p99", f"{stats['p50']:.3f} / {stats['p99']:.3f} ms", "", ""))
    rows.append(("  create_cold_first", f"{report['details']['create_cold_first']:.3f} ms", "", ""))
    headers = ("metric", "value", "target", "met")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("{:<%d}" % w for w in widths)  # noqa: UP031
    print(line.format(*headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row).rstrip())
    machine = report["machine"]
    print(f"\n{machine['cpu_count']} CPUs ({machine['cpu_model']}), Linux {machine['kernel']}, "
          f"Python {machine['python']}; samples: {report['samples']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL

    raw = asyncio.run(measure_sandbox(counts))
    jupyter = [jupyter_once() for _ in range(counts.jupyter)]
    spawn = [subprocess_once() for _ in range(counts.subprocess)]

    report = build_report(raw, jupyter, spawn, counts, args.quick)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()

"""Density benchmark: how many idle sessions fit in memory on this machine. Not a test: it
measures, prints a table and writes JSON.

    .venv/bin/python bench/density.py --json PATH [--budget-gib 22] [--quick]

One Sandbox with `pool_size=0`. Sessions are opened BATCH (20) at a time (`asyncio.gather` of
`create_session()`); each runs SETUP once (imports pandas, builds a 100-row DataFrame and shows
its head, as a first cell of an analysis does) and then stays open and idle. Opening stops at
the first of:

    budget   memory used (below) has reached `--budget-gib` (default 22 GiB);
    floor    MemAvailable is below `--keep-free-gib` (default 1 GiB): the machine must stay up,
             whatever the budget;
    max      `--max-sessions` are open;
    failure  a session failed to open or to run SETUP: the first failure is reported with the
             session's number, the exception and its message, and no more are opened.

Then every session is closed and the Sandbox with them (`close_s`).

Memory is measured as the machine sees it: MemAvailable from /proc/meminfo (1 GiB = 2**30
bytes, 1 MiB = 2**20 bytes). Figures:

baseline
    MemAvailable after the Sandbox started (zygote loaded) and one session was opened, used and
    closed (the zygote's first fork touches memory no later fork touches); `zygote_mib` is
    MemAvailable before Sandbox.start minus that baseline: the fixed cost.
sessions_open
    Sessions open and idle when opening stopped (`stop_reason` says why).
memory_used_gib
    Baseline minus MemAvailable after the last batch (read 1 s after it ran SETUP).
mib_per_session
    memory_used / sessions_open, in MiB.
sessions_per_gib
    sessions_open / memory_used_gib.
sessions_in_budget
    floor(sessions_per_gib * budget_gib): the extrapolation to the budget (22 GiB by default);
    the target is >= 1,500 in 22 GiB. When the run reached the budget it is about sessions_open.
cgroup_mib_per_session
    Mean over the open sessions of their memory cgroup's usage (v1 memory.usage_in_bytes, v2
    memory.current): user memory and the kernel memory charged to the session.
outside_cgroup_mib_per_session
    mib_per_session - cgroup_mib_per_session: what a session costs outside its cgroup (kernel
    objects not charged to it, the host's and the zygote's share).
pss_mib_per_session
    Mean over the open sessions of the PSS of their init and REPL processes (smaps_rollup:
    private pages plus a share of each page shared, among them the zygote's) plus their page
    tables (VmPTE): the sessions' own memory, which other work on the machine does not
    disturb (MemAvailable does). Kernel objects (namespaces, cgroups, mounts) are not in it.
milestones
    Every 100 sessions: sessions open, memory used (GiB), seconds since the first, and the p50
    of `create_session()` over those 100 (ms), to show whether cost per session and creation
    time stay flat.

`--quick` uses a 1 GiB budget (unless --budget-gib is given): a run of well under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codeinterp.sandbox import Sandbox, SandboxConfig, Session
from stats import machine, percentile

GiB = 1 << 30
MiB = 1 << 20
BATCH = 20
DEFAULT_BUDGET_GIB = 22.0
QUICK_BUDGET_GIB = 1.0
SETUP = """\
import pandas as pd
df = pd.DataFrame({"x": range(100), "y": [i * 0.5 for i in range(100)]})
df.head()
"""

# metric -> (comparison, bound)
TARGETS: dict[str, tuple[str, float]] = {"sessions_in_budget": (">=", 1500)}


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _kib_fields(path: str, names: tuple[str, ...]) -> int:
    total = 0
    with open(path) as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in names:
                total += int(rest.split()[0])
    return total * 1024


def session_pss(session: Session) -> int:
    """PSS plus page tables of the session's init and REPL, in bytes (0 if they are gone)."""
    process = session.process
    if process is None:
        return 0
    total = 0
    for pid in (process.init_pid, process.repl_pid()):
        with contextlib.suppress(OSError):
            total += _kib_fields(f"/proc/{pid}/smaps_rollup", ("Pss",))
            total += _kib_fields(f"/proc/{pid}/status", ("VmPTE",))
    return total


@dataclass
class Run:
    budget: int
    keep_free: int
    max_sessions: int
    sessions: list[Session] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    milestones: list[dict[str, float]] = field(default_factory=list)
    failure: dict[str, Any] | None = None
    stop_reason: str = ""


async def open_one(sandbox: Sandbox, run: Run, number: int) -> None:
    started = time.perf_counter()
    try:
        session = await sandbox.create_session()
    except Exception as exc:
        run.failure = run.failure or {
            "session": number,
            "step": "create_session",
            "error": f"{type(exc).__name__}: {exc}"[:2000],
        }
        return
    run.create_ms.append((time.perf_counter() - started) * 1000)
    run.sessions.append(session)
    try:
        execution = await session.run(SETUP, timeout=60)
        if execution.status != "ok":
            raise RuntimeError(f"SETUP ended {execution.status}: {execution.error}")
    except Exception as exc:
        run.failure = run.failure or {
            "session": number,
            "step": "run SETUP",
            "error": f"{type(exc).__name__}: {exc}"[:2000],
        }


async def fill(sandbox: Sandbox, run: Run, baseline: int) -> int:
    """Open sessions until a stop condition; MemAvailable at the end."""
    first = time.perf_counter()
    available = mem_available()
    while True:
        used = baseline - available
        if run.failure is not None:
            run.stop_reason = "failure"
        elif used >= run.budget:
            run.stop_reason = "budget"
        elif available < run.keep_free:
            run.stop_reason = "floor"
        elif len(run.sessions) >= run.max_sessions:
            run.stop_reason = "max"
        if run.stop_reason:
            return available
        count = min(BATCH, run.max_sessions - len(run.sessions))
        start = len(run.sessions)
        await asyncio.gather(*(open_one(sandbox, run, start + i + 1) for i in range(count)))
        await asyncio.sleep(1.0)  # let exits, frees and the outputs settle before reading
        available = mem_available()
        if len(run.sessions) // 100 > start // 100:
            done = len(run.sessions)
            run.milestones.append(
                {
                    "sessions": done,
                    "memory_used_gib": (baseline - available) / GiB,
                    "seconds": time.perf_counter() - first,
                    "create_p50_ms": percentile(run.create_ms[-100:], 50),
                }
            )
            print(
                f"{done} sessions, {(baseline - available) / GiB:.2f} GiB used, "
                f"create p50 {run.milestones[-1]['create_p50_ms']:.1f} ms",
                flush=True,
            )


async def measure(run: Run) -> dict[str, Any]:
    before = mem_available()
    sandbox = await Sandbox.start(SandboxConfig(pool_size=0))
    try:
        async with await sandbox.create_session() as first:
            await first.run(SETUP)
        await asyncio.sleep(1.0)
        baseline = mem_available()
        end = await fill(sandbox, run, baseline)
        cgroup_bytes = [s.cgroup.current_memory() for s in run.sessions if s.cgroup is not None]
        pss_bytes = [session_pss(s) for s in run.sessions]
        open_count = len(run.sessions)
        used = baseline - end
    finally:
        started = time.perf_counter()
        await asyncio.gather(*(s.close() for s in run.sessions), return_exceptions=True)
        await sandbox.close()
        close_s = time.perf_counter() - started
    per_session = used / open_count if open_count else 0.0
    per_gib = open_count / (used / GiB) if used > 0 else 0.0
    cgroup_mean = sum(cgroup_bytes) / len(cgroup_bytes) if cgroup_bytes else 0.0
    return {
        "sessions_open": open_count,
        "stop_reason": run.stop_reason,
        "first_failure": run.failure,
        "memory_used_gib": used / GiB,
        "mib_per_session": per_session / MiB,
        "sessions_per_gib": per_gib,
        "sessions_in_budget": math.floor(per_gib * run.budget / GiB),
        "cgroup_mib_per_session": cgroup_mean / MiB,
        "outside_cgroup_mib_per_session": (per_session - cgroup_mean) / MiB,
        "pss_mib_per_session": sum(pss_bytes) / len(pss_bytes) / MiB if pss_bytes else 0.0,
        "zygote_mib": (before - baseline) / MiB,
        "create_p50_ms": percentile(run.create_ms, 50) if run.create_ms else 0.0,
        "create_p99_ms": percentile(run.create_ms, 99) if run.create_ms else 0.0,
        "milestones": run.milestones,
        "close_s": close_s,
        "mem_available_start_gib": before / GiB,
        "mem_available_end_gib": end / GiB,
    }


def build_report(measured: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    met = {
        name: measured[name] >= bound if op == ">=" else measured[name] <= bound
        for name, (op, bound) in TARGETS.items()
    }
    with open("/proc/meminfo") as f:
        total_kb = int(f.readline().split()[1])
    return {
        **measured,
        "budget_gib": args.budget_gib,
        "keep_free_gib": args.keep_free_gib,
        "max_sessions": args.max_sessions,
        "batch": BATCH,
        "setup_code": SETUP,
        "targets": {name: f"{op} {bound:g}" for name, (op, bound) in TARGETS.items()},
        "targets_met": met,
        "quick": args.quick,
        "machine": {**machine(), "memory_total_gib": total_kb * 1024 / GiB},
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_table(report: dict[str, Any]) -> None:
    rows = [
        ("sessions_open", f"{report['sessions_open']}", ""),
        ("stop_reason", report["stop_reason"], ""),
        ("memory_used_gib", f"{report['memory_used_gib']:.2f} GiB", ""),
        ("mib_per_session", f"{report['mib_per_session']:.2f} MiB", ""),
        ("sessions_per_gib", f"{report['sessions_per_gib']:.1f}", ""),
        (
            f"sessions_in_budget ({report['budget_gib']:g} GiB)",
            f"{report['sessions_in_budget']}",
            report["targets"]["sessions_in_budget"],
        ),
        ("cgroup_mib_per_session", f"{report['cgroup_mib_per_session']:.2f} MiB", ""),
        (
            "outside_cgroup_mib_per_session",
            f"{report['outside_cgroup_mib_per_session']:.2f} MiB",
            "",
        ),
        ("pss_mib_per_session", f"{report['pss_mib_per_session']:.2f} MiB", ""),
        ("zygote_mib", f"{report['zygote_mib']:.0f} MiB", ""),
        (
            "create p50 / p99",
            f"{report['create_p50_ms']:.1f} / {report['create_p99_ms']:.1f} ms",
            "",
        ),
        ("close_s", f"{report['close_s']:.1f} s", ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if report["first_failure"]:
        print(f"first failure: {report['first_failure']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--budget-gib", type=float, default=None, help="memory to fill (22)")
    parser.add_argument("--keep-free-gib", type=float, default=1.0, help="MemAvailable floor")
    parser.add_argument("--max-sessions", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_BUDGET_GIB:g} GiB budget")
    args = parser.parse_args(argv)
    if args.budget_gib is None:
        args.budget_gib = QUICK_BUDGET_GIB if args.quick else DEFAULT_BUDGET_GIB
    run = Run(int(args.budget_gib * GiB), int(args.keep_free_gib * GiB), args.max_sessions)
    measured = asyncio.run(measure(run))
    report = build_report(measured, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"written to {args.json}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()


if __name__ == "__main__":
    main()

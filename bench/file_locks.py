"""Benchmark of the record-lock budget (sandbox/file_locks.py): what counting every fcntl lock
costs a session, and what a session hammering its budget costs the others. Not a test: it
measures this machine, prints a table and writes JSON.

    .venv/bin/python bench/file_locks.py --json PATH [--quick]

Each figure is taken in a supervised session (the default jail) and in a baseline session of the
same run without seccomp (`SandboxPolicy(seccomp=False)`, so nothing is notified), samples
interleaved; the report gives both and their ratio.

lock_pair_us
    One `lockf(LOCK_EX)` plus one `lockf(LOCK_UN)` on the same byte: two notified calls.
sqlite_selects_ms
    2,000 autocommit `SELECT`s on a file database in /mnt/data (each takes and drops SQLite's
    shared lock: about four fcntl calls).
sqlite_commits_ms
    200 single-row `INSERT` + `COMMIT`s on the same database.
other_spawn_ms
    While one session calls `fcntl(F_SETLK)` at its budget as fast as it can (every call needs
    a census), another session is created and runs `1+1`; against the same with no such session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codeinterp.sandbox import Sandbox, SandboxConfig, SandboxPolicy, Session

LOCK_PAIRS = """
import fcntl, time
h = open('/tmp/pairs', 'w')
started = time.perf_counter()
for _ in range({n}):
    fcntl.lockf(h, fcntl.LOCK_EX, 1, 0)
    fcntl.lockf(h, fcntl.LOCK_UN, 1, 0)
print((time.perf_counter() - started) / {n} * 1e6)
"""

SQLITE_SETUP = """
import sqlite3, time
db = sqlite3.connect('/mnt/data/bench.db', isolation_level=None)
db.execute('create table if not exists t (a)')
db.execute('insert into t values (1)')
"""

SQLITE_SELECTS = """
started = time.perf_counter()
for _ in range({n}):
    db.execute('select count(*) from t').fetchone()
print((time.perf_counter() - started) * 1000)
"""

SQLITE_COMMITS = """
started = time.perf_counter()
for i in range({n}):
    db.execute('begin'); db.execute('insert into t values (?)', (i,)); db.execute('commit')
print((time.perf_counter() - started) * 1000)
"""

HAMMER = """
import fcntl, time
h = open('/tmp/hammer', 'w')
for i in range({budget}):  # fill the budget
    try:
        fcntl.lockf(h, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 2 * i)
    except OSError:
        break
calls, end = 0, time.monotonic() + {seconds}
while time.monotonic() < end:
    try:
        fcntl.lockf(h, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 10**9)
    except OSError:
        pass
    calls += 1
print(calls)
"""


async def number(session: Session, code: str) -> float:
    ex = await session.run(code, timeout=300)
    assert ex.status == "ok", (ex.error, ex.stderr)
    return float(ex.stdout.strip().splitlines()[-1])


async def spawn_and_run(sandbox: Sandbox) -> float:
    started = time.perf_counter()
    async with await sandbox.create_session() as other:
        await number(other, "print(1 + 1)")
    return (time.perf_counter() - started) * 1000


async def measure(rounds: int, pairs: int, seconds: float) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {}

    def add(figure: str, kind: str, value: float) -> None:
        samples.setdefault(figure, {"supervised": [], "baseline": []})[kind].append(value)

    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        hello = sandbox.zygote.hello
        if not hello.get("file_locks"):
            raise SystemExit(f"record locks are not supervised here: {hello['file_locks_error']}")
        policies = {"supervised": SandboxPolicy(), "baseline": SandboxPolicy(seccomp=False)}
        sessions = {k: await sandbox.create_session(p) for k, p in policies.items()}
        for session in sessions.values():
            await number(session, SQLITE_SETUP + "print(0)")
        for round_ in range(rounds):
            order = ["supervised", "baseline"] if round_ % 2 == 0 else ["baseline", "supervised"]
            for kind in order:
                session = sessions[kind]
                add("lock_pair_us", kind, await number(session, LOCK_PAIRS.format(n=pairs)))
                add("sqlite_selects_ms", kind, await number(session, SQLITE_SELECTS.format(n=2000)))
                add("sqlite_commits_ms", kind, await number(session, SQLITE_COMMITS.format(n=200)))
        for session in sessions.values():
            await session.close()

        budget = SandboxPolicy().limits.file_locks
        hammer_calls: list[float] = []
        for _ in range(rounds):
            add("other_spawn_ms", "baseline", await spawn_and_run(sandbox))
            async with await sandbox.create_session() as hammering:
                flood = asyncio.create_task(
                    number(hammering, HAMMER.format(budget=budget, seconds=seconds))
                )
                await asyncio.sleep(0.5)
                while not flood.done():
                    add("other_spawn_ms", "supervised", await spawn_and_run(sandbox))
                    await asyncio.sleep(0.05)
                hammer_calls.append(await flood / seconds)
    figures = {}
    for figure, kinds in samples.items():
        supervised = statistics.median(kinds["supervised"])
        baseline = statistics.median(kinds["baseline"])
        figures[figure] = {
            "supervised_p50": round(supervised, 2),
            "baseline_p50": round(baseline, 2),
            "ratio": round(supervised / baseline, 2),
            "samples": {k: len(v) for k, v in kinds.items()},
        }
    figures["other_spawn_ms"]["note"] = "supervised = while a session hammers its budget"
    figures["hammer_calls_per_s"] = round(statistics.median(hammer_calls))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    args = parser.parse_args(argv)
    rounds, pairs, seconds = (3, 2000, 3.0) if args.quick else (8, 10000, 5.0)
    figures = asyncio.run(measure(rounds, pairs, seconds))
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"kernel": platform.release(), "python": platform.python_version()},
        "figures": figures,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'figure':<22} {'supervised':>11} {'baseline':>10} {'ratio':>7}")
    for name, figure in figures.items():
        if isinstance(figure, dict):
            print(
                f"{name:<22} {figure['supervised_p50']:>11} {figure['baseline_p50']:>10} "
                f"{figure['ratio']:>7}"
            )
        else:
            print(f"{name:<22} {figure:>11}")


if __name__ == "__main__":
    main()

"""Session snapshots: how long saving and restoring a session takes, and how large the archive
is, against a cold creation of the same session in the same run. Not a test: it measures this
machine, prints a table and writes JSON.

    .venv/bin/python bench/snapshot.py --json PATH [--quick]

One Sandbox with `pool_size=0`. For each state below, `--runs` times (median reported):

cold_ms
    `create_session()` plus its first `1+1` (the same first execution a restored session is
    timed to): the baseline.
snapshot_ms
    `Session.snapshot(path)` of a session holding the state, until the archive is on disk.
archive_mib
    The archive's size.
restore_ms
    `create_session(restore_from=path)` plus its first `1+1`: the session is usable with the
    state back. `restore_over_cold` = restore_ms / cold_ms.

States: "empty" (nothing defined), "dataframe" (pandas and a 1,000,000-row DataFrame of an int,
a float and a short string column), "arrays" (200 MB of NumPy float64 arrays in four arrays).
Targets (dataframe): restore <= 200 ms and <= 10x cold; snapshot <= 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codeinterp.sandbox import Sandbox, SandboxConfig, SandboxPolicy
from codeinterp.sandbox.policy import MEMORY_TIERS
from stats import machine

STATES = {
    "empty": "",
    "dataframe": (
        "import numpy as np, pandas as pd\n"
        "n = 1_000_000\n"
        "frame = pd.DataFrame({'id': np.arange(n), 'value': np.random.default_rng(0).random(n),"
        " 'label': np.where(np.arange(n) % 2, 'odd', 'even')})\n"
    ),
    "arrays": (
        "import numpy as np\n"
        "arrays = [np.random.default_rng(i).random(6_553_600) for i in range(4)]  # 4 x 50 MiB\n"
    ),
}
TARGET_RESTORE_MS = 200.0
TARGET_RESTORE_OVER_COLD = 10.0
TARGET_SNAPSHOT_MS = 300.0


async def first_execution(sandbox: Sandbox, policy: SandboxPolicy, **kwargs: Any) -> float:
    """Milliseconds to a session that has answered its first `1+1` (then closed)."""
    started = time.perf_counter()
    session = await sandbox.create_session(policy, **kwargs)
    execution = await session.run("1 + 1")
    elapsed = (time.perf_counter() - started) * 1000
    if execution.status != "ok":
        raise SystemExit(f"a session failed: {execution}")
    await session.close()
    return elapsed


async def measure(runs: int, directory: str) -> dict[str, dict[str, float]]:
    # The arrays need more than the default 1 GiB: the 4g tier, for every state alike.
    policy = SandboxPolicy.for_memory_tier("4g")
    assert policy.limits.memory == MEMORY_TIERS["4g"]
    figures: dict[str, dict[str, float]] = {}
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        await first_execution(sandbox, policy)  # warm-up: the zygote's first forks
        for state, code in STATES.items():
            cold, saves, restores, sizes = [], [], [], []
            for run in range(runs):
                cold.append(await first_execution(sandbox, policy))
                session = await sandbox.create_session(policy)
                if code and (await session.run(code, timeout=300)).status != "ok":
                    raise SystemExit(f"could not build the {state} state")
                path = os.path.join(directory, f"{state}-{run}.snapshot")
                started = time.perf_counter()
                info = await session.snapshot(path)
                saves.append((time.perf_counter() - started) * 1000)
                sizes.append(info.bytes / 2**20)
                await session.close()
                restores.append(await first_execution(sandbox, policy, restore_from=path))
                os.unlink(path)
            figures[state] = {
                "cold_ms": statistics.median(cold),
                "snapshot_ms": statistics.median(saves),
                "archive_mib": statistics.median(sizes),
                "restore_ms": statistics.median(restores),
            }
            figures[state]["restore_over_cold"] = (
                figures[state]["restore_ms"] / figures[state]["cold_ms"]
            )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run of each")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="snapshot-bench-") as directory:
        figures = asyncio.run(measure(1 if args.quick else args.runs, directory))
    frame = figures["dataframe"]
    report = {
        "states": figures,
        "targets": {
            "dataframe_restore_ms": TARGET_RESTORE_MS,
            "dataframe_restore_over_cold": TARGET_RESTORE_OVER_COLD,
            "dataframe_snapshot_ms": TARGET_SNAPSHOT_MS,
        },
        "targets_met": frame["restore_ms"] <= TARGET_RESTORE_MS
        and frame["restore_over_cold"] <= TARGET_RESTORE_OVER_COLD
        and frame["snapshot_ms"] <= TARGET_SNAPSHOT_MS,
        "machine": machine(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    header = ("cold ms", 10), ("snapshot ms", 13), ("MiB", 9), ("restore ms", 12), ("x cold", 8)
    print(f"{'state':<10}" + "".join(f"{name:>{width}}" for name, width in header))
    for state, f in figures.items():
        print(
            f"{state:<10}{f['cold_ms']:>10.1f}{f['snapshot_ms']:>13.1f}{f['archive_mib']:>9.1f}"
            f"{f['restore_ms']:>12.1f}{f['restore_over_cold']:>8.1f}"
        )
    print(f"targets (dataframe): {'met' if report['targets_met'] else 'NOT met'}")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()

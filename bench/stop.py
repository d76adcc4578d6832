"""How long a graceful stop (SIGTERM) takes with many live sessions. Not a test: it measures this
machine, prints a table and writes JSON.

    .venv/bin/python bench/stop.py --json PATH [--sessions 500] [--rounds 2]

A stop saves every live session that changed (sessions/persistence.py) and ends every process;
orchestrators give it a fixed time before SIGKILL (`docker stop`: 10 s). Each round starts a
real server (`codeinterp serve`, in a subprocess, on a fresh data directory), brings it to one of
three states, sends SIGTERM and times the exit:

- **idle**: no session (the baseline: the server's own stop);
- **untouched**: N containers made and never used, as a burst of creates leaves them (saved as a
  row alone: a new session's state);
- **used**: N containers that each ran `x = list(range(1000))` (saved with an archive).

`stop_seconds` is the median time from SIGTERM to the exit, over the rounds; `added_ms_per_session`
= (that - idle's) / N: the stop's cost per live session, against the baseline of the same run.
`saved` counts what the server's log says it saved. A stop that runs past STOP_TIMEOUT is killed
and reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import ServerProcess

from stats import machine

CONCURRENCY = 16
STOP_TIMEOUT = 60.0
SERVER_ENV = {
    "CODEINTERP_POOL_SIZE": "4",
    "CODEINTERP_CHECKPOINT_SECONDS": "0",  # nothing saved before the stop
    "CODEINTERP_TRACE_STORE": "false",
    "CODEINTERP_MAX_SESSIONS": "2000",
}
USE_CODE = "x = list(range(1000))"
SAVED = re.compile(r"saved (\d+) of (\d+) live session")


async def make_containers(base_url: str, count: int, use: bool) -> None:
    """`count` containers, CONCURRENCY at a time; each runs USE_CODE if `use`."""
    turns = asyncio.Semaphore(CONCURRENCY)
    limits = httpx2.Limits(max_connections=CONCURRENCY)
    async with httpx2.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:

        async def one(i: int) -> None:
            async with turns:
                made = await http.post("/containers", json={"name": f"stop-{i}"})
                made.raise_for_status()
                if use:
                    ran = await http.post(
                        f"/containers/{made.json()['id']}/execute", json={"code": USE_CODE}
                    )
                    ran.raise_for_status()
                    assert ran.json()["status"] == "ok", ran.json()

        await asyncio.gather(*(one(i) for i in range(count)))


def one_stop(kind: str, count: int) -> dict[str, Any]:
    """Start a server, bring it to `kind`, SIGTERM it: the seconds to its exit and what it saved."""
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="stop-") as data_dir:
        server = ServerProcess(SERVER_ENV, data_dir=data_dir, stop_timeout=STOP_TIMEOUT).start()
        try:
            if kind != "idle":
                asyncio.run(make_containers(server.base_url, count, use=kind == "used"))
            time.sleep(1.0)  # the pool refilled, the creates' work done
        except BaseException:
            server.kill()
            raise
        started = time.monotonic()
        status = server.stop()
        seconds = time.monotonic() - started
        match = SAVED.search(server.logs())
    return {
        "seconds": seconds,
        "killed": status not in (0, -15),
        "saved": int(match.group(1)) if match else 0,
        "live": int(match.group(2)) if match else 0,
    }


def measure(count: int, rounds: int) -> dict[str, Any]:
    stops: dict[str, list[dict[str, Any]]] = {"idle": [], "untouched": [], "used": []}
    for _ in range(rounds):  # the kinds take turns, so a noisy minute spreads over all three
        for kind, runs in stops.items():
            runs.append(one_stop(kind, count))
            print(f"  {kind:<10} {runs[-1]}", flush=True)
    idle = statistics.median(r["seconds"] for r in stops["idle"])
    figures: dict[str, Any] = {"sessions": count, "rounds": rounds}
    for kind, runs in stops.items():
        median = statistics.median(r["seconds"] for r in runs)
        figures[kind] = {
            "stop_seconds": round(median, 3),
            "each_seconds": [round(r["seconds"], 3) for r in runs],
            "added_ms_per_session": round(1000 * (median - idle) / count, 2)
            if kind != "idle"
            else 0.0,
            "saved": [r["saved"] for r in runs],
            "killed": sum(r["killed"] for r in runs),
        }
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    figures = measure(args.sessions, args.rounds)
    report = {
        **figures,
        "machine": machine(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':<12}{'stop (s)':>10}{'ms/session':>12}{'saved':>14}{'killed':>8}")
    for kind in ("idle", "untouched", "used"):
        row = figures[kind]
        print(
            f"{kind:<12}{row['stop_seconds']:>10.2f}{row['added_ms_per_session']:>12.2f}"
            f"{row['saved']!s:>14}{row['killed']:>8}"
        )


if __name__ == "__main__":
    main()

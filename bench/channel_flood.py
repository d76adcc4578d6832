"""Benchmark of hostile frames on a session's channel: what one session's flood costs the server
and the other sessions. Not a test: it measures this machine, prints a table and writes JSON.

    .venv/bin/python bench/channel_flood.py --json PATH [--quick]

For each kind of flood, sandboxed code in one session writes frames straight to the socket its
kernel holds (`Kernel.current.sock`) for `seconds`, as fast as the server reads them. Meanwhile a
second session runs `1+1` every 20 ms. Figures, per flood:

other_1plus1_p50 / p99 / max (ms)
    The other session's round trip, measured from just before a 20 ms pause to its answer,
    minus the pause: a stalled event loop shows whether it stalls the pause or the round trip.
    `baseline` is the same with no flood (its CPU share is the other session's alone).
server_cpu_share
    CPU time of the whole server process (user + system, `getrusage(RUSAGE_SELF)`) over the
    flood's wall time, the other session's round trips included. 1.0 is one CPU.
charged_cpu_s
    Host CPU the flooding session's channel was charged (`KernelProcess.cpu_seconds`: measured
    per frame handled, plus the read-cost estimate), to compare with the server's total.
written_mb, read_mb_per_s
    What the flood managed to write to its socket (MB = 10**6 bytes), and that over the flood's
    wall time.
status
    How the flooding execution ended (`killed` when its frames were not ones the kernel writes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codeinterp.sandbox import Sandbox, SandboxConfig, Session

FLOOD = """
import json, struct, time
from codeinterp.sandbox.kernel import Kernel
sock = Kernel.current.sock
def frame(message):
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body
current_id = Kernel.current._execution_id
data = {data}
written, end = 0, time.monotonic() + {seconds}
while time.monotonic() < end:
    sock.sendall(data)
    written += len(data)
written
"""

# name -> expression (in the flooding session) of the bytes it writes again and again
FLOODS: dict[str, str] = {
    "json-stream-15MB": "frame({'ev': 'stream', 'name': 'stdout', 'text': 'x' * 15_000_000})",
    "json-stream-64B": "frame({'ev': 'stream', 'name': 'stdout', 'text': 'x' * 64}) * 500",
    "json-nested-4MB": "frame({'ev': 'stream', 'name': 'stdout', 'text': 'x',"
    " 'junk': [[]] * 1_300_000})",
    "json-result-10MB": "frame({'ev': 'result', 'id': current_id, 'type': 'display_data',"
    " 'data': {'text/plain': 'x' * 10_000_000}, 'metadata': {}})",
    "output-64B": "(struct.pack('>I', 65) + b'\\x01' + b'x' * 64) * 500",
    "output-64KiB": "struct.pack('>I', 65536) + b'\\x01' + b'x' * 65535",
    "output-64KiB-invalid-utf8": "struct.pack('>I', 65536) + b'\\x01' + b'\\xff' * 65535",
    "nested-json-60KiB": "frame({'ev': 'result', 'id': current_id, 'type': 'display_data',"
    " 'data': {'application/json': [[]] * 20_000}, 'metadata': {}})",
    "parts-64KiB": "(struct.pack('>I', 65536) + b'\\x03\\x09text/html' + b'x' * 65525)",
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered) * 1000, 3),
        "p99": round(p99 * 1000, 3),
        "max": round(ordered[-1] * 1000, 3),
    }


async def _beside(other: Session, until: asyncio.Future[Any] | float) -> list[float]:
    """`1+1` in `other` every 20 ms until `until` (a task, or a monotonic time) is done."""
    delays = []
    while not (until.done() if isinstance(until, asyncio.Future) else time.monotonic() > until):
        t0 = time.monotonic()
        await asyncio.sleep(0.02)
        ex = await other.run("1 + 1", timeout=30)
        delays.append(time.monotonic() - t0 - 0.02)
        assert ex.text == "2", ex
    return delays


async def run(seconds: float) -> dict[str, Any]:
    sandbox = await Sandbox.start(SandboxConfig(pool_size=2))
    results: dict[str, Any] = {}
    try:
        async with await sandbox.create_session() as other:
            for _ in range(20):
                await other.run("1 + 1")
            cpu, started = _cpu(), time.monotonic()
            baseline = await _beside(other, started + seconds)
            share = (_cpu() - cpu) / (time.monotonic() - started)
            results["baseline"] = {"other_1plus1_ms": _ms(baseline), "server_cpu_share": share}
            for name, data in FLOODS.items():
                async with await sandbox.create_session() as flooding:
                    process = flooding.process
                    assert process is not None
                    cpu, started = _cpu(), time.monotonic()
                    code = FLOOD.format(data=data, seconds=seconds)
                    task = asyncio.ensure_future(flooding.run(code, timeout=120))
                    delays = await _beside(other, task)
                    ex = await task
                    wall, cpu = time.monotonic() - started, _cpu() - cpu
                    written = int(ex.text or 0) if ex.status == "ok" else 0
                    results[name] = {
                        "status": ex.status,
                        "other_1plus1_ms": _ms(delays),
                        "server_cpu_share": round(cpu / wall, 3),
                        "charged_cpu_s": round(process.cpu_seconds, 3),
                        "server_cpu_s": round(cpu, 3),
                        "wall_s": round(wall, 3),
                        "written_mb": round(written / 1e6, 1),
                        "read_mb_per_s": round(written / 1e6 / wall, 1),
                    }
                    print(name, json.dumps(results[name]), file=sys.stderr)
    finally:
        await sandbox.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="2 s floods instead of 6 s")
    args = parser.parse_args(argv)
    seconds = 2.0 if args.quick else 6.0
    results = asyncio.run(run(seconds))
    header = f"{'flood':28s} {'status':8s} {'1+1 p50/p99/max ms':>24s} {'cpu share':>9s}"
    print(header + f" {'charged s':>9s} {'MB/s':>8s}")
    for name, row in results.items():
        ms = row["other_1plus1_ms"]
        times = f"{ms['p50']:.2f}/{ms['p99']:.2f}/{ms['max']:.2f}"
        if name == "baseline":
            print(f"{name:28s} {'':8s} {times:>24s} {row['server_cpu_share']:9.3f}")
            continue
        print(
            f"{name:28s} {row['status']:8s} {times:>24s} {row['server_cpu_share']:9.3f}"
            f" {row['charged_cpu_s']:9.3f} {row['read_mb_per_s']:8.1f}"
        )
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "flood_seconds": seconds,
        "results": results,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()

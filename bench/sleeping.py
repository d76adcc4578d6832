"""Sleeping containers cost no memory: a server with N containers asleep on disk uses what an
idle server uses. Not a test: it measures this machine, prints a table and writes JSON.

    .venv/bin/python bench/sleeping.py --json PATH [--containers 10000] [--quick]

A real server runs in a subprocess (`codeinterp serve`) with every container's idle time capped
at 0.3 s and no checkpoints, so a container goes to sleep (its session saved to disk and its
process ended, sessions/persistence.py) soon after its last use. The bench:

1. warms the server up with one container (created, `x = 1` run, asleep), then lets it settle
   and reads the **baseline**: an idle server that has served a container;
2. creates N containers over HTTP, 8 at a time, each running `x = 1` and `data = list(range(100))`
   so that it has state to keep, in waves of 500: after each wave it waits until all are asleep
   (/metrics: codeinterp_sessions_slept_total and no live session). Containers pile up over
   hours in real use; made all at once, faster than they go to sleep, they would be measured
   awake;
3. reads the memory when all are asleep, then lets it settle as in 1 and reads it again;
4. wakes a sample of 20 of them (`x + len(data)` must answer 101): asleep, not lost.

Memory figures (MiB = 2**20 bytes):

used_mib
    Memory in use on the machine: MemTotal - MemAvailable (/proc/meminfo), so page cache the
    kernel can reclaim (the archives just written, the database) is not counted.
server_rss_mib
    The resident memory of the server's process tree (the API process, the zygotes and any
    session process left), summed from /proc/PID/status VmRSS.

Both readings wait for memory in use to settle (`settle`: freed memory returns to MemAvailable
gradually on this VM); `used_mib_when_all_asleep` is the reading before that, `settle_seconds`
how long it took. `used_ratio` = used_mib after / baseline, and `server_rss_ratio` the same
for the tree: the target is used_ratio <= 1.10 for 10,000 containers. Also reported: seconds
per container (create, run, and sleep), the bytes on disk of the saved states, and the wake
time of the sample.
`--quick` makes 500 containers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import ServerProcess

from stats import machine, percentile

MiB = 1 << 20
CONCURRENCY = 8
WAVE = 500  # containers made before waiting for them all to sleep
SAMPLE = 20
SETTLE_SECONDS = 5.0
TARGET_RATIO = 1.10
SERVER_ENV = {
    "CODEINTERP_CONTAINER_IDLE_CAP_MINUTES": str(0.3 / 60),
    "CODEINTERP_CHECKPOINT_SECONDS": "0",
    "CODEINTERP_POOL_SIZE": "4",
    "CODEINTERP_TRACE_STORE": "false",
}
STATE_CODE = "x = 1\ndata = list(range(100))"


def memory_used_mib() -> float:
    info: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, value = line.split(":", 1)
            info[name] = int(value.split()[0]) * 1024
    return (info["MemTotal"] - info["MemAvailable"]) / MiB


def tree_rss_mib(root: int) -> float:
    """VmRSS of `root` and every process under it."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        pid = int(name)
        children.setdefault(int(fields["PPid"].strip()), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / MiB


def sessions(http: httpx2.Client) -> tuple[float, float]:
    """(sessions slept so far, sessions live now) from /metrics."""
    slept = live = 0.0
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "codeinterp_sessions_slept_total":
                slept = sample.value
            elif sample.name == "codeinterp_sessions" and sample.labels.get("state") == "live":
                live = sample.value
    return slept, live


def wait_asleep(http: httpx2.Client, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        slept, live = sessions(http)
        if slept >= count and live == 0:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {slept:g} of {count} asleep ({live:g} live) after {timeout} s")
        time.sleep(0.5)


def settle(server: ServerProcess, limit: float) -> tuple[float, float, float]:
    """Memory in use and the server tree's RSS once memory in use stops falling (three readings
    SETTLE_SECONDS apart within 1%), and how long that took (at most `limit` seconds). Memory
    freed by ended processes comes back to MemAvailable gradually on this VM (about 16 MB/s),
    so a reading taken at once counts memory nobody holds any more."""
    assert server.pid is not None
    started = time.monotonic()
    readings = [memory_used_mib()]
    while time.monotonic() - started < limit:
        time.sleep(SETTLE_SECONDS)
        readings.append(memory_used_mib())
        last = readings[-3:]
        if len(last) == 3 and max(last) - min(last) <= 0.01 * min(last):
            break
    return readings[-1], tree_rss_mib(server.pid), time.monotonic() - started


async def make_containers(base_url: str, count: int) -> list[str]:
    ids: list[str] = []
    queue = iter(range(count))
    async with httpx2.AsyncClient(base_url=base_url, timeout=600) as http:

        async def worker() -> None:
            for number in queue:
                made = await http.post("/containers", json={"name": f"sleeper-{number}"})
                made.raise_for_status()
                container = made.json()["id"]
                ran = await http.post(f"/containers/{container}/execute", json={"code": STATE_CODE})
                ran.raise_for_status()
                if ran.json()["status"] != "ok":
                    raise SystemExit(f"container {number}: {ran.json()}")
                ids.append(container)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return ids


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(count: int, data_dir: str) -> dict[str, Any]:
    with (
        ServerProcess(SERVER_ENV, data_dir) as server,
        httpx2.Client(base_url=server.base_url, timeout=600) as http,
        httpx2.Client(base_url=server.url, timeout=60) as root,
    ):
        [warm] = asyncio.run(make_containers(server.base_url, 1))
        wait_asleep(root, 1, 60)
        baseline_used, baseline_rss, _ = settle(server, 300)
        blobs_before = directory_bytes(Path(data_dir) / "blobs")

        started = time.monotonic()
        ids: list[str] = []
        while len(ids) < count:  # in waves, as containers pile up over a day, not all at once
            wave = min(WAVE, count - len(ids))
            try:
                ids += asyncio.run(make_containers(server.base_url, wave))
            except httpx2.HTTPStatusError as exc:
                print(server.logs_tail(4000), file=sys.stderr)
                raise SystemExit(f"the server refused a container: {exc.response.text}") from exc
            wait_asleep(root, len(ids) + 1, 600)
            print(f"  {len(ids)} containers asleep", flush=True)
        all_asleep_s = time.monotonic() - started
        used_at_once = memory_used_mib()
        used, rss, settle_s = settle(server, 1800)
        states_bytes = directory_bytes(Path(data_dir) / "blobs") - blobs_before

        wakes = []
        for container in random.Random(7).sample(ids, min(SAMPLE, len(ids))):
            begun = time.perf_counter()
            ran = http.post(f"/containers/{container}/execute", json={"code": "x + len(data)"})
            wakes.append(1000 * (time.perf_counter() - begun))
            results = ran.json().get("results", [])
            if not results or results[-1]["data"]["text/plain"] != "101":
                raise SystemExit(f"container {container} did not wake as it was: {ran.json()}")
        http.delete(f"/containers/{warm}")
    return {
        "containers": count,
        "baseline": {"used_mib": baseline_used, "server_rss_mib": baseline_rss},
        "asleep": {"used_mib": used, "server_rss_mib": rss},
        "used_mib_when_all_asleep": used_at_once,
        "settle_seconds": settle_s,
        "used_ratio": used / baseline_used,
        "server_rss_ratio": rss / baseline_rss,
        "seconds_until_all_asleep": all_asleep_s,
        "ms_per_container": 1000 * all_asleep_s / count,
        "state_bytes_total": states_bytes,
        "state_bytes_per_container": states_bytes / count,
        "wake_ms_p50": percentile(wakes, 50),
        "wake_ms_max": max(wakes),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--containers", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="500 containers")
    args = parser.parse_args(argv)
    count = 500 if args.quick else args.containers

    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="sleeping-") as data_dir:
        figures = measure(count, data_dir)
    report = {
        **figures,
        "target": f"used_ratio <= {TARGET_RATIO} with 10,000 containers asleep",
        "target_met": count >= 10_000 and figures["used_ratio"] <= TARGET_RATIO,
        "machine": machine(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    base, asleep = figures["baseline"], figures["asleep"]
    print(f"{'':<24}{'idle server':>14}{f'{count} asleep':>16}{'ratio':>8}")
    print(
        f"{'memory in use (MiB)':<24}{base['used_mib']:>14.1f}{asleep['used_mib']:>16.1f}"
        f"{figures['used_ratio']:>8.3f}"
    )
    print(
        f"{'server tree RSS (MiB)':<24}{base['server_rss_mib']:>14.1f}"
        f"{asleep['server_rss_mib']:>16.1f}{figures['server_rss_ratio']:>8.3f}"
    )
    print(
        f"{figures['ms_per_container']:.1f} ms per container (made, ran, asleep); "
        f"{figures['state_bytes_per_container'] / 1024:.1f} KiB saved each; "
        f"wake p50 {figures['wake_ms_p50']:.1f} ms, max {figures['wake_ms_max']:.1f} ms"
    )
    print(f"target {report['target']}: {'met' if report['target_met'] else 'NOT met'}")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()

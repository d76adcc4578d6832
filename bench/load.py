"""Many users at once: Locust against a real server, through the official openai SDK. Not a test.

    .venv/bin/python bench/load.py --json PATH [--quick] [--users 100] [--duration 300]

(Locust comes with the dev extra: scripts/setup-bench.) A scripted Chat Completions upstream
answers instantly: the first turn of a run calls python with `print(6 * 7)`, the second answers
"6 * 7 = 42". The server runs as a subprocess with its defaults (warm pool of 4, trace store
on, no API keys). The users are bench/load_locustfile.py (its docstring defines the three kinds of
task and what counts as an error): `--users` clients (100) started at `--spawn-rate` per second
(20), each choosing container execute (weight 7), an Assistants run (2) or a file upload and
download (1) after a think time of `--wait` seconds on average (1.0, uniform in [0.5, 1.5]).

Phases: a warm-up load (`--warmup` seconds, 30, same users and mix: the server's caches, pools
and lazily imported code are in place before the baseline), a pause (`--settle`, 15 s), the
baseline `before`, the load (`--duration`, 300 s), the snapshot `end_of_load` as Locust exits
(its users finished their task and deleted their container: `--stop-timeout` 30 s), then
`after`, `--after` seconds (60) after Locust exited. Figures:

tasks, errors, throughput_tasks_per_s
    Per kind and in total over the load phase: tasks completed, tasks that failed, and
    completed tasks / `--duration` (the ramp-up included). `errors_list` has every failure with
    the step, the request (method and URL), the HTTP status and the body.
p50_ms, p99_ms
    Per kind: a task's time from its first request to the end of its last (an execute is one
    request; a run is threads.create, runs.create_and_poll with its polls, messages.list and
    threads.delete; a file is create, content, delete), over the load phase, interpolated
    between nearest ranks (numpy's default).
http_requests_per_s, http_error_responses
    From the server's /metrics: the increase of `codeinterp_http_requests_total` between
    `before` and `end_of_load` over `--duration` (the scrapes themselves are not counted);
    responses with a status >= 400 in that increase, by route and status.
server (before, during, end_of_load, after)
    `rss_mb`: VmRSS of the server process (/proc/PID/status; MB = 10**6 bytes); `fds`: its
    open descriptors (/proc/PID/fd); `sessions`: `codeinterp_sessions` from /metrics by state
    (live = busy + idle; warm: the pool), and `sessions_total` = live + warm;
    `sandbox_processes`: processes under the server (the zygote, and each session's init and
    REPL); `tree_pss_mb`: the proportional set size of the server and those processes together
    (smaps_rollup; shared copy-on-write pages split fairly), not taken during the load (reading
    it costs CPU). `during` is the maximum of each figure over the samples taken every
    `--sample` seconds (5) while Locust ran; `samples` has them all.
cpu_cores_busy
    CPU seconds per second of the load phase (1.0 = one core busy): `server` (the server
    process), `sandbox` (the zygote and the sessions: the server's child processes, the
    sessions they reaped, and the sessions still alive), `clients_locust` (the Locust process:
    the clients), `bench_and_upstream` (this process: the scripted upstream, the sampler),
    `kernel_threads` (kworkers, softirq and RCU threads: work the kernel defers, such as tearing
    down a session's namespaces; threads that exited meanwhile are missed), `machine_busy` (all
    cores, from /proc/stat) and `other` (what the machine did besides: other work on a shared
    machine shows up here). When `machine_busy` is near the core count, the machine is
    saturated and the latencies include waiting for a CPU.
no_leaks
    After vs before, each required: `sessions` equal state by state; `sandbox_processes`
    equal; `fds` at most 10 above (the keep-alive connections to the upstream and the
    database's pool come and go between idle moments, while a descriptor leaked per task would
    make thousands); `rss_mb` and `tree_pss_mb` at most 10% above (a Python heap keeps freed
    arenas for reuse, so some growth is no leak; a leak per request grows well past this over
    the 5 minutes). `leak_checks` says which held.

`--quick`: 20 users for 30 s, warm-up 10 s, after 15 s (about a minute and a half in all).
The exit status is 1 when a task failed or a leak check did not hold, 0 otherwise; if Locust
itself fails to run, the bench stops with its exit status and its last output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import ServerProcess
from tests.support.upstream import Request, ScriptedUpstream, Text, ToolCalls, python_call

from stats import percentile

BENCH = Path(__file__).resolve().parent
LOCUSTFILE = BENCH / "load_locustfile.py"
MB = 1_000_000
KINDS = ("execute", "run", "file")
RSS_TOLERANCE = 0.10
PSS_TOLERANCE = 0.10
FDS_TOLERANCE = 10


def script(request: Request) -> Text | ToolCalls:
    answered = any(m.get("role") == "tool" for m in request["messages"])
    return Text("6 * 7 = 42") if answered else python_call("print(6 * 7)")


# ---------------------------------------------------------------------------- the server's state


def metrics(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics as {sample name: {sorted labels: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def children_of(root: int) -> list[int]:
    """Every process under `root` (not `root` itself), from /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pss_bytes(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def snapshot(server: ServerProcess, *, pss: bool) -> dict[str, Any]:
    pid = server.pid
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    found = metrics(server.url)
    sessions = {
        dict(labels)["state"]: int(value)
        for labels, value in found.get("codeinterp_sessions", {}).items()
    }
    requests = found.get("codeinterp_http_requests_total", {})
    below = children_of(pid)
    state: dict[str, Any] = {
        "t": time.time(),
        "rss_mb": rss_kb * 1024 / MB,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "sessions": sessions,
        "sessions_total": sessions.get("live", 0) + sessions.get("warm", 0),
        "sandbox_processes": len(below),
        "http_requests": {
            "|".join(f"{k}={v}" for k, v in labels): value for labels, value in requests.items()
        },
    }
    if pss:
        state["tree_pss_mb"] = sum(pss_bytes(p) for p in [pid, *below]) / MB
    return state


TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, reaped: bool = False) -> float:
    """CPU seconds of `pid` (user + system); with `reaped`, plus its reaped children's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    used = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        used += int(fields[13]) + int(fields[14])  # cutime, cstime
    return used / TICKS


def cpu_counters(server: ServerProcess) -> dict[str, float]:
    """CPU seconds so far: the server, the sandbox (the server's children with the sessions they
    reaped), this process (the upstream, the sampler), the whole machine (busy, all cores)."""
    pid = server.pid
    assert pid is not None
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    sandbox = sum(process_cpu(child, reaped=True) for child, ppid in parents.items() if ppid == pid)
    below = children_of(pid)
    live_sessions = sum(process_cpu(p) for p in below if parents.get(p) != pid)
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    kernel = sum(process_cpu(p) for p, ppid in parents.items() if 2 in (p, ppid))
    return {
        "kernel_threads": kernel,
        "server": process_cpu(pid),
        "sandbox": sandbox + live_sessions,
        "bench_and_upstream": own.ru_utime + own.ru_stime,
        "machine_busy": (sum(fields[:8]) - idle) / TICKS,
    }


class Sampler(threading.Thread):
    """`snapshot` every `interval` seconds until stopped."""

    def __init__(self, server: ServerProcess, interval: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            state = snapshot(self.server, pss=False)
            state.pop("http_requests")
            self.samples.append(state)


# ---------------------------------------------------------------------------- Locust


def locust_command() -> str:
    command = Path(sys.executable).parent / "locust"
    if not command.exists():
        found = shutil.which("locust")
        if found is None:
            sys.exit("bench/load.py: Locust is not installed; run scripts/setup-bench")
        return found
    return str(command)


def run_locust(
    server: ServerProcess, assistant_id: str, args: argparse.Namespace, seconds: int, out: Path
) -> dict[str, Any]:
    """Locust headless for `seconds`; the locustfile's timings and errors."""
    env = {
        **os.environ,
        "CODEINTERP_LOAD_OUT": str(out),
        "CODEINTERP_LOAD_WAIT": str(args.wait),
        "CODEINTERP_LOAD_ASSISTANT": assistant_id,
    }
    command = [
        locust_command(),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        str(args.stop_timeout),
        "--host",
        server.url,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    log = out.with_suffix(".log")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("wb") as output:
        finished = subprocess.run(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"locust exited with status {finished.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["summary"] = log.read_text(errors="replace")[-6000:]
    result["cpu_s"] = done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime
    return result


# ---------------------------------------------------------------------------- the figures


def request_increase(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    grown = {}
    for key, value in after["http_requests"].items():
        delta = value - before["http_requests"].get(key, 0.0)
        if delta:
            grown[key] = delta
    return grown


def leak_checks(before: dict[str, Any], after: dict[str, Any]) -> dict[str, bool]:
    return {
        "sessions": before["sessions"] == after["sessions"],
        "sandbox_processes": before["sandbox_processes"] == after["sandbox_processes"],
        "fds": after["fds"] <= before["fds"] + FDS_TOLERANCE,
        "rss_mb": after["rss_mb"] <= before["rss_mb"] * (1 + RSS_TOLERANCE),
        "tree_pss_mb": after["tree_pss_mb"] <= before["tree_pss_mb"] * (1 + PSS_TOLERANCE),
    }


def public(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in ("http_requests", "t")}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as scratch,
        ScriptedUpstream(script) as upstream,
        ServerProcess(
            {"CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url}, data_dir=Path(scratch) / "data"
        ) as server,
        server.client() as client,
    ):
        assistant = client.beta.assistants.create(
            model="bench", tools=[{"type": "code_interpreter"}]
        )
        work = Path(scratch)
        print(f"warm-up: {args.users} users for {args.warmup} s", flush=True)
        warmup = run_locust(server, assistant.id, args, args.warmup, work / "warmup.json")
        time.sleep(args.settle)
        before = snapshot(server, pss=True)
        print(f"load: {args.users} users for {args.duration} s", flush=True)
        sampler = Sampler(server, args.sample)
        sampler.start()
        cpu_before = cpu_counters(server)
        started = time.perf_counter()
        load = run_locust(server, assistant.id, args, args.duration, work / "load.json")
        locust_seconds = time.perf_counter() - started
        cpu_after = cpu_counters(server)
        sampler.stopped.set()
        sampler.join()
        end_of_load = snapshot(server, pss=True)
        print(f"after: waiting {args.after} s", flush=True)
        time.sleep(args.after)
        after = snapshot(server, pss=True)
        log_tail = server.logs_tail(4000)
    upstream_errors = [str(e) for e in upstream.errors]

    timings: dict[str, list[float]] = load["timings_ms"]
    errors: list[dict[str, Any]] = load["errors"]
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        failed = sum(1 for e in errors if e.get("kind") == kind)
        kinds[kind] = {
            "tasks": len(timings[kind]),
            "errors": failed,
            "throughput_tasks_per_s": len(timings[kind]) / args.duration,
            "p50_ms": percentile(timings[kind], 50),
            "p99_ms": percentile(timings[kind], 99),
        }
    grown = request_increase(before, end_of_load)
    error_responses = {
        key: value for key, value in grown.items() if int(key.rsplit("status=", 1)[1][:3]) >= 400
    }
    during = {
        key: max(s[key] for s in sampler.samples)
        for key in ("rss_mb", "fds", "sessions_total", "sandbox_processes")
    }
    checks = leak_checks(before, after)
    cpu = {key: (cpu_after[key] - cpu_before[key]) / locust_seconds for key in cpu_before}
    cpu["clients_locust"] = load["cpu_s"] / locust_seconds
    cpu["other"] = cpu["machine_busy"] - sum(v for k, v in cpu.items() if k != "machine_busy")
    total_tasks = sum(k["tasks"] for k in kinds.values())
    return {
        "users": args.users,
        "duration_s": args.duration,
        "wait_s": args.wait,
        "locust_wall_s": locust_seconds,
        "kinds": kinds,
        "tasks": total_tasks,
        "errors": len(errors),
        "throughput_tasks_per_s": total_tasks / args.duration,
        "http_requests_per_s": sum(grown.values()) / args.duration,
        "http_error_responses": error_responses,
        "errors_list": errors[:200],
        "warmup_errors": warmup["errors"][:50],
        "upstream_errors": upstream_errors,
        "server": {
            "before": public(before),
            "during": during,
            "end_of_load": public(end_of_load),
            "after": public(after),
        },
        "cpu_cores_busy": cpu,
        "leak_checks": checks,
        "no_leaks": all(checks.values()),
        "samples": sampler.samples,
        "locust_summary": load["summary"],
        "server_log_tail": log_tail if errors else "",
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }


def print_report(report: dict[str, Any]) -> bool:
    print(f"\n{report['users']} users, {report['duration_s']} s, think time {report['wait_s']} s")
    heads = ("tasks", 7), ("errors", 6), ("tasks/s", 8), ("p50 ms", 8), ("p99 ms", 8)
    print(f"{'kind':10s} " + " ".join(f"{name:>{width}s}" for name, width in heads))
    for kind, k in report["kinds"].items():
        print(
            f"{kind:10s} {k['tasks']:7d} {k['errors']:6d} {k['throughput_tasks_per_s']:8.1f} "
            f"{k['p50_ms']:8.1f} {k['p99_ms']:8.1f}"
        )
    print(
        f"{'all':10s} {report['tasks']:7d} {report['errors']:6d} "
        f"{report['throughput_tasks_per_s']:8.1f}   ({report['http_requests_per_s']:.0f} HTTP "
        f"requests/s at the server; error responses: {report['http_error_responses'] or 'none'})"
    )
    cpu = report["cpu_cores_busy"]
    print(
        f"CPU during the load, in cores of {report['machine']['cpus']}: "
        + ", ".join(f"{key} {value:.2f}" for key, value in cpu.items())
    )
    server = report["server"]
    print(f"\n{'server':18s} {'before':>10s} {'during':>10s} {'end':>10s} {'after':>10s}")
    for key in ("rss_mb", "fds", "sessions_total", "sandbox_processes", "tree_pss_mb"):
        row = [server[phase].get(key) for phase in ("before", "during", "end_of_load", "after")]
        print(f"{key:18s} " + " ".join("         -" if v is None else f"{v:10.1f}" for v in row))
    before, after = server["before"]["sessions"], server["after"]["sessions"]
    print(f"sessions by state: before {before}, after {after}")
    for check, held in report["leak_checks"].items():
        print(f"leak check {check:18s} {'ok' if held else 'LEAK'}")
    for error in report["errors_list"][:20]:
        print(f"error: {json.dumps(error)}")
    if report["upstream_errors"]:
        print(f"upstream errors: {report['upstream_errors'][:5]}")
    verdict = report["errors"] == 0 and report["no_leaks"]
    print(f"\nzero errors and no leaks: {'yes' if verdict else 'NO'}")
    return verdict


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--quick", action="store_true", help="20 users, 30 s (about 90 s)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spawn-rate", type=float, default=20)
    parser.add_argument("--duration", type=int, default=300, help="seconds of load")
    parser.add_argument("--wait", type=float, default=1.0, help="mean think time, seconds")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--settle", type=float, default=15)
    parser.add_argument("--after", type=float, default=60)
    parser.add_argument("--sample", type=float, default=5)
    parser.add_argument("--stop-timeout", type=int, default=30)
    args = parser.parse_args()
    if args.quick:
        args.users, args.duration, args.warmup, args.after = 20, 30, 10, 15
    report = measure(args)
    Path(args.json).write_text(json.dumps(report, indent=2))
    sys.exit(0 if print_report(report) else 1)


if __name__ == "__main__":
    main()

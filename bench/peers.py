"""Peers side by side: codeinterp against what people use instead, same machine, same run, same
snippets. Not a test: it measures this machine, prints a table and writes JSON.

    .venv/bin/python bench/peers.py --json PATH [--quick]

(scripts/setup-bench installs the peers.) Systems, each given the same snippets:

codeinterp
    The engine in this process (`Sandbox`, default warm pool of 4): a task is
    `create_session()`, `run(code)`, `close()`.
codeinterp_http
    The server as a subprocess (defaults), from a keep-alive HTTP client (httpx2): a task is
    `POST /v1/containers`, `POST /v1/containers/{id}/execute`, `DELETE /v1/containers/{id}`.
jupyter_gateway
    Jupyter Kernel Gateway (jupyter-websocket mode, what many self-hosted chat UIs talk to) with
    this venv's ipykernel: a task is `POST /api/kernels`, one `execute_request` over the
    kernel's websocket (`/api/kernels/{id}/channels`) until both its `execute_reply` and the
    kernel's return to idle have arrived, `DELETE /api/kernels/{id}`.
jupyter_zmq
    The same kernel without the gateway, from `jupyter_client` in this process over ZMQ (its
    best case; a chat UI does not talk to kernels this way): a task is `KernelManager`
    `start_kernel`, `wait_for_ready`, `execute_interactive`, `shutdown_kernel(now=True)`. No
    tasks/s figures (one process drives one kernel at a time).
bwrap
    A fresh `python -c CODE` (this venv's interpreter) under bubblewrap per task:
    `--unshare-all --die-with-parent --new-session --cap-drop ALL`, read-only binds of /usr and
    the Python installation and venv, a fresh /proc, a minimal /dev and a tmpfs /tmp. Until exit.
runsc
    The same `python -c CODE` under gVisor per task: `runsc --platform=ptrace --network=none
    --ignore-cgroups do` (the host root read-only under a tmpfs overlay; platform=kvm hangs here).

A peer that is not installed is skipped, with the reason in the output and in `skipped`.
Figures (wall clock, `time.perf_counter()`, ms; p50 interpolated between nearest ranks):

live_1plus1_p50
    `1+1` on a live session (codeinterp: `session.run`; codeinterp_http: `execute` on a live
    container; jupyter_gateway: an `execute_request` on a running kernel's open websocket), after
    warm-up runs, until the result `2` is in hand. Not applicable to bwrap and runsc (no live
    session: a process per task).
fresh_trivial_p50
    One task as defined above running TRIVIAL (`print(1+1)`), from its first step until its
    output is in hand and the sandbox is gone (the teardown is part of the task: a loop that
    gives each task a new sandbox pays it). One task is run and discarded first.
fresh_pandas_p50
    The same with PANDAS (imports pandas, builds a small DataFrame, prints a sum).
fresh_trivial_create_p50, fresh_trivial_run_p50, fresh_trivial_close_p50 (codeinterp)
    The three steps of codeinterp's fresh_trivial task. Back to back, each task takes a session
    from the warm pool (4) faster than the pool refills, so `create` mostly waits for a fork.
tasks_per_s_c1, tasks_per_s_c4
    TRIVIAL tasks, each in a fresh sandbox, with 1 and 4 at a time (threads; asyncio tasks for
    the engine): tasks completed / wall time from the first start to the last end.

Every output is checked (a wrong answer stops the bench). Ratios, codeinterp's advantage:
`vs_codeinterp` = peer time / codeinterp time, and codeinterp tasks/s / peer tasks/s, so 10
means codeinterp is ten times faster; `vs_codeinterp_http` the same against the server (for
the peers reached over HTTP, jupyter_gateway's live figure is best compared with this one).

`--quick` cuts the samples so the whole run takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import ServerProcess, free_port

from stats import percentile

PYTHON = sys.executable
TRIVIAL = "print(1+1)"
TRIVIAL_OUT = "2"
PANDAS = "import pandas as pd\nprint(pd.DataFrame({'a': [1, 2, 3]}).a.sum())"
PANDAS_OUT = "6"
FIGURES = (
    "live_1plus1_p50",
    "fresh_trivial_p50",
    "fresh_pandas_p50",
    "tasks_per_s_c1",
    "tasks_per_s_c4",
)
RATES = ("tasks_per_s_c1", "tasks_per_s_c4")


@dataclass(frozen=True)
class Counts:
    live: int
    fresh: int  # codeinterp and bwrap
    fresh_slow: int  # jupyter_gateway and runsc
    tasks: int
    tasks_slow: int


FULL = Counts(live=300, fresh=60, fresh_slow=10, tasks=200, tasks_slow=16)
QUICK = Counts(live=50, fresh=10, fresh_slow=3, tasks=40, tasks_slow=6)


class WrongAnswer(RuntimeError):
    pass


def expect(got: str, wanted: str, what: str) -> None:
    if got.strip() != wanted:
        raise WrongAnswer(f"{what}: got {got!r}, wanted {wanted!r}")


def timed_samples(task: Callable[[], None], n: int, discard: int = 1) -> list[float]:
    samples = []
    for i in range(n + discard):
        start = time.perf_counter()
        task()
        if i >= discard:
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def rate(task: Callable[[], None], n: int, concurrency: int) -> float:
    """Tasks per second: `n` calls of `task`, `concurrency` at a time on threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(task) for _ in range(n)]:
            future.result()
    return n / (time.perf_counter() - start)


def figures(
    live: list[float] | None,
    trivial: list[float],
    pandas: list[float],
    c1: float | None,
    c4: float | None,
) -> dict[str, Any]:
    return {
        "live_1plus1_p50": None if live is None else percentile(live, 50),
        "live_1plus1_p99": None if live is None else percentile(live, 99),
        "fresh_trivial_p50": percentile(trivial, 50),
        "fresh_trivial_p99": percentile(trivial, 99),
        "fresh_pandas_p50": percentile(pandas, 50),
        "fresh_pandas_p99": percentile(pandas, 99),
        "tasks_per_s_c1": c1,
        "tasks_per_s_c4": c4,
        "samples": {
            "live": len(live or []),
            "fresh_trivial": len(trivial),
            "fresh_pandas": len(pandas),
        },
    }


# ---------------------------------------------------------------------------- codeinterp


async def measure_engine(counts: Counts) -> dict[str, Any]:
    from codeinterp.sandbox import Sandbox, SandboxConfig

    async with await Sandbox.start(SandboxConfig()) as sandbox:
        phases: dict[str, list[float]] = {"create": [], "run": [], "close": []}

        async def task(code: str, wanted: str) -> None:
            start = time.perf_counter()
            session = await sandbox.create_session()
            created = time.perf_counter()
            try:
                execution = await session.run(code)
                expect(execution.stdout, wanted, "codeinterp")
            finally:
                ran = time.perf_counter()
                await session.close()
            if code == TRIVIAL:
                closed = time.perf_counter()
                for phase, (a, b) in {
                    "create": (start, created),
                    "run": (created, ran),
                    "close": (ran, closed),
                }.items():
                    phases[phase].append((b - a) * 1000)

        async def samples(action: Callable[[], Awaitable[None]], n: int) -> list[float]:
            found = []
            for i in range(n + 1):
                start = time.perf_counter()
                await action()
                if i:
                    found.append((time.perf_counter() - start) * 1000)
            return found

        async def tasks_rate(n: int, concurrency: int) -> float:
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    await task(TRIVIAL, TRIVIAL_OUT)

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            return n / (time.perf_counter() - start)

        session = await sandbox.create_session()

        async def live() -> None:
            execution = await session.run("1+1")
            expect(execution.results[0].data["text/plain"], "2", "codeinterp live")

        for _ in range(20):
            await live()
        live_samples = await samples(live, counts.live)
        await session.close()
        trivial = await samples(lambda: task(TRIVIAL, TRIVIAL_OUT), counts.fresh)
        breakdown = {f"fresh_trivial_{k}_p50": percentile(v, 50) for k, v in phases.items()}
        pandas = await samples(lambda: task(PANDAS, PANDAS_OUT), counts.fresh)
        c1 = await tasks_rate(counts.tasks, 1)
        c4 = await tasks_rate(counts.tasks, 4)
    return {**figures(live_samples, trivial, pandas, c1, c4), **breakdown}


def measure_server(counts: Counts) -> dict[str, Any]:
    import httpx2

    with (
        tempfile.TemporaryDirectory() as data,
        ServerProcess({}, data_dir=Path(data)) as server,
        httpx2.Client(base_url=server.base_url, timeout=60) as http,
    ):

        def execute(container: str, code: str) -> dict[str, Any]:
            response = http.post(f"/containers/{container}/execute", json={"code": code})
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            return answer

        def task(code: str, wanted: str) -> None:
            response = http.post("/containers", json={"name": "peers"})
            response.raise_for_status()
            container = response.json()["id"]
            try:
                expect(execute(container, code)["stdout"], wanted, "codeinterp_http")
            finally:
                http.delete(f"/containers/{container}").raise_for_status()

        response = http.post("/containers", json={"name": "live"})
        response.raise_for_status()
        container = response.json()["id"]

        def live() -> None:
            answer = execute(container, "1+1")
            expect(answer["results"][0]["data"]["text/plain"], "2", "codeinterp_http live")

        for _ in range(20):
            live()
        live_samples = timed_samples(live, counts.live)
        http.delete(f"/containers/{container}").raise_for_status()
        trivial = timed_samples(lambda: task(TRIVIAL, TRIVIAL_OUT), counts.fresh)
        pandas = timed_samples(lambda: task(PANDAS, PANDAS_OUT), counts.fresh)
        c1 = rate(lambda: task(TRIVIAL, TRIVIAL_OUT), counts.tasks, 1)
        c4 = rate(lambda: task(TRIVIAL, TRIVIAL_OUT), counts.tasks, 4)
    return figures(live_samples, trivial, pandas, c1, c4)


# ---------------------------------------------------------------------------- Kernel Gateway


class Kernel:
    """One kernel of the gateway, driven over its websocket with Jupyter's JSON messages."""

    def __init__(self, base: str, http: Any) -> None:
        import websocket

        self.http = http
        response = http.post(f"{base}/api/kernels", json={"name": "python3"})
        response.raise_for_status()
        self.id = response.json()["id"]
        self.url = f"{base}/api/kernels/{self.id}"
        self.session = uuid.uuid4().hex
        try:
            self.ws = websocket.create_connection(
                self.url.replace("http://", "ws://") + "/channels", timeout=60
            )
        except BaseException:
            http.delete(self.url)
            raise

    def execute(self, code: str) -> tuple[str, str | None]:
        """(stdout, text/plain of the execute_result) once the reply and idle have arrived."""
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": "bench",
                        "session": self.session,
                        "msg_type": "execute_request",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        stdout, value, replied, idle = "", None, False, False
        while not (replied and idle):
            message = json.loads(self.ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            content = message["content"]
            if kind == "stream" and content["name"] == "stdout":
                stdout += content["text"]
            elif kind == "execute_result":
                value = content["data"].get("text/plain")
            elif kind == "error":
                raise WrongAnswer(f"jupyter_gateway: {content['ename']}: {content['evalue']}")
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        return stdout, value

    def close(self) -> None:
        self.ws.close()
        self.http.delete(self.url).raise_for_status()


@contextlib.contextmanager
def kernel_gateway() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        log = Path(home) / "gateway.log"
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": home}
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "kernel_gateway",
                    "--KernelGatewayApp.ip=127.0.0.1",
                    f"--KernelGatewayApp.port={port}",
                    "--KernelGatewayApp.port_retries=0",
                ],
                env=env,
                cwd=home,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the kernel gateway did not start:\n{log.read_text()}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure_jupyter(counts: Counts) -> dict[str, Any]:
    import httpx2

    with kernel_gateway() as base, httpx2.Client(timeout=120) as http:

        def task(code: str, wanted: str) -> None:
            kernel = Kernel(base, http)
            try:
                stdout, _ = kernel.execute(code)
                expect(stdout, wanted, "jupyter_gateway")
            finally:
                kernel.close()

        kernel = Kernel(base, http)

        def live() -> None:
            _, value = kernel.execute("1+1")
            expect(value or "", "2", "jupyter_gateway live")

        for _ in range(20):
            live()
        live_samples = timed_samples(live, counts.live)
        kernel.close()
        trivial = timed_samples(lambda: task(TRIVIAL, TRIVIAL_OUT), counts.fresh_slow)
        pandas = timed_samples(lambda: task(PANDAS, PANDAS_OUT), counts.fresh_slow)
        c1 = rate(lambda: task(TRIVIAL, TRIVIAL_OUT), counts.tasks_slow, 1)
        c4 = rate(lambda: task(TRIVIAL, TRIVIAL_OUT), counts.tasks_slow, 4)
    return figures(live_samples, trivial, pandas, c1, c4)


def measure_jupyter_zmq(counts: Counts) -> dict[str, Any]:
    """The same kernel without the gateway: jupyter_client over ZMQ, in this process."""
    from jupyter_client.manager import KernelManager

    def start() -> tuple[Any, Any]:
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        return manager, client

    def run(client: Any, code: str) -> tuple[str, str | None]:
        out: dict[str, Any] = {"stdout": "", "value": None}

        def hook(message: dict[str, Any]) -> None:
            content = message["content"]
            if message["msg_type"] == "stream" and content["name"] == "stdout":
                out["stdout"] += content["text"]
            elif message["msg_type"] == "execute_result":
                out["value"] = content["data"].get("text/plain")

        reply = client.execute_interactive(code, timeout=60, output_hook=hook)
        if reply["content"]["status"] != "ok":
            raise WrongAnswer(f"jupyter_zmq: {reply['content']}")
        return out["stdout"], out["value"]

    def stop(manager: Any, client: Any) -> None:
        client.stop_channels()
        manager.shutdown_kernel(now=True)

    def task(code: str, wanted: str) -> None:
        manager, client = start()
        try:
            expect(run(client, code)[0], wanted, "jupyter_zmq")
        finally:
            stop(manager, client)

    manager, client = start()

    def live() -> None:
        expect(run(client, "1+1")[1] or "", "2", "jupyter_zmq live")

    for _ in range(20):
        live()
    live_samples = timed_samples(live, counts.live)
    stop(manager, client)
    trivial = timed_samples(lambda: task(TRIVIAL, TRIVIAL_OUT), counts.fresh_slow)
    pandas = timed_samples(lambda: task(PANDAS, PANDAS_OUT), counts.fresh_slow)
    return figures(live_samples, trivial, pandas, None, None)


# ---------------------------------------------------------------------------- a process per task


def python_roots() -> list[str]:
    """The directories a `python` of this venv needs: the venv and the installation under it."""
    roots = {sys.prefix, sys.base_prefix, sysconfig.get_paths()["stdlib"]}
    roots.add(str(Path(os.path.realpath(PYTHON)).parent.parent))
    return sorted(r for r in roots if not any(r != o and r.startswith(o + "/") for o in roots))


def bwrap_command(code: str) -> list[str]:
    command = [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--ro-bind",
        "/etc/ld.so.cache",
        "/etc/ld.so.cache",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--chdir",
        "/tmp",
    ]
    for root in python_roots():
        command += ["--ro-bind", root, root]
    return [*command, PYTHON, "-c", code]


def runsc_command(code: str) -> list[str]:
    return [
        "runsc",
        "--platform=ptrace",
        "--network=none",
        "--ignore-cgroups",
        "do",
        "--quiet",
        "--cwd",
        "/tmp",
        PYTHON,
        "-c",
        code,
    ]


def measure_process(name: str, command: Callable[[str], list[str]], n: int, tasks: int) -> Any:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1"}

    def task(code: str, wanted: str) -> None:
        done = subprocess.run(command(code), capture_output=True, text=True, env=env, timeout=120)
        if done.returncode != 0:
            raise WrongAnswer(f"{name} exited {done.returncode}: {done.stderr[-2000:]}")
        expect(done.stdout, wanted, name)

    trivial = timed_samples(lambda: task(TRIVIAL, TRIVIAL_OUT), n)
    pandas = timed_samples(lambda: task(PANDAS, PANDAS_OUT), n)
    c1 = rate(lambda: task(TRIVIAL, TRIVIAL_OUT), tasks, 1)
    c4 = rate(lambda: task(TRIVIAL, TRIVIAL_OUT), tasks, 4)
    return figures(None, trivial, pandas, c1, c4)


# ---------------------------------------------------------------------------- the run


def missing(peer: str) -> str | None:
    """Why `peer` cannot be measured here, or None."""
    if peer == "jupyter_zmq":
        try:
            import ipykernel  # noqa: F401
            import jupyter_client  # noqa: F401
        except ImportError as error:
            return f"not installed ({error}); run scripts/setup --dev"
        return None
    if peer == "jupyter_gateway":
        try:
            import kernel_gateway  # noqa: F401
            import websocket  # noqa: F401
        except ImportError as error:
            return f"not installed ({error}); run scripts/setup-bench"
        return None
    binary = {"bwrap": "bwrap", "runsc": "runsc"}[peer]
    if shutil.which(binary) is None:
        return f"'{binary}' not on PATH; run scripts/setup-bench (Debian: apt-get install " + (
            "bubblewrap)" if peer == "bwrap" else "runsc)"
        )
    command = bwrap_command("print(1)") if peer == "bwrap" else runsc_command("print(1)")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return f"'{' '.join(command[:5])} ...' did not finish within 60 s here"
    if done.returncode != 0 or done.stdout.strip() != "1":
        return f"does not run here (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return None


def ratios(base: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for key in FIGURES:
        ours, theirs = base.get(key), peer.get(key)
        if ours is None or theirs is None:
            found[key] = None
        else:
            found[key] = ours / theirs if key in RATES else theirs / ours
    return found


def measure(counts: Counts, only: list[str]) -> dict[str, Any]:
    systems: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    load_before = os.getloadavg()
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("codeinterp", lambda: asyncio.run(measure_engine(counts))),
        ("codeinterp_http", lambda: measure_server(counts)),
        ("jupyter_gateway", lambda: measure_jupyter(counts)),
        ("jupyter_zmq", lambda: measure_jupyter_zmq(counts)),
        ("bwrap", lambda: measure_process("bwrap", bwrap_command, counts.fresh, counts.tasks)),
        (
            "runsc",
            lambda: measure_process("runsc", runsc_command, counts.fresh_slow, counts.tasks_slow),
        ),
    ]
    for name, run in plan:
        if only and name not in only and not name.startswith("codeinterp"):
            continue
        reason = None if name.startswith("codeinterp") else missing(name)
        if reason is not None:
            skipped[name] = reason
            print(f"{name}: SKIPPED: {reason}", flush=True)
            continue
        print(f"{name}: measuring", flush=True)
        systems[name] = run()
    for name, figures_ in systems.items():
        if not name.startswith("codeinterp"):
            figures_["vs_codeinterp"] = ratios(systems["codeinterp"], figures_)
            figures_["vs_codeinterp_http"] = ratios(systems["codeinterp_http"], figures_)
    return {
        "systems": systems,
        "skipped": skipped,
        "snippets": {"trivial": TRIVIAL, "pandas": PANDAS, "live": "1+1"},
        "counts": counts.__dict__,
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "bwrap": _version(["bwrap", "--version"]),
            "runsc": _version(["runsc", "--version"]),
            # Other work on a shared machine skews the systems measured while it ran.
            "loadavg_1min_before_after": [load_before[0], os.getloadavg()[0]],
        },
    }


def _version(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    done = subprocess.run(command, capture_output=True, text=True)
    return (done.stdout or done.stderr).strip().splitlines()[0]


def print_table(report: dict[str, Any]) -> None:
    def cell(value: float | None, unit: str) -> str:
        return f"{'-':>10s}" if value is None else f"{value:9.1f}{unit}"

    heads = ("live 1+1", "trivial", "pandas", "c1 t/s", "c4 t/s")
    print(f"\n{'system':16s} " + " ".join(f"{head:>10s}" for head in heads))
    for name, f in report["systems"].items():
        print(
            f"{name:16s} {cell(f['live_1plus1_p50'], 'm')} {cell(f['fresh_trivial_p50'], 'm')} "
            f"{cell(f['fresh_pandas_p50'], 'm')} {cell(f['tasks_per_s_c1'], ' ')} "
            f"{cell(f['tasks_per_s_c4'], ' ')}"
        )  # fmt: skip
    print("(m: ms, p50; t/s: fresh-sandbox tasks per second)")
    for base in ("vs_codeinterp", "vs_codeinterp_http"):
        print(f"\nratios {base} (how many times codeinterp is faster):")
        for name, f in report["systems"].items():
            if base in f:
                print(f"{name:16s} " + " ".join(cell(f[base][k], "x") for k in FIGURES))
    for name, reason in report["skipped"].items():
        print(f"skipped {name}: {reason}")
    before, after = report["machine"]["loadavg_1min_before_after"]
    print(f"load average (1 min) before {before:.2f}, after {after:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--quick", action="store_true", help="fewer samples (about a minute)")
    parser.add_argument(
        "--only", nargs="*", default=[], help="peers to measure (codeinterp always runs)"
    )
    args = parser.parse_args()
    report = measure(QUICK if args.quick else FULL, args.only)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print_table(report)


if __name__ == "__main__":
    main()

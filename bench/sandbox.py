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
create_cold_p50_at_0, create_cold_p50_at_500, exec_1plus1_p50_at_500
    Flat cost under load, on one Sandbox with `pool_size=0` of its own: `create_cold_p50_at_0` is
    create_cold_p50 measured there with only one other session alive (the probe session below);
    then 500 sessions (`loaded_live_sessions`; 100 with `--quick`) are created 20 at a time
    (`asyncio.gather`), each runs `1+1` once and stays open and idle, and
    `create_cold_p50_at_500` is the same measurement with them alive (each sampled session is
    closed after its sample, not timed, so 500 stay alive throughout). `exec_1plus1_p50_at_500`
    is exec_1plus1_p50 on the probe session (created first, warmed up as above) with the 500
    alive; `exec_1plus1_p50_at_0` is the same session before they were made. Ratios, from the
    same run: `create_cold_at_500_over_at_0` = create_cold_p50_at_500 / create_cold_p50_at_0
    and `exec_at_500_over_single` = exec_1plus1_p50_at_500 / exec_1plus1_p50 (the single-session
    figure above). `loaded_timings_p50` gives, at 0 and at 500, the p50 of each entry of the
    sampled sessions' `start_timings` (the zygote's init and fork, each jail step), to show
    which step grows.
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

`--quick` cuts the sample counts so the whole run takes well under a minute, and keeps 100
live sessions instead of 500 for the *_at_500 figures (`loaded_live_sessions` says which).

    .venv/bin/python bench/sandbox.py --seccomp --json PATH [--quick]

compares the two seccomp profiles ("deny", the deny-list, and "allow", the derived allow-list)
in one run instead, with the samples of the two interleaved (deny then allow, then allow then
deny, ...) so that drift in the machine's load falls on both. Each figure is given for both
profiles with the ratio allow/deny:

install_filter
    `seccomp.install` of the profile's program in a freshly forked child (no_new_privs set
    before the clock starts): the kernel checks the program and prepares its action cache.
create_cold
    `create_session(SandboxPolicy(seccomp_profile=...))` on one Sandbox with `pool_size=0`, as
    create_cold above (one creation per profile is made and discarded first).
exec_1plus1
    As above, on one session per profile from that same Sandbox (one zygote for both).
session_getppid_ns, session_ioctl_ns, session_mmap_ns
    Nanoseconds per call inside those sessions (Python's own cost included), the fastest of the
    loop's passes (the least disturbed: on a shared VM the passes differ by up to 40%):
    `os.getppid()` (allowed by both; the kernel's action cache answers it without running the
    filter), `fcntl.ioctl(pipe, TCGETS)` and `mmap.mmap(-1, 4096).close()` (their arguments are
    checked, so the filter runs for each call).
raw_getppid_ns, raw_ioctl_ns, raw_sched_rr_get_interval_ns
    The filter alone: raw syscalls through ctypes in a forked child of the bench with only the
    profile's filter loaded (`no_filter`: none), the fastest pass (see `filter_cost_once`).
create_warm
    As above, on two Sandboxes with the default pool size, one per profile
    (`SandboxConfig(seccomp_profile=...)`), both pools full before each sample.
held_out
    Each snippet of HELD_OUT (ordinary work the allow-list's derivation never ran: shell tools,
    the standard library, more of the preinstalled libraries) in a fresh session under each
    profile: "broken_by_allow" lists those that work under deny but not under allow.

`CODEINTERP_SECCOMP_PROFILE=allow` runs the default figures (without `--seccomp`) under the
allow profile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
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
from stats import machine, percentile

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
    "create_cold_at_500_over_at_0": ("<=", 1.5),
    "exec_at_500_over_single": ("<=", 1.5),
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
    loaded_live: int  # sessions kept alive for the *_at_500 figures
    loaded_cold: int  # create samples at 0 and at the live count, each


FULL = Counts(
    warm=30,
    cold=30,
    bursts=3,
    exec_warmup=20,
    exec=500,
    ping=200,
    idle=20,
    jupyter=5,
    subprocess=10,
    loaded_live=500,
    loaded_cold=50,
)
QUICK = Counts(
    warm=10,
    cold=10,
    bursts=1,
    exec_warmup=5,
    exec=100,
    ping=50,
    idle=20,
    jupyter=3,
    subprocess=5,
    loaded_live=100,
    loaded_cold=10,
)
LOADED_BATCH = 20  # live sessions made at once for the *_at_500 figures


# -- helpers ------------------------------------------------------------------------------------


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
            total - sum(values[i] for values in phases.values()) for i, total in enumerate(totals)
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
        runs = await _exec_samples(session, counts)
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


# -- under load: many live idle sessions ---------------------------------------------------------


async def _cold_samples(sandbox: Sandbox, n: int) -> tuple[list[float], dict[str, list[float]]]:
    samples: list[float] = []
    timings: dict[str, list[float]] = {}
    for _ in range(n):
        start = time.perf_counter()
        session = await sandbox.create_session()
        samples.append(elapsed_ms(start))
        if session.process is not None:
            for name, ms in session.process.start_timings.items():
                timings.setdefault(name, []).append(ms)
        await session.close()
    return samples, timings


async def _exec_samples(session: Session, counts: Counts) -> list[float]:
    for _ in range(counts.exec_warmup):
        await run_ok(session, "1+1")
    runs: list[float] = []
    for _ in range(counts.exec):
        start = time.perf_counter()
        execution = await session.run("1+1")
        runs.append(elapsed_ms(start))
        if execution.status != "ok":
            raise RuntimeError(f"1+1 ended {execution.status}")
    return runs


async def measure_loaded(counts: Counts) -> dict[str, Any]:
    sandbox = await Sandbox.start(SandboxConfig(pool_size=0))
    live: list[Session] = []
    try:
        await (await sandbox.create_session()).close()  # the first fork is slower: discarded
        probe = await sandbox.create_session()
        live.append(probe)
        cold_0, timings_0 = await _cold_samples(sandbox, counts.loaded_cold)
        exec_0 = await _exec_samples(probe, counts)

        async def one() -> Session:
            session = await sandbox.create_session()
            live.append(session)
            await run_ok(session, "1+1")
            return session

        fill_start = time.perf_counter()
        while len(live) - 1 < counts.loaded_live:
            batch = min(LOADED_BATCH, counts.loaded_live - (len(live) - 1))
            await asyncio.gather(*(one() for _ in range(batch)))
        fill_ms = elapsed_ms(fill_start)
        await asyncio.sleep(0.5)  # let the last outputs settle
        cold_n, timings_n = await _cold_samples(sandbox, counts.loaded_cold)
        exec_n = await _exec_samples(probe, counts)
        return {
            "loaded_create_cold_at_0": cold_0,
            "loaded_create_cold_at_n": cold_n,
            "loaded_exec_at_0": exec_0,
            "loaded_exec_at_n": exec_n,
            "loaded_fill_ms": fill_ms,
            "loaded_timings_p50": {
                "at_0": {k: percentile(v, 50) for k, v in timings_0.items()},
                f"at_{counts.loaded_live}": {k: percentile(v, 50) for k, v in timings_n.items()},
            },
        }
    finally:
        close_start = time.perf_counter()
        await close_all(live)
        await sandbox.close()
        print(f"closed {len(live)} live sessions in {elapsed_ms(close_start):.0f} ms")


async def measure_sandbox(counts: Counts) -> dict[str, Any]:
    cold = await measure_cold(counts)
    loaded = await measure_loaded(counts)
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
    return {
        **cold,
        **loaded,
        "create_warm": warm,
        "exec_1plus1": runs,
        "exec_ping": pings,
        "burst20": burst,
        **idle,
    }


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


# -- seccomp profiles: the deny-list against the allow-list --------------------------------------

PROFILES = ("deny", "allow")


@dataclass(frozen=True)
class SeccompCounts:
    """Sample counts of a `--seccomp` run: each is per profile."""

    install: int
    cold: int
    warm: int
    exec_warmup: int
    exec: int
    loop: int  # iterations of each syscall loop
    loop_passes: int  # runs of each loop (the fastest is reported)


SECCOMP_FULL = SeccompCounts(
    install=200, cold=40, warm=40, exec_warmup=20, exec=400, loop=200_000, loop_passes=9
)
SECCOMP_QUICK = SeccompCounts(
    install=50, cold=10, warm=10, exec_warmup=5, exec=100, loop=50_000, loop_passes=3
)


def _orders(n: int) -> Iterator[tuple[str, ...]]:
    """deny, allow; allow, deny; ... so neither profile always goes first."""
    for i in range(n):
        yield PROFILES if i % 2 == 0 else PROFILES[::-1]


def install_once(program: bytes) -> float:
    """Fork; the child loads `program` (no_new_privs first) and reports how long the load took."""
    from codeinterp.sandbox import seccomp

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            seccomp._prctl(seccomp._PR_SET_NO_NEW_PRIVS, 1)
            start = time.perf_counter()
            seccomp.install(program)
            os.write(write_fd, str(elapsed_ms(start)).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        text = reader.read()
    os.waitpid(pid, 0)
    return float(text)


def filter_cost_once(program: bytes | None, n: int) -> dict[str, float]:
    """Fork; the child loads `program` (None: no filter) and times raw syscalls made through
    ctypes, in nanoseconds per call: getppid (the action cache answers it under both profiles),
    ioctl(pipe, TCGETS) (its request is checked: the filter runs to the ioctl block), and
    sched_rr_get_interval (allowed by the deny-list, cached; unlisted under the allow-list, so
    the filter runs to its end and answers ENOSYS: the longest path there is)."""
    import ctypes

    from codeinterp.sandbox import seccomp

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            if program is not None:
                seccomp.install(program, set_no_new_privs=True)
            table = seccomp._host_arch()
            assert table is not None
            nr = table.syscalls
            call = ctypes.CDLL(None, use_errno=True).syscall
            pipe_r, _ = os.pipe()
            timespec = ctypes.create_string_buffer(16)
            probes = {
                "getppid": (nr["getppid"],),
                "ioctl": (nr["ioctl"], pipe_r, 0x5401, 0),
                "sched_rr_get_interval": (nr["sched_rr_get_interval"], 0, timespec),
            }
            out = {}
            for name, args in probes.items():
                start = time.perf_counter_ns()
                for _ in range(n):
                    call(*args)
                out[name] = (time.perf_counter_ns() - start) / n
            os.write(write_fd, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        text = reader.read()
    os.waitpid(pid, 0)
    return {name: float(value) for name, value in json.loads(text).items()}


# One line of JSON last: nanoseconds per call (with Python's own cost) of an allowed syscall the
# kernel's action cache answers without running the filter (getppid), and of two whose argument
# the filter checks, so it runs for each call under both profiles: ioctl (TCGETS on a pipe,
# ENOTTY) and mmap (with munmap).
SYSCALL_LOOP = """
import fcntl, json, mmap, os, termios, time
n = {n}
def per_call(fn, count):
    start = time.perf_counter_ns()
    for _ in range(count):
        fn()
    return (time.perf_counter_ns() - start) / count
r, w = os.pipe()
def tcgets():
    try:
        fcntl.ioctl(r, termios.TCGETS)
    except OSError:
        pass
print(json.dumps({{"getppid_ns": per_call(os.getppid, n), "ioctl_ns": per_call(tcgets, n // 10),
                  "mmap_ns": per_call(lambda: mmap.mmap(-1, 4096).close(), n // 10)}}))
"""


def _sh(command: str) -> str:
    return f"import subprocess\nsubprocess.run({command!r}, shell=True, check=True, timeout=50)\n"


# Ordinary work that the allow-list's derivation (scripts/derive-seccomp-allowlist) never ran: how
# much of it breaks under the allow profile is the breakage figure. Each raises (or exits non-zero
# through check=True) when the work fails.
HELD_OUT: dict[str, str] = {
    "sh_ls_find_stat": _sh(
        "ls -la /mnt/data /usr/bin > /dev/null && stat /etc/hosts"
        " && find /usr/share/zoneinfo -maxdepth 1 -type d | head -3"
    ),
    "sh_cp_a_du_df": _sh(
        "cp -a /usr/share/zoneinfo/Europe /tmp/zi && du -sh /tmp/zi && df -h /mnt/data /tmp"
    ),
    "sh_tar_gzip_xz_zip": _sh(
        "cd /tmp && mkdir -p d && echo hi > d/f && tar czf d.tgz d && tar tzf d.tgz"
        " && xz -k d/f && gzip -k d/f && bzip2 -k d/f && zip -qr d.zip d && unzip -l d.zip"
    ),
    "sh_text_pipeline": _sh(
        "seq 1 1000 | sort -rn | uniq | awk '{s+=$1} END {print s}' | tee /tmp/t | wc -c"
        " && xargs echo < /tmp/t && cut -c1-2 /tmp/t && md5sum /tmp/t && diff /tmp/t /tmp/t"
        " && base64 /tmp/t | od -c | head -1"
    ),
    "sh_ps_id_env": _sh("ps aux && id && whoami; env && date -u && nproc && uptime"),
    "sh_fifo_timeout_jobs": _sh(
        "mkfifo /tmp/ff && (echo x > /tmp/ff &) && cat /tmp/ff && timeout 5 sleep 0.1"
        " && (sleep 0.1 & wait)"
    ),
    "sh_git": _sh(
        "cd /tmp && git init -q repo && cd repo && git config user.email a@b"
        " && git config user.name a && echo x > f && git add f && git commit -qm m && git log"
    ),
    "sh_gcc_make": _sh(
        "cd /tmp && printf '#include <stdio.h>\\nint main(){puts(\"c\");return 0;}\\n' > c.c"
        " && printf 'c: c.c\\n\\tgcc -O1 -o c c.c\\n' > Makefile && make -s && ./c"
    ),
    "sh_perl_sqlite_jq_bc": _sh(
        "perl -e 'print 1+1' && sqlite3 /tmp/s.db 'create table t(a); insert into t values(1);'"
        " && echo '{\"a\":1}' | jq .a && echo '2^10' | bc"
    ),
    "sh_file_python_curl": _sh(
        "file /usr/bin/ls && python3 -c 'print(1)' && curl --version > /dev/null"
    ),
    "ipython_magics": (
        "ip = get_ipython()\n"
        "ip.run_line_magic('timeit', '-n 3 -r 2 sum(range(100))')\n"
        "ip.run_line_magic('time', 'sum(range(10))')\n"
        "ip.run_cell_magic('writefile', '/tmp/script.py', 'print(1)')\n"
        "ip.run_line_magic('run', '/tmp/script.py')\n"
        "ip.run_line_magic('env', 'X=1')\n"
        "ip.run_cell_magic('bash', '', 'echo hi; ls /mnt/data')\n"
        "ip.run_cell_magic('script', 'sh', 'echo sh')\n"
    ),
    "pip_list_show": (
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-m', 'pip', 'list'], check=True, capture_output=True)\n"
        "subprocess.run([sys.executable, '-m', 'pip', 'show', 'numpy'], check=True,"
        " capture_output=True)\n"
    ),
    "os_file_calls": """
import fcntl, mmap, os, select
r, w = os.pipe()
os.writev(w, [b"ab", b"cd"])
assert select.select([r], [], [], 1)[0]
os.readv(r, [bytearray(4)])
fd = os.open("/tmp/f", os.O_RDWR | os.O_CREAT, 0o600)
os.posix_fallocate(fd, 0, 1 << 16)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
fcntl.flock(fd, fcntl.LOCK_EX)
fcntl.flock(fd, fcntl.LOCK_UN)
os.lockf(fd, os.F_LOCK, 0)
os.pwrite(fd, b"x", 10)
m = mmap.mmap(fd, 1 << 16)
m.madvise(mmap.MADV_DONTNEED)
m.flush()
m.close()
fd2 = os.open("/tmp/f2", os.O_RDWR | os.O_CREAT, 0o600)
os.copy_file_range(fd, fd2, 10, 0, 0)
src = os.open("/etc/hosts", os.O_RDONLY)
os.sendfile(fd, src, 0, 10)
pr, pw = os.pipe()
os.splice(src, pw, 10)
e = os.eventfd(0)
os.eventfd_write(e, 1)
os.eventfd_read(e)
os.mkfifo("/tmp/fifo")
os.chown("/tmp/f", os.getuid(), os.getgid())
os.truncate("/tmp/f", 5)
os.link("/tmp/f", "/tmp/g")
os.umask(0o22)
""",
    "os_process_calls": """
import os, signal, threading, time, faulthandler, resource
os.nice(1)
os.sched_yield()
os.sched_getscheduler(0)
os.sched_setaffinity(0, os.sched_getaffinity(0))
pid = os.fork()
if pid == 0:
    try:
        os.setsid()
    finally:
        os._exit(3)
assert os.waitpid(pid, 0)[1] >> 8 == 3
pid = os.fork()
if pid == 0:
    try:
        time.sleep(5)
    finally:
        os._exit(0)
os.kill(pid, signal.SIGTERM)
os.waitid(os.P_PID, pid, os.WEXITED)
signal.signal(signal.SIGUSR1, lambda *a: None)
signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
os.kill(os.getpid(), signal.SIGUSR2)
assert signal.sigtimedwait([signal.SIGUSR2], 1).si_signo == signal.SIGUSR2
faulthandler.dump_traceback_later(30)
faulthandler.cancel_dump_traceback_later()
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.getsid(0), os.getresuid(), os.getresgid()
os.close(os.pidfd_open(os.getpid()))
""",
    "sockets_fd_passing": """
import array, os, socket, ssl, uuid
a, b = socket.socketpair()
r, w = os.pipe()
a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
b.recvmsg(10, socket.CMSG_LEN(4))
socket.send_fds(a, [b"y"], [w])
socket.recv_fds(b, 10, 1)
socket.getaddrinfo("localhost", 80)
socket.getfqdn()
ssl.create_default_context()
uuid.uuid1()
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
u.bind("\\0abstract")
u.listen()
""",
    "multiprocessing_more": """
import multiprocessing as mp
from multiprocessing import shared_memory
with mp.Manager() as manager:
    d = manager.dict()
    d["a"] = 1
    assert dict(d) == {"a": 1}
shm = shared_memory.SharedMemory(create=True, size=1 << 20)
shm.buf[0] = 1
shm.close()
shm.unlink()
with mp.get_context("forkserver").Pool(2) as pool:
    assert pool.map(abs, range(-2, 2)) == [2, 1, 0, 1]
""",
    "asyncio_subprocess": """
import asyncio
async def main():
    p = await asyncio.create_subprocess_exec("echo", "hi", stdout=asyncio.subprocess.PIPE)
    await p.communicate()
    q = await asyncio.create_subprocess_shell("sleep 0.1", stdout=asyncio.subprocess.PIPE)
    await q.communicate()
    return await asyncio.wait_for(asyncio.to_thread(sum, range(10)), 5)
await main()
""",
    "stdlib_misc": """
import datetime, getpass, hashlib, importlib.metadata, locale, shutil, sqlite3, tracemalloc
import zoneinfo
datetime.datetime.now(zoneinfo.ZoneInfo("Europe/Paris"))
locale.setlocale(locale.LC_ALL, "")
tracemalloc.start()
tracemalloc.take_snapshot()
tracemalloc.stop()
db = sqlite3.connect("/tmp/w.db")
db.execute("pragma journal_mode=wal")
db.execute("create table t(a)")
db.execute("insert into t values (1)")
db.commit()
db.execute("vacuum")
db.close()
hashlib.scrypt(b"p", salt=b"s", n=16, r=8, p=1)
getpass.getuser()
shutil.disk_usage("/mnt/data")
shutil.copy2("/usr/bin/ls", "/tmp/ls2")
shutil.copytree("/usr/share/zoneinfo/Asia", "/tmp/asia")
shutil.make_archive("/tmp/arc", "gztar", "/tmp/asia")
shutil.unpack_archive("/tmp/arc.tar.gz", "/tmp/un")
len(list(importlib.metadata.distributions()))
""",
    "numpy_more": """
import numpy as np
big = np.ones((2000, 2000))
big @ big[:, :10]
mm = np.memmap("/tmp/mm.dat", dtype="float32", mode="w+", shape=(1000, 100))
mm[:] = 1
mm.flush()
del mm
np.arange(10).tofile("/tmp/a.bin")
np.fromfile("/tmp/a.bin", dtype=int)
np.savez_compressed("/tmp/z.npz", a=np.arange(10))
np.load("/tmp/z.npz")["a"]
np.linalg.eig(np.random.default_rng(0).normal(size=(50, 50)))
huge = np.empty(300_000_000, dtype=np.uint8)
huge[::4096] = 1
""",
    "pandas_more": """
import io, sqlite3
import numpy as np, pandas as pd
df = pd.DataFrame({"a": np.arange(1000), "b": np.random.default_rng(0).normal(size=1000)})
con = sqlite3.connect("/tmp/p.db")
df.to_sql("t", con, index=False)
pd.read_sql("select * from t", con)
for chunk in pd.read_csv(io.StringIO(df.to_csv(index=False)), chunksize=100):
    pass
df.describe()
df.to_markdown()
df.plot().figure.savefig("/tmp/p.png")
with pd.ExcelWriter("/tmp/x.xlsx") as writer:
    df.to_excel(writer, sheet_name="one")
    df.head().to_excel(writer, sheet_name="two")
pd.read_excel("/tmp/x.xlsx", sheet_name=None)
pd.to_datetime(["2024-01-01"]).tz_localize("UTC").tz_convert("Asia/Tokyo")
""",
    "matplotlib_more": """
import matplotlib.animation as animation, matplotlib.pyplot as plt, numpy as np
from matplotlib import font_manager
font_manager.findfont("DejaVu Sans")
fig, ax = plt.subplots()
line, = ax.plot([], [])
anim = animation.FuncAnimation(fig, lambda i: line.set_data(range(i), range(i)), frames=5)
anim.save("/tmp/a.gif", writer=animation.PillowWriter(fps=5))
ax3 = plt.figure().add_subplot(projection="3d")
ax3.plot_surface(*np.meshgrid(np.arange(5), np.arange(5)), np.ones((5, 5)))
plt.title(r"$\\alpha^2$")
plt.savefig("/tmp/m.pdf")
plt.savefig("/tmp/m.eps")
plt.close("all")
""",
    "sklearn_more": """
import joblib, numpy as np
from joblib import Memory, Parallel, delayed
from sklearn.datasets import load_digits, load_iris
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
X, y = load_iris(return_X_y=True)
load_digits()
model = make_pipeline(StandardScaler(), SVC())
gs = GridSearchCV(model, {"svc__C": [0.1, 1, 10]}, n_jobs=-1, cv=3).fit(X, y)
Parallel(n_jobs=2, backend="threading")(delayed(sum)(range(i)) for i in range(10))
Parallel(n_jobs=2, backend="multiprocessing")(delayed(abs)(-i) for i in range(10))
Memory("/tmp/joblib", verbose=0).cache(np.sum)(np.arange(10))
joblib.dump(gs.best_estimator_, "/tmp/model.joblib")
joblib.load("/tmp/model.joblib")
""",
    "scipy_more": """
import numpy as np
from scipy import io, ndimage, spatial, sparse, special
from scipy.io import wavfile
from scipy.sparse.linalg import spsolve
io.savemat("/tmp/m.mat", {"a": np.arange(10)})
io.loadmat("/tmp/m.mat")
wavfile.write("/tmp/w.wav", 8000, np.zeros(800, dtype=np.int16))
wavfile.read("/tmp/w.wav")
ndimage.gaussian_filter(np.ones((50, 50)), 2)
spatial.KDTree(np.random.default_rng(0).random((100, 2))).query([0.5, 0.5])
special.gamma(5)
spsolve(sparse.identity(10, format="csc"), np.ones(10))
""",
    "pillow_openpyxl_more": """
import openpyxl
from openpyxl.chart import BarChart, Reference
from PIL import Image, ImageDraw, ImageFilter, ImageFont
img = Image.new("RGB", (200, 100))
ImageDraw.Draw(img).text((10, 10), "hi", font=ImageFont.load_default())
img.filter(ImageFilter.GaussianBlur(2)).save("/tmp/i.webp")
img.save("/tmp/i.gif")
img.save("/tmp/i.tiff")
frames = [Image.new("P", (10, 10), i) for i in range(3)]
frames[0].save("/tmp/f.gif", save_all=True, append_images=frames[1:])
wb = openpyxl.Workbook()
ws = wb.active
for i in range(10):
    ws.append([i, i * i])
chart = BarChart()
chart.add_data(Reference(ws, min_col=2, min_row=1, max_row=10))
ws.add_chart(chart, "D2")
wb.save("/tmp/c.xlsx")
openpyxl.load_workbook("/tmp/c.xlsx")
""",
    "sympy_seaborn_more": """
import numpy as np, pandas as pd, seaborn as sns, sympy as sp
x, y = sp.symbols("x y")
sp.integrate(sp.exp(-x**2), (x, -sp.oo, sp.oo))
sp.Matrix([[1, 2], [3, 4]]).inv()
sp.solve([x + y - 2, x - y], [x, y])
sp.nsolve(sp.cos(x) - x, 0.5)
df = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=list("abc"))
sns.pairplot(df).savefig("/tmp/pair.png")
""",
}


async def measure_held_out(sandbox: Sandbox, timeout: float) -> dict[str, dict[str, str]]:
    """Each HELD_OUT snippet in a fresh session under each profile: "ok" or what went wrong."""
    from codeinterp.sandbox import SandboxPolicy

    outcomes: dict[str, dict[str, str]] = {}
    for name, code in HELD_OUT.items():
        outcomes[name] = {}
        for profile in PROFILES:
            session = await sandbox.create_session(SandboxPolicy(seccomp_profile=profile))
            try:
                execution = await session.run(code, timeout=timeout)
            finally:
                await session.close()
            error = execution.error
            outcomes[name][profile] = (
                "ok"
                if execution.status == "ok"
                else f"{execution.status}: {error.name}: {error.value}"[:200]
                if error
                else execution.status
            )
    return outcomes


async def measure_seccomp(counts: SeccompCounts) -> dict[str, Any]:
    """Every figure for both profiles in one run, the samples of the two interleaved."""
    from codeinterp.sandbox import SandboxPolicy, seccomp

    raw: dict[str, Any] = {p: {"install": [], "cold": [], "warm": [], "exec": []} for p in PROFILES}
    programs = {p: seccomp.build_program(seccomp.profile(p)) for p in PROFILES}
    for profile in PROFILES:
        start = time.perf_counter()
        seccomp.build_program(seccomp.profile(profile))
        raw[profile]["build_ms"] = elapsed_ms(start)
        raw[profile]["instructions"] = len(programs[profile]) // 8
    for order in _orders(counts.install):
        for profile in order:
            raw[profile]["install"].append(install_once(programs[profile]))
    unfiltered: dict[str, list[float]] = {}
    for profile in PROFILES:
        raw[profile]["filter_cost"] = {}
    for order in _orders(counts.loop_passes):
        for profile in (*order, None):
            costs = filter_cost_once(None if profile is None else programs[profile], counts.loop)
            sink = unfiltered if profile is None else raw[profile]["filter_cost"]
            for name, value in costs.items():
                sink.setdefault(name, []).append(value)

    # One zygote for both profiles: cold creation, 1+1, the syscall loops, the held-out work.
    policies = {p: SandboxPolicy(seccomp_profile=p) for p in PROFILES}
    sandbox = await Sandbox.start(SandboxConfig(pool_size=0))
    sessions: dict[str, Session] = {}
    try:
        for profile in PROFILES:  # the first fork after start is slower: not a sample
            await (await sandbox.create_session(policies[profile])).close()
        for order in _orders(counts.cold):
            for profile in order:
                start = time.perf_counter()
                session = await sandbox.create_session(policies[profile])
                raw[profile]["cold"].append(elapsed_ms(start))
                await session.close()
        for profile in PROFILES:
            sessions[profile] = await sandbox.create_session(policies[profile])
            for _ in range(counts.exec_warmup):
                await run_ok(sessions[profile], "1+1")
        for order in _orders(counts.exec):
            for profile in order:
                start = time.perf_counter()
                execution = await sessions[profile].run("1+1")
                raw[profile]["exec"].append(elapsed_ms(start))
                if execution.status != "ok" or execution.text != "2":
                    raise RuntimeError(f"1+1 under {profile}: {execution.status}")
        for profile in PROFILES:
            raw[profile]["loop"] = {"getppid_ns": [], "ioctl_ns": [], "mmap_ns": []}
        for i, order in enumerate(_orders(counts.loop_passes + 1)):
            for profile in order:
                loop = await sessions[profile].run(SYSCALL_LOOP.format(n=counts.loop))
                if loop.status != "ok":
                    raise RuntimeError(f"syscall loop under {profile}: {loop.error}")
                if i:  # the first pass warms up
                    per_call = json.loads(loop.stdout.strip().splitlines()[-1])
                    for key, value in per_call.items():
                        raw[profile]["loop"][key].append(value)
        for session in sessions.values():
            await session.close()
        breakage = await measure_held_out(sandbox, timeout=60)
    finally:
        for session in sessions.values():
            await session.close()
        await sandbox.close()

    # The warm pool serves only its Sandbox's own profile: one Sandbox per profile.
    pooled = {
        p: await Sandbox.start(SandboxConfig(pool_size=BURST_POOL_SIZE, seccomp_profile=p))
        for p in PROFILES
    }
    try:
        for order in _orders(counts.warm):
            for profile in order:
                for each in pooled.values():  # no refill running behind the sample
                    await each.wait_pool_full()
                start = time.perf_counter()
                session = await pooled[profile].create_session()
                raw[profile]["warm"].append(elapsed_ms(start))
                await session.close()
    finally:
        for each in pooled.values():
            await each.close()
    return {"raw": raw, "breakage": breakage, "unfiltered": unfiltered}


def build_seccomp_report(
    measured: dict[str, Any], counts: SeccompCounts, quick: bool
) -> dict[str, Any]:
    from codeinterp.sandbox.seccomp_allowlist import ALLOWED

    raw = measured["raw"]
    figures: dict[str, dict[str, float]] = {}
    for key, name in (
        ("install", "install_filter"),
        ("cold", "create_cold"),
        ("warm", "create_warm"),
        ("exec", "exec_1plus1"),
    ):
        for stat in ("p50", "p95"):
            row = {p: summary(raw[p][key])[stat] for p in PROFILES}
            figures[f"{name}_{stat}"] = {**row, "allow_over_deny": row["allow"] / row["deny"]}
        # The i-th samples of the two profiles were taken side by side: their differences.
        pairs = zip(raw["allow"][key], raw["deny"][key], strict=True)
        differences = [allow - deny for allow, deny in pairs]
        figures[f"{name}_paired_difference"] = {
            "p25": percentile(differences, 25),
            "p50": percentile(differences, 50),
            "p75": percentile(differences, 75),
        }
    for key in ("getppid_ns", "ioctl_ns", "mmap_ns"):
        row = {p: min(raw[p]["loop"][key]) for p in PROFILES}
        figures[f"session_{key}"] = {**row, "allow_over_deny": row["allow"] / row["deny"]}
    for key in ("getppid", "ioctl", "sched_rr_get_interval"):
        row = {p: min(raw[p]["filter_cost"][key]) for p in PROFILES}
        figures[f"raw_{key}_ns"] = {
            **row,
            "allow_over_deny": row["allow"] / row["deny"],
            "no_filter": min(measured["unfiltered"][key]),
        }
    outcomes = measured["breakage"]
    works_under_deny = [n for n, o in outcomes.items() if o["deny"] == "ok"]
    broken = {n: outcomes[n]["allow"] for n in works_under_deny if outcomes[n]["allow"] != "ok"}
    return {
        "figures": figures,
        "unit": "ms, except *_ns (nanoseconds per call, the fastest of the loop's passes)",
        "unfiltered_samples": measured["unfiltered"],
        "programs": {
            p: {"instructions": raw[p]["instructions"], "build_ms": raw[p]["build_ms"]}
            for p in PROFILES
        },
        "allow_list_size": len(ALLOWED),
        "held_out": {
            "snippets": len(outcomes),
            "ok_under_deny": len(works_under_deny),
            "ok_under_allow": sum(1 for o in outcomes.values() if o["allow"] == "ok"),
            "broken_by_allow": broken,
            "outcomes": outcomes,
        },
        "samples_per_profile": asdict(counts),
        "samples": {
            p: {k: v for k, v in raw[p].items() if isinstance(v, list | dict)} for p in PROFILES
        },
        "quick": quick,
        "percentile_method": "linear interpolation between closest ranks (numpy default)",
        "machine": machine_info(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_seccomp_table(report: dict[str, Any]) -> None:
    headers = ("metric", "deny", "allow", "allow/deny")
    rows = [
        (name, f"{row['deny']:,.3f}", f"{row['allow']:,.3f}", f"{row['allow_over_deny']:.3f}")
        for name, row in report["figures"].items()
        if "deny" in row
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("{:<%d}" % w for w in widths)  # noqa: UP031
    print(line.format(*headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))
    unfiltered = ", ".join(
        f"{name} {row['no_filter']:,.1f}"
        for name, row in report["figures"].items()
        if "no_filter" in row
    )
    print(f"\nwithout any filter: {unfiltered}")
    print("\nallow minus deny, sample by sample (p25 / p50 / p75, ms):")
    for name, row in report["figures"].items():
        if "deny" not in row:
            print(
                f"  {name.removesuffix('_paired_difference')}: {row['p25']:+.3f} / "
                f"{row['p50']:+.3f} / {row['p75']:+.3f}"
            )
    programs = report["programs"]
    print(
        f"\nBPF instructions: deny {programs['deny']['instructions']}, allow "
        f"{programs['allow']['instructions']} ({report['allow_list_size']} syscalls listed)"
    )
    held = report["held_out"]
    print(
        f"held-out work: {held['snippets']} snippets, {held['ok_under_deny']} ok under deny, "
        f"{held['ok_under_allow']} ok under allow; broken by the allow profile: "
        f"{len(held['broken_by_allow'])}"
    )
    for name, outcome in held["broken_by_allow"].items():
        print(f"  {name}: {outcome}")


# -- report -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        memory_kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    return {
        **machine(),  # cores, kernel, Python, and the load at the end (other work skews results)
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_total_mb": round(memory_kb * 1024 / 1e6),
        "machine": platform.machine(),
        "python_executable": PYTHON,
    }


def build_report(
    raw: dict[str, Any], jupyter: list[float], spawn: list[float], counts: Counts, quick: bool
) -> dict[str, Any]:
    warm = summary(raw["create_warm"])
    cold = summary(raw["create_cold"])
    burst = summary(raw["burst20"])
    exec_runs = summary(raw["exec_1plus1"])
    jupyter_p50 = percentile(jupyter, 50)
    cold_at_0 = percentile(raw["loaded_create_cold_at_0"], 50)
    cold_at_n = percentile(raw["loaded_create_cold_at_n"], 50)
    exec_at_n = percentile(raw["loaded_exec_at_n"], 50)
    metrics: dict[str, Any] = {
        "create_warm_p50": warm["p50"],
        "create_cold_p50": cold["p50"],
        "create_cold_p99": cold["p99"],
        "burst20_p95": burst["p95"],
        "burst_pool_size": BURST_POOL_SIZE,
        "exec_1plus1_p50": exec_runs["p50"],
        "idle_uss_mb": raw["idle_uss_mb"],
        "uss_unit": USS_UNIT,
        "create_cold_p50_at_0": cold_at_0,
        "create_cold_p50_at_500": cold_at_n,
        "exec_1plus1_p50_at_0": percentile(raw["loaded_exec_at_0"], 50),
        "exec_1plus1_p50_at_500": exec_at_n,
        "loaded_live_sessions": counts.loaded_live,
        "create_cold_at_500_over_at_0": cold_at_n / cold_at_0,
        "exec_at_500_over_single": exec_at_n / exec_runs["p50"],
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
        "create_cold_at_0": summary(raw["loaded_create_cold_at_0"]),
        "create_cold_at_500": summary(raw["loaded_create_cold_at_n"]),
        "exec_1plus1_at_0": summary(raw["loaded_exec_at_0"]),
        "exec_1plus1_at_500": summary(raw["loaded_exec_at_n"]),
        "loaded_fill_ms": raw["loaded_fill_ms"],
        "loaded_timings_p50": raw["loaded_timings_p50"],
    }
    samples = {**asdict(counts), "burst_size": BURST_SIZE, "burst_samples": len(raw["burst20"])}
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
    for name in (
        "create_warm_p50",
        "create_cold_p50",
        "create_cold_p99",
        "burst20_p95",
        "exec_1plus1_p50",
        "idle_uss_mb",
        "create_cold_p50_at_0",
        "create_cold_p50_at_500",
        "create_cold_at_500_over_at_0",
        "exec_1plus1_p50_at_0",
        "exec_1plus1_p50_at_500",
        "exec_at_500_over_single",
        "jupyter_create_p50",
        "subprocess_pandas_p50",
        "jupyter_over_cold",
        "jupyter_over_warm",
    ):
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
    rows.append(("  *_at_500: live sessions", str(report["loaded_live_sessions"]), "", ""))
    at_0, at_n = report["details"]["loaded_timings_p50"].values()
    for step, value in at_0.items():
        grown = f"{value:.3f} -> {at_n.get(step, float('nan')):.3f} ms"
        rows.append((f"  start step {step} (p50)", grown, "", ""))
    headers = ("metric", "value", "target", "met")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("{:<%d}" % w for w in widths)  # noqa: UP031
    print(line.format(*headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row).rstrip())
    machine = report["machine"]
    print(
        f"\n{machine['cpu_count']} CPUs ({machine['cpu_model']}), Linux {machine['kernel']}, "
        f"Python {machine['python']}; samples: {report['samples']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    parser.add_argument(
        "--network",
        action="store_true",
        help="measure environments and network policies instead (bench/network.py)",
    )
    parser.add_argument(
        "--seccomp",
        action="store_true",
        help="compare the deny-list and allow-list seccomp profiles instead",
    )
    args = parser.parse_args(argv)
    if args.network:
        import network  # bench/network.py, beside this file

        network_report = asyncio.run(network.measure(args.quick))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(network_report, indent=2) + "\n")
        network.print_table(network_report)
        print(f"written to {args.json}")
        return
    if args.seccomp:
        seccomp_counts = SECCOMP_QUICK if args.quick else SECCOMP_FULL
        measured = asyncio.run(measure_seccomp(seccomp_counts))
        seccomp_report = build_seccomp_report(measured, seccomp_counts, args.quick)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(seccomp_report, indent=2) + "\n")
        print_seccomp_table(seccomp_report)
        print(f"written to {args.json}")
        return
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

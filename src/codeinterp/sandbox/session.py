"""A session as the host holds it: one jailed kernel, its workspace, limits and statistics.

A `Session` outlives its processes: when the code times out past its grace period, runs out of
memory or kills its interpreter, the host starts a new process on the same workspace, uid and
cgroup, and the execution's `End` says that state was lost.

One execution runs at a time (a lock serialises them). While it runs, three sources feed one
ordered buffer: the stdout pipe, the stderr pipe and the framed channel. Pipes are drained before
each channel frame is handled, so output and results keep the order the code produced them in.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from codeinterp.errors import Conflict, SessionClosed, SessionDied

from . import frames
from .cgroups import SessionCgroup
from .channel import ProtocolError, encode, read_frame, read_message
from .events import End, Event, Execution, Status, Stderr, Stdout
from .policy import SandboxPolicy
from .workspace import Workspace, WorkspaceFile
from .zygote_client import SpawnedProcess

log = logging.getLogger("codeinterp.sandbox")

READ_CHUNK = 65536
FRAME_KINDS = ("result", "error", "done", "pong")
MAX_PENDING_FRAMES = 64


@dataclass
class SessionStats:
    memory_peak_bytes: int
    memory_current_bytes: int
    cpu_seconds: float
    processes: int
    workspace_bytes: int
    executions: int
    restarts: int


class _Exited:
    """Marks the end of the channel: the kernel process is gone."""


_EXITED = _Exited()
Item = tuple[str, str] | dict[str, Any] | _Exited


class KernelProcess:
    """One live kernel: the channel, the two output pipes and the exit status when it dies."""

    def __init__(self, spawned: SpawnedProcess, output_cap: int, results_cap: int) -> None:
        self.pid = spawned.pid
        self.init_pid = spawned.init_pid
        self.channel = spawned.channel
        self.stdout_fd = spawned.stdout_fd
        self.stderr_fd = spawned.stderr_fd
        self.output_cap = output_cap
        self.results_cap = results_cap
        self.execution_id = 0  # frames of any other execution are stale and dropped
        self.active = False  # an execution (or ping) is waiting for its frames
        self.results_bytes = 0
        self.exit_status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._buffer: deque[Item] = deque()
        self._has_items = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._frames = 0
        # One decoder per stream and source: pipes may split a character between reads.
        self._decoders = {
            (stream, source): codecs.getincrementaldecoder("utf-8")("replace")
            for stream in ("stdout", "stderr")
            for source in ("pipe", "frame")
        }
        self.sent: dict[str, int] = {"stdout": 0, "stderr": 0}
        self.dropped: dict[str, int] = {"stdout": 0, "stderr": 0, "results": 0}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self.closed = False
        self.start_timings: dict[str, float] = {}  # jail step -> ms, as the kernel measured

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self.stdout_fd, self.stderr_fd):
            os.set_blocking(fd, False)
        self._reader, self._writer = await asyncio.open_unix_connection(sock=self.channel)
        loop.add_reader(self.stdout_fd, self._drain_pipe, "stdout")
        loop.add_reader(self.stderr_fd, self._drain_pipe, "stderr")

    async def wait_ready(self, timeout: float) -> None:
        assert self._reader is not None
        async with asyncio.timeout(timeout):
            message = await read_message(self._reader)
        if message is not None and isinstance(message.get("timings"), dict):
            self.start_timings = message["timings"]
        if message is None or message.get("ev") != "ready":
            detail = str(message.get("error")) if message else "the session exited while starting"
            if message is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        status = await asyncio.shield(self.exit_status)
                    detail += f" (wait status {status})"
            self._drain_pipe("stderr")
            stderr = "".join(i[1] for i in self._buffer if isinstance(i, tuple))
            raise SessionDied(
                f"session failed to start: {detail}" + (f"\n{stderr}" if stderr else "")
            )
        self._pump = asyncio.create_task(self._pump_channel())

    # -- output buffering -----------------------------------------------------------------------

    def start_execution(self) -> int:
        """A new execution id, with fresh output counters."""
        self.active = True
        self.execution_id += 1
        self.sent = {"stdout": 0, "stderr": 0}
        self.dropped = {"stdout": 0, "stderr": 0, "results": 0}
        self.results_bytes = 0
        return self.execution_id

    def _push(self, item: Item) -> None:
        self._buffer.append(item)
        self._has_items.set()

    def _drain_pipe(self, stream: str) -> None:
        fd = self.stdout_fd if stream == "stdout" else self.stderr_fd
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(fd)
                return
            self._accept_output(stream, data, "pipe")

    def _accept_output(self, stream: str, data: bytes, source: str) -> None:
        """Count output against the cap; keep what fits, drop the rest with one marker."""
        room = self.output_cap - self.sent[stream]
        if room <= 0:
            self.dropped[stream] += len(data)
            return
        if len(data) > room:
            self.dropped[stream] += len(data) - room
            data = data[:room]
        self.sent[stream] += len(data)
        decoder = self._decoders[stream, source]
        text = decoder.decode(data)
        if self.sent[stream] >= self.output_cap:
            text += decoder.decode(b"", final=True)
            text += f"\n[{stream} truncated: over the {self.output_cap} byte limit]\n"
        if text:
            self._push((stream, text))

    def _accept_result(self, size: int) -> bool:
        """Count a result against the cap; past it, results are dropped with one marker."""
        if self.results_bytes + size <= self.results_cap:
            self.results_bytes += size
            return True
        if not self.dropped["results"]:
            limit = self.results_cap // (1024 * 1024)
            self._push(
                {
                    "ev": "result",
                    "id": self.execution_id,
                    "type": "display_data",
                    "data": {
                        "text/plain": f"[results truncated: over the {limit} MiB limit "
                        "for one execution]"
                    },
                }
            )
            self._frames += 1
        self.dropped["results"] += size
        return False

    async def _pump_channel(self) -> None:
        assert self._reader is not None
        try:
            while True:
                message, size = await read_frame(self._reader)
                self._drain_pipe("stdout")
                self._drain_pipe("stderr")
                if message is None:
                    break
                if message.get("ev") == "stream":
                    stream = "stderr" if message.get("name") == "stderr" else "stdout"
                    self._accept_output(stream, str(message.get("text", "")).encode(), "frame")
                    continue
                kind = message.get("ev")
                if kind not in FRAME_KINDS or message.get("id") != self.execution_id:
                    continue  # stale, forged without the current id, or of no known kind
                if not self.active:
                    continue  # between executions nothing but output is expected
                if kind in ("result", "error") and not self._accept_result(size):
                    continue  # every rich frame counts against one budget per execution
                if kind in ("done", "pong"):
                    self.active = False
                self._frames += 1
                self._push(message)
                if self._frames >= MAX_PENDING_FRAMES:
                    self._has_room.clear()
                    await self._has_room.wait()
        except (ProtocolError, OSError, ValueError, RecursionError):
            pass  # a broken or hostile channel ends the session like a dead one
        finally:
            self._push(_EXITED)

    async def next_item(self, timeout: float | None) -> Item | None:
        """The next buffered item, or None when `timeout` seconds pass first."""
        while not self._buffer:
            self._has_items.clear()
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the wait ends, and a cancelled caller would carry on.
                async with asyncio.timeout(timeout):
                    await self._has_items.wait()
            except TimeoutError:
                return None
        item = self._buffer.popleft()
        if isinstance(item, dict):
            self._frames -= 1
            if self._frames < MAX_PENDING_FRAMES:
                self._has_room.set()
        return item

    def put_back(self, items: list[Item]) -> None:
        """Return items taken out of order to the front of the buffer."""
        for item in reversed(items):
            self._buffer.appendleft(item)
            if isinstance(item, dict):
                self._frames += 1
        if items:
            self._has_items.set()

    async def send(self, message: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write(encode(message))
        await self._writer.drain()

    # -- signals --------------------------------------------------------------------------------

    def repl_pid(self) -> int:
        """Host pid of the REPL."""
        return self.pid

    def interrupt(self) -> None:
        if not self.exit_status.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL the namespace's init: the kernel then kills every process in the session."""
        if not self.exit_status.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid or self.pid, signal.SIGKILL)

    def on_exit(self, status: int) -> None:
        if not self.exit_status.done():
            self.exit_status.set_result(status)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.kill()
        loop = asyncio.get_running_loop()
        for fd in (self.stdout_fd, self.stderr_fd):
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if self._writer is not None:
            self._writer.close()
        else:
            self.channel.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.shield(self.exit_status)


def _describe_exit(status: int) -> tuple[int | None, int | None]:
    """(signal, exit_code) of the REPL, from its wait status."""
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status), None
    return None, os.waitstatus_to_exitcode(status)


Spawner = Callable[["Session"], Awaitable[KernelProcess]]


class Session:
    """A jailed, stateful Python session (use `Sandbox.create_session` to make one)."""

    def __init__(
        self,
        session_id: str,
        policy: SandboxPolicy,
        workspace: Workspace,
        cgroup: SessionCgroup | None,
        uid: int,
        spawner: Spawner,
        releaser: Callable[[Session], Awaitable[None]],
        interrupt_grace: float,
    ) -> None:
        self.id = session_id
        self.policy = policy
        self.workspace = workspace
        self.cgroup = cgroup
        self.uid = uid
        self.interrupt_grace = interrupt_grace
        self.created_at = time.time()
        self.last_used = time.monotonic()
        self.process: KernelProcess | None = None
        self.executions = 0
        self.restarts = 0
        self._spawner = spawner
        self._releaser = releaser
        self._lock = asyncio.Lock()
        self._interrupt_requested = False
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        self.process = await self._spawner(self)

    async def _restart(self) -> None:
        if self.process is not None:
            await self.process.close()
        self.process = None
        if self._closed:
            raise SessionClosed(f"session {self.id} was closed")
        self.restarts += 1
        self.process = await self._spawner(self)

    # -- executing ------------------------------------------------------------------------------

    async def execute(self, code: str, timeout: float | None = 60.0) -> AsyncGenerator[Event, None]:
        """Run `code`; yields output as it happens and ends with exactly one `End` event.

        Leaving the iteration early interrupts the code; the session keeps its state if the
        interrupt lands within the grace period.
        """
        if self._closed:
            raise SessionClosed(f"session {self.id} is closed")
        await self._lock.acquire()
        if self._closed:  # closed while we waited for the lock
            self._lock.release()
            raise SessionClosed(f"session {self.id} is closed")
        ended = False
        try:
            async for event in self._execute_locked(code, timeout):
                ended = isinstance(event, End)
                yield event
        finally:
            if ended or self.process is None:
                self._lock.release()
            else:
                # The caller went away mid-execution: stop the code without blocking them, and
                # keep the session locked until it has stopped.
                task = asyncio.get_running_loop().create_task(self._abandon())
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _abandon(self) -> None:
        try:
            await asyncio.shield(self._stop_running_code())
        except SessionClosed:
            pass
        except Exception:
            log.exception("session %s: could not stop abandoned code", self.id)
        finally:
            self._lock.release()

    async def _stop_running_code(self) -> None:
        process = self.process
        if process is None:
            return
        process.interrupt()
        deadline = time.monotonic() + self.interrupt_grace
        while (remaining := deadline - time.monotonic()) > 0:
            item = await process.next_item(remaining)
            if item is None:
                break
            if isinstance(item, _Exited):
                await self._restart()
                return
            if (
                isinstance(item, dict)
                and item.get("ev") == "done"
                and (item.get("id") == process.execution_id)
            ):
                return
        await self._restart()

    async def _execute_locked(self, code: str, timeout: float | None) -> AsyncIterator[Event]:
        # An interpreter that died while idle (its zygote was killed, say) is replaced now; the
        # code runs in the new one and the End says that the earlier state is gone.
        lost_while_idle = ""
        if self.process is not None and self.process.exit_status.done():
            sig, code_ = _describe_exit(self.process.exit_status.result())
            how = f"was killed by signal {sig}" if sig else f"exited with code {code_}"
            lost_while_idle = (
                f"the session's interpreter {how} while idle and was restarted before this "
                "execution; its earlier state was lost"
            )
        if self.process is None or self.process.exit_status.done():
            await self._restart()
        process = self.process
        assert process is not None
        started = time.monotonic()
        self.last_used = started
        self.executions += 1
        self._interrupt_requested = False
        oom_before = self.cgroup.oom_kills() if self.cgroup else 0
        execution_id = process.start_execution()
        deadline = None if timeout is None else started + timeout
        timed_out = False
        kill_at: float | None = None

        def end(status: Status, **fields: Any) -> End:
            return End(
                status=status,
                duration_ms=(time.monotonic() - started) * 1000,
                truncated={k: v for k, v in process.dropped.items() if v},
                **fields,
            )

        try:
            # Bounded too: a kernel that stopped reading its channel must not hang the caller.
            send_limit = None if deadline is None else max(0.1, deadline - time.monotonic())
            async with asyncio.timeout(send_limit):
                await process.send({"op": "execute", "id": execution_id, "code": code})
        except (TimeoutError, ConnectionError):
            process.kill()
            await self._restart()
            yield end(
                "timeout" if timeout is not None else "killed",
                execution_count=None,
                state_lost=True,
                message="the session did not accept the code; it was restarted and its state "
                "was lost",
            )
            return

        while True:
            now = time.monotonic()
            wait_until = kill_at if kill_at is not None else deadline
            if self._interrupt_requested and kill_at is None:
                kill_at = now + self.interrupt_grace
                wait_until = kill_at
            item = await process.next_item(None if wait_until is None else max(0, wait_until - now))
            if item is None:
                if kill_at is None:  # the wall-clock limit: interrupt first
                    timed_out = True
                    process.interrupt()
                    kill_at = time.monotonic() + self.interrupt_grace
                    continue
                # The interrupt did not land (a long C call, or code that swallows it): kill.
                process.kill()
                await self._restart()
                status: Status = "timeout" if timed_out else "interrupted"
                yield end(
                    status,
                    execution_count=None,
                    state_lost=True,
                    message=self._timeout_message(timeout, timed_out, killed=True),
                )
                return
            if isinstance(item, tuple):
                stream, text = item
                yield Stdout(text) if stream == "stdout" else Stderr(text)
            elif isinstance(item, _Exited):
                yield await self._died(process, oom_before, end)
                return
            elif item.get("id") != execution_id:
                continue  # buffered before this execution began: it belongs to an earlier one
            else:
                event = item.get("ev")
                if event == "result":
                    result = frames.parse_result(item)
                    if result is not None:
                        yield result
                elif event == "error":
                    yield frames.parse_error(item)
                elif event == "done":
                    done = frames.parse_done(item)
                    status = "timeout" if timed_out else done.status
                    message = (
                        self._timeout_message(timeout, True, killed=False) if timed_out else ""
                    )
                    yield end(
                        status,
                        execution_count=done.execution_count,
                        files=done.files,
                        message=message or lost_while_idle,
                        state_lost=bool(lost_while_idle),
                    )
                    return

    @staticmethod
    def _timeout_message(timeout: float | None, timed_out: bool, *, killed: bool) -> str:
        if not timed_out:
            return (
                "the execution was cancelled and did not stop within the grace period; "
                "the session was restarted and its state was lost"
                if killed
                else "the execution was cancelled"
            )
        text = f"the execution exceeded its {timeout:g} s time limit"
        if killed:
            return (
                text + " and did not stop when interrupted; the session was restarted and "
                "its state was lost (raise `timeout` for longer work)"
            )
        return (
            text + " and was interrupted; the session kept its state (raise `timeout` for "
            "longer work)"
        )

    async def _died(self, process: KernelProcess, oom_before: int, end: Any) -> End:
        if self._closed:
            return end(  # type: ignore[no-any-return]
                "killed",
                execution_count=None,
                state_lost=True,
                message="the session was closed during the execution",
            )
        try:
            async with asyncio.timeout(5):
                status = await asyncio.shield(process.exit_status)
        except TimeoutError:
            process.kill()
            status = 9
        sig, code = _describe_exit(status)
        oom = self.cgroup is not None and self.cgroup.oom_kills() > oom_before
        await self._restart()
        if oom:
            limit = self.policy.limits.memory // (1024 * 1024)
            return end(  # type: ignore[no-any-return]
                "oom",
                execution_count=None,
                state_lost=True,
                signal=sig,
                message=f"the session ran out of memory (limit {limit} MiB) and was restarted; "
                "its state was lost",
            )
        return end(  # type: ignore[no-any-return]
            "killed",
            execution_count=None,
            state_lost=True,
            signal=sig,
            exit_code=code,
            message=(
                f"the session was killed by signal {sig}"
                if sig
                else f"the session's interpreter exited with code {code}"
            )
            + " and was restarted; its state was lost",
        )

    async def run(self, code: str, timeout: float | None = 60.0) -> Execution:
        """Run `code` and return everything it produced."""
        execution = Execution()
        async for event in self.execute(code, timeout):
            execution.add(event)
        return execution

    async def interrupt(self) -> None:
        """Interrupt the running execution; it ends as `interrupted` and the state survives."""
        if self.process is not None and self._lock.locked():
            self._interrupt_requested = True
            self.process.interrupt()

    # -- files ----------------------------------------------------------------------------------

    async def upload(self, name: str, data: bytes) -> str:
        """Write a file into /mnt/data; returns the path sandboxed code sees."""
        self._check_open()
        return await asyncio.to_thread(self.workspace.write, name, data)

    async def download(self, name: str, max_bytes: int | None = None) -> bytes:
        self._check_open()
        return await asyncio.to_thread(self.workspace.read, name, max_bytes)

    async def list_files(self) -> list[WorkspaceFile]:
        self._check_open()
        return await asyncio.to_thread(self.workspace.list_files)

    async def delete_file(self, name: str) -> None:
        self._check_open()
        await asyncio.to_thread(self.workspace.delete, name)

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed(f"session {self.id} is closed")

    # -- the rest -------------------------------------------------------------------------------

    def stats(self) -> SessionStats:
        group = self.cgroup
        return SessionStats(
            memory_peak_bytes=group.peak_memory() if group else 0,
            memory_current_bytes=group.current_memory() if group else 0,
            cpu_seconds=group.cpu_time() if group else 0.0,
            processes=group.process_count() if group else 0,
            workspace_bytes=self.workspace.used_bytes(),
            executions=self.executions,
            restarts=self.restarts,
        )

    async def warm(self) -> None:
        """Take the execution path once, invisibly, so the first real one is fast (pooled
        sessions are warmed before they are handed out)."""
        await self.ping(op="warm")

    async def ping(self, op: str = "ping") -> None:
        """A bare round trip to the kernel, without running code."""
        if self._lock.locked():
            raise Conflict("session is busy")
        async with self._lock:
            process = self.process
            if process is None or process.exit_status.done():
                raise SessionDied("session is not running")
            ping_id = process.start_execution()
            await process.send({"op": op, "id": ping_id})
            deadline = time.monotonic() + 10
            output: list[Item] = []  # written between executions: kept for the next one
            try:
                while True:
                    item = await process.next_item(max(0.0, deadline - time.monotonic()))
                    if item is None or isinstance(item, _Exited):
                        raise SessionDied("session did not answer")
                    if isinstance(item, dict) and item.get("ev") == "pong":
                        return
                    output.append(item)
            finally:
                process.put_back(output)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._background):
            task.cancel()
        if self.process is not None:
            await self.process.close()
            self.process = None
        await self._releaser(self)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

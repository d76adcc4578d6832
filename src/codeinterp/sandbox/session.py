"""A session as the host holds it: one jailed kernel, its workspace, limits and statistics.

A `Session` outlives its processes: when the code times out past its grace period, runs out of
memory or kills its interpreter, the host starts a new process on the same workspace, uid and
cgroup, and the execution's `End` says that state was lost.

One execution runs at a time (a lock serialises them). While it runs, three sources feed one
ordered buffer: the stdout pipe, the stderr pipe and the framed channel. Pipes are drained before
each channel frame is handled, so output and results keep the order the code produced them in.

Untrusted code shares the kernel's process, so every frame is hostile input (channel.py,
frames.py). The host reads one session's channel within bounds: frames of at most
MAX_KERNEL_FRAME bytes, each checked strictly, any other ending the session; nothing kept from
frames written while no execution runs; per execution, budgets for output and results past
which data is dropped with a marker; and a share of the server's CPU (`KernelProcess._charge`),
measured frame by frame, past which the reader pauses so the kernel waits. Which files changed
is listed by the host from the workspace itself.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Literal, Protocol

from codeinterp.background import BackgroundTasks
from codeinterp.errors import (
    Conflict,
    QuotaExceeded,
    SessionClosed,
    SessionDied,
    SnapshotFailed,
)

from . import frames
from .cgroups import SessionCgroup
from .channel import (
    JSON_START,
    MAX_KERNEL_FRAME,
    TAG_BLOB,
    TAG_PART,
    TAG_STDERR,
    TAG_STDOUT,
    ProtocolError,
    decode_object,
    encode,
    read_message,
    read_size,
    split_part,
)
from .events import End, Error, Event, Execution, FileChange, Result, Status, Stderr, Stdout
from .frames import Done, FrameError, Pong, Reply, Saved
from .policy import SandboxPolicy
from .workspace import FileReader, Snapshot, Workspace, WorkspaceFile, diff_workspace
from .zygote_client import SpawnedProcess

log = logging.getLogger("codeinterp.sandbox")

READ_CHUNK = 65536
MAX_PENDING_FRAMES = 64
INTERRUPT_RESEND_SECONDS = 0.05  # an interrupt not answered yet is sent again this often
MAX_REPORTED_CHANGES = 1000  # files listed in one End; the rest are counted in `truncated`
INLINE_SNAPSHOT_INODES = 16  # a workspace this small is listed on the event loop, not in a thread

# What one session's channel may cost the server, in host CPU seconds: measured for each frame
# handled, plus an estimate for reading its bytes (see KernelProcess._charge).
EXECUTION_CPU = 0.25  # per execution, at full speed
FLOOD_SHARE = 0.1  # past that, at most this share of one CPU: the reader pauses in between
IDLE_CPU = 0.02  # for frames written while nothing runs, refilled at IDLE_REFILL; past it the
IDLE_REFILL = 0.01  # session is killed (CPU seconds per second)
SLICE_CPU = 0.002  # work in a row on one channel before the other sessions get the event loop
READ_COST_PER_BYTE = 1.5e-9  # seconds: the transport's copy and the reader's, not measured
READ_COST_PER_FRAME = 10e-6
BULK_COST_PER_BYTE = 20e-9  # the allowance for bytes the host asked for: ~3x what reading costs
DEFAULT_SNAPSHOT_BYTES = 4 * 1024**3  # a snapshot's size when the caller names none


@dataclass
class SessionStats:
    memory_peak_bytes: int
    memory_current_bytes: int
    cpu_seconds: float
    processes: int
    workspace_bytes: int
    executions: int
    restarts: int
    # Frames the kernel wrote to its channel while no code ran: dropped unread.
    idle_frames_dropped: int = 0


class _Exited:
    """Marks the end of the channel: the kernel process is gone."""


_EXITED = _Exited()


class _Output:
    """Text of one stream. While the consumer is behind, the pieces that follow join the item
    still waiting, so many small writes make few events, not one each."""

    __slots__ = ("_pieces", "stream")

    def __init__(self, stream: str, text: str) -> None:
        self.stream = stream
        self._pieces = [text]

    def add(self, text: str) -> None:
        # Merge while the newest piece is the longer: the list stays short and each character
        # is copied a few times at most (as many as the list has halvings).
        pieces = self._pieces
        pieces.append(text)
        while len(pieces) > 1 and len(pieces[-1]) >= len(pieces[-2]):
            last = pieces.pop()
            pieces[-1] += last

    @property
    def text(self) -> str:
        return "".join(self._pieces)


Item = _Output | Reply | _Exited


class _Flood(Exception):
    """Frames written while no code runs, past what the host allows for them."""


class KernelProcess:
    """One live kernel: the channel, the two output pipes and the exit status when it dies."""

    def __init__(self, spawned: SpawnedProcess, output_cap: int, results_cap: int) -> None:
        self.pid = spawned.pid
        self.init_pid = spawned.init_pid
        self.channel = spawned.channel
        self.stdout_fd = spawned.stdout_fd
        self.stderr_fd = spawned.stderr_fd
        self.spawn_timings = spawned.timings
        self.output_cap = output_cap
        self.results_cap = results_cap
        self.execution_id = 0  # frames of any other execution are stale and dropped
        # What the channel may bring now: an execution's frames, a ping's answer, or nothing
        # (frames written while nothing runs are dropped unread, and counted).
        self.expecting: Literal["execute", "ping", "snapshot"] | None = None
        # Where a snapshot's bytes go while one is taken (see Session.snapshot).
        self.blob_sink: Callable[[memoryview], None] | None = None
        self.results_bytes = 0
        # Long values of the next result or error, arriving as part frames: key -> decoder and
        # the text so far (dropped, keys kept, once the results budget is spent).
        self._parts: dict[str, tuple[codecs.IncrementalDecoder, list[str]]] = {}
        self._parts_bytes = 0
        self._parts_dropped = False
        # The host CPU this channel may still use (see _charge).
        self._credit = EXECUTION_CPU
        self._idle_credit = IDLE_CPU
        self._idle_since = time.monotonic()
        self._debt = 0.0  # seconds to pause before reading on
        self._slice = 0.0  # seconds of work since the event loop last had a turn
        self.cpu_seconds = 0.0  # charged to this channel so far
        self.idle_frames_dropped = 0
        self.idle_bytes_dropped = 0
        self.violation: str | None = None  # why the host killed this kernel, if it did
        self._failure_logged = False
        self.exit_status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._buffer: deque[Item] = deque()
        self._has_items = asyncio.Event()
        self._woken = False
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
        self.restored: dict[str, Any] | None = None  # what a restore brought back (frames.py)

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
        if message is not None:
            self.start_timings = {**self.spawn_timings, **frames.parse_timings(message)}
            self.restored = frames.parse_restored(message)
        if message is None or message.get("ev") != "ready":
            detail = (
                str(message.get("error"))[:4000] if message else "the session exited while starting"
            )
            if message is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        status = await asyncio.shield(self.exit_status)
                    detail += f" (wait status {status})"
            self._drain_pipe("stderr")
            stderr = "".join(i.text for i in self._buffer if isinstance(i, _Output))
            raise SessionDied(
                f"session failed to start: {detail}" + (f"\n{stderr}" if stderr else "")
            )
        self._pump = asyncio.create_task(self._pump_channel())

    # -- output buffering -----------------------------------------------------------------------

    def start_execution(
        self,
        expecting: Literal["execute", "ping", "snapshot"] = "execute",
        bulk_bytes: int = 0,
    ) -> int:
        """A new execution id, with fresh output counters and budgets. `bulk_bytes`: what the
        host asked the kernel to send (a snapshot), read at full speed on top of the usual
        allowance."""
        self.expecting = expecting
        self.execution_id += 1
        self.sent = {"stdout": 0, "stderr": 0}
        self.dropped = {"stdout": 0, "stderr": 0, "results": 0}
        self.results_bytes = 0
        self._parts, self._parts_bytes, self._parts_dropped = {}, 0, False
        self._credit, self._debt = EXECUTION_CPU + bulk_bytes * BULK_COST_PER_BYTE, 0.0
        self._woken = False  # a wake is for the execution it was made in
        return self.execution_id

    def _stop_expecting(self) -> None:
        self.expecting = None
        self._idle_credit, self._idle_since = IDLE_CPU, time.monotonic()

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

    def _accept_output(self, stream: str, data: bytes | memoryview, source: str) -> None:
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
            last = self._buffer[-1] if self._buffer else None
            if isinstance(last, _Output) and last.stream == stream:
                last.add(text)
            else:
                self._push(_Output(stream, text))

    def _accept_result(self, size: int) -> bool:
        """Count a result against the cap; past it, results are dropped with one marker."""
        if self.results_bytes + size <= self.results_cap:
            self.results_bytes += size
            return True
        self._drop_result(size)
        return False

    def _drop_result(self, size: int) -> None:
        if not self.dropped["results"]:
            limit = self.results_cap // (1024 * 1024)
            marker = f"[results truncated: over the {limit} MiB limit for one execution]"
            self._push(Reply(self.execution_id, Result({"text/plain": marker})))
            self._frames += 1
        self.dropped["results"] += size

    async def _pump_channel(self) -> None:
        assert self._reader is not None
        reader = self._reader
        try:
            while True:
                size = await read_size(reader)
                self._drain_pipe("stdout")
                self._drain_pipe("stderr")
                if size is None:
                    break
                if self.expecting is None or size > MAX_KERNEL_FRAME:
                    await self._skip(size)
                    continue
                body = await reader.readexactly(size)
                started = time.thread_time()
                self._handle(body)
                spent = time.thread_time() - started
                pause = self._charge(spent + READ_COST_PER_FRAME + size * READ_COST_PER_BYTE)
                if pause is not None:
                    await asyncio.sleep(pause)
                if self._frames >= MAX_PENDING_FRAMES:
                    self._has_room.clear()
                    await self._has_room.wait()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass  # the kernel died part way through a frame
        except (ProtocolError, FrameError) as exc:
            self._violated(f"it wrote an invalid frame to its channel ({exc})")
        except _Flood as exc:
            self._violated(str(exc))
        except (OSError, ValueError, RecursionError):
            pass  # a broken channel ends the session like a dead one
        finally:
            self._push(_EXITED)

    def _violated(self, reason: str) -> None:
        """Kill the kernel for what it wrote to the channel; the session restarts and says so."""
        self.violation = reason
        log.warning("session process %s: %s; killing it", self.pid, reason)
        self.kill()

    async def _skip(self, size: int) -> None:
        """Read a frame's body in slices and drop it undecoded: written while nothing runs, or
        over the frame limit. Only a JSON frame may be too large (it then counts as results
        dropped); any other is not a frame the kernel writes."""
        assert self._reader is not None
        expecting, first = self.expecting, True
        remaining = size
        pause = self._charge(READ_COST_PER_FRAME)
        while remaining or pause is not None:
            if pause is not None:
                await asyncio.sleep(pause)
            if not remaining:
                break
            chunk = min(remaining, READ_CHUNK)
            data = await self._reader.readexactly(chunk)
            remaining -= chunk
            if first and expecting is not None and data[0] != JSON_START:
                raise ProtocolError(f"a frame of {size} bytes that is not JSON")
            first = False
            pause = self._charge(chunk * READ_COST_PER_BYTE)
        if expecting == "execute":
            self._drop_result(size)
        else:
            self.idle_frames_dropped += 1
            self.idle_bytes_dropped += size

    def _charge(self, seconds: float) -> float | None:
        """Count host CPU against this channel's allowance; how long the reader must pause
        before it reads on (None: not at all).

        During an execution the channel has EXECUTION_CPU at full speed, then FLOOD_SHARE of
        one CPU: after each frame past the allowance the reader pauses for the time that keeps
        it to that share, so a flooding kernel blocks on its own socket. While nothing runs it
        has IDLE_CPU, refilled slowly; a kernel that goes past it is killed. Either way, after
        SLICE_CPU of work in a row the reader lets the event loop run other sessions.
        """
        self.cpu_seconds += seconds
        if self.expecting is None:
            now = time.monotonic()
            refill = (now - self._idle_since) * IDLE_REFILL
            self._idle_credit = min(IDLE_CPU, self._idle_credit + refill) - seconds
            self._idle_since = now
            if self._idle_credit < 0:
                raise _Flood(
                    f"it wrote {self.idle_frames_dropped} frames ({self.idle_bytes_dropped} "
                    "bytes) to its channel while no code was running"
                )
        else:
            self._credit -= seconds
            if self._credit < 0:
                self._debt -= self._credit * (1 / FLOOD_SHARE - 1)
                self._credit = 0.0
        self._slice += seconds
        if self._debt >= 0.001 or self._slice >= SLICE_CPU:
            pause, self._debt, self._slice = self._debt, 0.0, 0.0
            return pause
        return None

    def _handle(self, body: bytes) -> None:
        """One frame of at most MAX_KERNEL_FRAME bytes, while an execution or ping waits."""
        kind = body[0] if body else None
        if kind == JSON_START:
            message = decode_object(body)
            if message.get("ev") == "failed":  # the kernel's last words: it exits next
                if not self._failure_logged:
                    self._failure_logged = True
                    log.warning("session process %s failed: %.500s", self.pid, message)
                return
            self._accept_reply(frames.parse_message(message), len(body))
        elif kind in (TAG_STDOUT, TAG_STDERR):
            if self.expecting == "execute":
                stream = "stdout" if kind == TAG_STDOUT else "stderr"
                self._accept_output(stream, memoryview(body)[1:], "frame")
            else:
                self.idle_frames_dropped += 1
                self.idle_bytes_dropped += len(body)
        elif kind == TAG_BLOB:
            if self.expecting == "snapshot" and self.blob_sink is not None:
                self.blob_sink(memoryview(body)[1:])
            else:
                self.idle_frames_dropped += 1
                self.idle_bytes_dropped += len(body)
        elif kind == TAG_PART:
            key, data = split_part(body)
            if self.expecting == "execute":
                self._accept_part(key, data, len(body))
            else:
                self.idle_frames_dropped += 1
                self.idle_bytes_dropped += len(body)
        else:
            raise ProtocolError("a frame of no known kind")

    def _accept_part(self, key: str, data: memoryview, size: int) -> None:
        entry = self._parts.get(key)
        if entry is None:
            if len(self._parts) >= frames.MAX_PARTS:
                raise FrameError(f"more than {frames.MAX_PARTS} long values in one result")
            entry = self._parts[key] = (codecs.getincrementaldecoder("utf-8")("replace"), [])
        self._parts_bytes += size
        if self._parts_dropped:
            return
        if self.results_bytes + self._parts_bytes > self.results_cap:
            self._parts_dropped = True  # no room: drop the text, keep the keys to check
            for _, texts in self._parts.values():
                texts.clear()
            return
        entry[1].append(entry[0].decode(data))

    def _take_parts(self, keys: tuple[str, ...]) -> tuple[dict[str, str] | None, int]:
        """The long values a result or error frame names, and their size on the channel; None
        for the values if they were dropped. They must be exactly the parts that came."""
        if not keys and not self._parts:
            return {}, 0
        if set(keys) != self._parts.keys():
            raise FrameError("the parts a frame names are not the parts that came before it")
        values = None
        if not self._parts_dropped:
            values = {
                key: "".join(texts) + decoder.decode(b"", final=True)
                for key, (decoder, texts) in self._parts.items()
            }
        size = self._parts_bytes
        self._parts, self._parts_bytes, self._parts_dropped = {}, 0, False
        return values, size

    def _accept_reply(self, reply: Reply, size: int) -> None:
        payload = reply.payload
        if self.expecting in ("ping", "snapshot"):
            wanted = Pong if self.expecting == "ping" else Saved
            if isinstance(payload, wanted) and reply.id == self.execution_id:
                self._stop_expecting()
                self._push_reply(reply)
            return  # nothing else belongs to a ping or a snapshot
        if isinstance(payload, Saved):
            return
        if reply.id != self.execution_id or isinstance(payload, Pong):
            # Stale (a thread of an earlier execution), or forged without the current id:
            # dropped, and with it any parts that came before it.
            self._parts, self._parts_bytes, self._parts_dropped = {}, 0, False
            return
        values, parts_size = self._take_parts(reply.parts)
        if isinstance(payload, Done):
            for stream, count in payload.unsent.items():
                self.dropped[stream] += count  # held back by the kernel, past the cap
            self._stop_expecting()
        elif values is None or not self._accept_result(size + parts_size):
            if values is None:
                self._drop_result(size + parts_size)
            return  # every rich frame counts against one budget per execution
        elif isinstance(payload, Result):
            payload.data.update(values)
        elif isinstance(payload, Error):
            value = values.get("value", payload.value)
            error = Error(payload.name, value, values.get("traceback", payload.traceback))
            reply = replace(reply, payload=error)
        self._push_reply(reply)

    def _push_reply(self, reply: Reply) -> None:
        self._frames += 1
        self._push(reply)

    async def next_item(self, timeout: float | None) -> Item | None:
        """The next buffered item, or None when `timeout` seconds pass first or `wake` is
        called."""
        while not self._buffer:
            if self._woken:
                self._woken = False
                return None
            self._has_items.clear()
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the wait ends, and a cancelled caller would carry on.
                async with asyncio.timeout(timeout):
                    await self._has_items.wait()
            except TimeoutError:
                return None
        item = self._buffer.popleft()
        if isinstance(item, Reply):
            self._frames -= 1
            if self._frames < MAX_PENDING_FRAMES:
                self._has_room.set()
        return item

    async def reply(self, kind: type[Pong] | type[Saved], timeout: float) -> Reply | None:
        """The answer of `kind` to the request in flight (a ping, a snapshot); None if the
        kernel died or `timeout` passed first. Output written meanwhile (by threads) is kept
        for the next execution."""
        deadline = time.monotonic() + timeout
        output: list[Item] = []
        try:
            while True:
                item = await self.next_item(max(0.0, deadline - time.monotonic()))
                if item is None or isinstance(item, _Exited):
                    return None
                if isinstance(item, Reply) and isinstance(item.payload, kind):
                    return item
                output.append(item)
        finally:
            self.put_back(output)

    def wake(self) -> None:
        """Make the reader waiting in `next_item` look up now (an interrupt to attend to)."""
        self._woken = True
        self._has_items.set()

    def put_back(self, items: list[Item]) -> None:
        """Return items taken out of order to the front of the buffer."""
        for item in reversed(items):
            self._buffer.appendleft(item)
            if isinstance(item, Reply):
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
        """SIGINT to the REPL's main thread (never another thread of the code): the kernel
        holds it off while it sends a frame, so no frame is ever cut short."""
        if not self.exit_status.done():
            with contextlib.suppress(ProcessLookupError):
                _interrupt_thread(self.pid)

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


_libc = ctypes.CDLL(None, use_errno=True)


def _interrupt_thread(pid: int) -> None:
    """SIGINT to the main thread of process `pid` (tgkill), or to the process if the C library
    has no tgkill."""
    tgkill = getattr(_libc, "tgkill", None)
    if tgkill is None:
        os.kill(pid, signal.SIGINT)
    elif tgkill(pid, pid, signal.SIGINT) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))  # ProcessLookupError for ESRCH


def _restore_note(report: dict[str, Any] | None) -> str:
    """What the first execution after a restore tells its reader (a model, say) was not
    brought back, so that it can make those again; empty if everything was."""
    if not report or not (report["skipped"] or report["errors"]):
        return ""
    parts = []
    if report["skipped"]:
        names = ", ".join(f"{name} ({why})" for name, why in report["skipped"].items())
        parts.append(f"not saved, so not restored (make them again if needed): {names}")
    if report["errors"]:
        parts.append("could not be restored: " + "; ".join(report["errors"]))
    return "This session was restored from a snapshot; " + ". ".join(parts) + "."


def _describe_exit(status: int) -> tuple[int | None, int | None]:
    """(signal, exit_code) of the REPL, from its wait status."""
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status), None
    return None, os.waitstatus_to_exitcode(status)


Spawner = Callable[["Session"], Awaitable[KernelProcess]]


class SessionNetwork(Protocol):
    """A session's way out of its network namespace (the egress proxy's, egress/proxy.py)."""

    async def attach(self, pid: int) -> Callable[[], None]:
        """Called with the host pid of each new process of the session (its REPL), before any
        code runs there; returns what takes the way out away again."""

    async def close(self) -> None:
        """The session is over."""


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot written by `Session.snapshot`: its size, how many variables it holds, and
    (some of) the names it could not save, with why (the archive lists them all)."""

    bytes: int
    variables: int
    skipped: dict[str, str]


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
        network: SessionNetwork | None = None,
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
        self._background = BackgroundTasks()
        self._idle_frames_dropped = 0  # by the processes before this one
        self.restore_from: str | None = None  # a snapshot its first process starts from
        self.restore_report: dict[str, Any] | None = None  # what that restore brought back
        self._restore_note = ""  # what the first execution after a restore says was not restored
        self.network = network  # its way out (None: loopback only)
        self._network_detach: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        self.process = await self._spawner(self)
        self.restore_report = self.process.restored
        self._restore_note = _restore_note(self.restore_report)
        await self._attach_network()

    async def _restart(self) -> None:
        if self.process is not None:
            self._idle_frames_dropped += self.process.idle_frames_dropped
            await self._close_process()
        if self._closed:
            raise SessionClosed(f"session {self.id} was closed")
        self.restarts += 1
        self.process = await self._spawner(self)
        await self._attach_network()

    async def _attach_network(self) -> None:
        """Give a new process's network namespace its way out (the hook's), before any code."""
        if self.network is None or self.process is None:
            return
        try:
            self._network_detach = await self.network.attach(self.process.pid)
        except BaseException:
            await self._close_process()
            raise

    async def _close_process(self) -> None:
        if self._network_detach is not None:
            self._network_detach()
            self._network_detach = None
        if self.process is not None:
            await self.process.close()
        self.process = None

    # -- executing ------------------------------------------------------------------------------

    async def execute(
        self, code: str, timeout: float | None = 60.0, *, stdin: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """Run `code`; yields output as it happens and ends with exactly one `End` event.
        `stdin`: what the code reads on its standard input (otherwise it reads end of file).

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
            async for event in self._execute_locked(code, timeout, stdin):
                ended = isinstance(event, End)
                yield event
        finally:
            if ended or self.process is None:
                self._lock.release()
            else:
                # The caller went away mid-execution: stop the code without blocking them, and
                # keep the session locked until it has stopped.
                self._background.start(self._abandon())

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
                isinstance(item, Reply)
                and isinstance(item.payload, Done)
                and item.id == process.execution_id
            ):
                return
        await self._restart()

    async def _execute_locked(
        self, code: str, timeout: float | None, stdin: str | None
    ) -> AsyncIterator[Event]:
        # From here on an interrupt is this execution's, even one that comes before the code
        # has started (see the resends below).
        self._interrupt_requested = False
        # An interpreter that died while idle (its zygote was killed, say) is replaced now; the
        # code runs in the new one and the End says that the earlier state is gone.
        lost_while_idle = ""
        if self.process is not None and self.process.exit_status.done():
            sig, code_ = _describe_exit(self.process.exit_status.result())
            how = f"was killed by signal {sig}" if sig else f"exited with code {code_}"
            if self.process.violation:
                how = f"was killed because {self.process.violation}"
            lost_while_idle = (
                f"the session's interpreter {how} while idle and was restarted before this "
                "execution; its earlier state was lost"
            )
        if self.process is None or self.process.exit_status.done():
            await self._restart()
        process = self.process
        assert process is not None
        before = await self._snapshot()
        started = time.monotonic()
        self.last_used = started
        self.executions += 1
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
                await process.send(
                    {
                        "op": "execute",
                        "id": execution_id,
                        "code": code,
                        "output_cap": process.output_cap,
                        **({} if stdin is None else {"stdin": stdin}),
                    }
                )
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

        resend_at: float | None = None
        while True:
            now = time.monotonic()
            wait_until = kill_at if kill_at is not None else deadline
            if self._interrupt_requested:
                if kill_at is None:
                    kill_at = now + self.interrupt_grace
                # The kernel ignores SIGINT until the code starts: one sent before then is
                # lost, so it is sent again now and then until the execution ends.
                if resend_at is None:
                    resend_at = now + INTERRUPT_RESEND_SECONDS
                elif now >= resend_at:  # on time, whatever output keeps the loop busy meanwhile
                    process.interrupt()
                    resend_at = now + INTERRUPT_RESEND_SECONDS
                wait_until = min(kill_at, resend_at)
            item = await process.next_item(None if wait_until is None else max(0, wait_until - now))
            attend = kill_at is None or time.monotonic() < kill_at
            if item is None and self._interrupt_requested and attend:
                continue  # an interrupt came, or it is time to send it again
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
            if isinstance(item, _Output):
                yield Stdout(item.text) if item.stream == "stdout" else Stderr(item.text)
            elif isinstance(item, _Exited):
                yield await self._died(process, oom_before, end)
                return
            elif item.id != execution_id:
                continue  # buffered before this execution began: it belongs to an earlier one
            elif isinstance(item.payload, Result | Error):
                yield item.payload
            elif isinstance(item.payload, Done):
                done = item.payload
                status = "timeout" if timed_out else done.status
                message = self._timeout_message(timeout, True, killed=False) if timed_out else ""
                files = self._changes(before, await self._snapshot())
                if len(files) > MAX_REPORTED_CHANGES:
                    process.dropped["files"] = len(files) - MAX_REPORTED_CHANGES
                notes = (message, lost_while_idle, self._restore_note)
                self._restore_note = ""
                yield end(
                    status,
                    execution_count=done.execution_count,
                    files=files[:MAX_REPORTED_CHANGES],
                    message=" ".join(note for note in notes if note),
                    state_lost=bool(lost_while_idle),
                )
                return

    async def _snapshot(self) -> Snapshot:
        """The workspace's files now, as the host sees them: listed on the event loop when it
        holds a handful of entries (a thread costs more), in a thread otherwise."""
        workspace = self.workspace
        try:
            if workspace.mounted:
                used = workspace.used_inodes()
                if used <= 1:
                    return {}  # only the root directory
                if used <= INLINE_SNAPSHOT_INODES:
                    return workspace.snapshot()
            return await asyncio.to_thread(workspace.snapshot)
        except OSError:
            return {}  # the workspace is being removed with the session

    def _changes(self, before: Snapshot, after: Snapshot) -> tuple[FileChange, ...]:
        if not before and not after:
            return ()
        return tuple(
            FileChange(c["path"], c["name"], c["size"], c["change"])
            for c in diff_workspace(before, after, self.workspace.visible_path)
        )

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
        violation = process.violation
        await self._restart()
        if violation:
            return end(  # type: ignore[no-any-return]
                "killed",
                execution_count=None,
                state_lost=True,
                signal=sig,
                message=f"the session was killed because {violation}; it was restarted and "
                "its state was lost",
            )
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

    async def run(
        self, code: str, timeout: float | None = 60.0, *, stdin: str | None = None
    ) -> Execution:
        """Run `code` and return everything it produced."""
        execution = Execution()
        async for event in self.execute(code, timeout, stdin=stdin):
            execution.add(event)
        return execution

    async def interrupt(self) -> bool:
        """Interrupt the running execution; it ends as `interrupted` and the state survives.
        Whether an execution was running (or about to: it is interrupted as it starts)."""
        if self.process is None or not self._lock.locked():
            return False
        self._interrupt_requested = True
        self.process.interrupt()
        self.process.wake()
        return True

    # -- files ----------------------------------------------------------------------------------

    async def upload(self, name: str, data: bytes) -> str:
        """Write a file into /mnt/data; returns the path sandboxed code sees."""
        self._check_open()
        return await asyncio.to_thread(self.workspace.write, name, data)

    async def download(self, name: str, max_bytes: int | None = None) -> bytes:
        self._check_open()
        return await asyncio.to_thread(self.workspace.read, name, max_bytes)

    async def open_file(self, name: str, max_bytes: int | None = None) -> FileReader:
        """A file of /mnt/data to stream out in chunks (`reader.chunks()`), refused with
        QuotaExceeded if its apparent size is over `max_bytes`. The caller closes it."""
        self._check_open()
        return await asyncio.to_thread(self.workspace.open_reader, name, max_bytes)

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
            idle_frames_dropped=self._idle_frames_dropped
            + (self.process.idle_frames_dropped if self.process else 0),
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
            ping_id = process.start_execution("ping")
            await process.send({"op": op, "id": ping_id})
            if await process.reply(Pong, 10) is None:
                raise SessionDied("session did not answer")

    async def snapshot(
        self, path: str, max_bytes: int | None = None, timeout: float = 300.0
    ) -> SnapshotInfo:
        """Write this session's state (variables, files, execution count, history; see
        snapshot.py) to a new file at `path`, as an archive the kernel makes inside the jail
        and this side stores unread. Waits for a running execution to end. QuotaExceeded past
        `max_bytes`, SnapshotFailed if the kernel could not make it: then no file is left."""
        if self._closed:
            raise SessionClosed(f"session {self.id} is closed")
        limit = DEFAULT_SNAPSHOT_BYTES if max_bytes is None else max_bytes
        async with self._lock:
            process = self.process
            if process is None or process.exit_status.done():
                raise SessionDied("session is not running")
            partial = f"{path}.partial"
            out = open(partial, "xb")  # noqa: SIM115 (closed below, on every path)
            try:
                with out:
                    written, saved = await self._save(process, out, limit, timeout)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise
            if saved.status != "ok" or written != saved.bytes:
                os.unlink(partial)
                if saved.status == "too_large":
                    raise QuotaExceeded(
                        f"could not save the session's state: it is over {limit} bytes"
                    )
                why = saved.error or f"{written} bytes came, the kernel says it sent {saved.bytes}"
                raise SnapshotFailed(f"could not save the session's state: {why}")
            os.rename(partial, path)
            return SnapshotInfo(written, saved.saved, dict(saved.skipped))

    @staticmethod
    async def _save(
        process: KernelProcess, out: BinaryIO, limit: int, timeout: float
    ) -> tuple[int, Saved]:
        """Ask `process` for its snapshot and write the bytes to `out` as they come; the byte
        count and the kernel's last word. A kernel that sends more than `limit` bytes, dies or
        hangs is killed (SessionDied): the next use of the session restarts it."""
        written = 0

        def sink(data: memoryview) -> None:
            nonlocal written
            written += len(data)
            if written <= limit:
                out.write(data)
            elif process.violation is None:  # an honest kernel stops at the limit itself
                process._violated(f"it sent a snapshot of over {limit} bytes")

        process.blob_sink = sink
        snapshot_id = process.start_execution("snapshot", bulk_bytes=limit)
        try:
            await process.send({"op": "snapshot", "id": snapshot_id, "max_bytes": limit})
            reply = await process.reply(Saved, timeout)
        finally:
            process.blob_sink = None
            if process.expecting == "snapshot":
                process._stop_expecting()
        if reply is None or not isinstance(reply.payload, Saved):
            process.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.shield(process.exit_status)
            why = process.violation or "it died or did not answer"
            raise SessionDied(f"the session's state could not be saved: {why}")
        return written, reply.payload

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._background:
            task.cancel()
        await self._close_process()
        if self.network is not None:
            await self.network.close()
        await self._releaser(self)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

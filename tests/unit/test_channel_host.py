"""The host's side of a session channel, on a real socket pair without a jail: what the kernel
writes comes back whole, and frames the kernel never writes are dropped, counted or end the
session, within the channel's budgets.

The "kernel" end is written by the test: with the real `Kernel` object's senders where the
kernel's own frames are wanted, by hand for hostile ones. The process the host would kill is a
real `sleep`, so a kill is observable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from codeinterp.sandbox.channel import (
    MAX_KERNEL_FRAME,
    TAG_STDERR,
    TAG_STDOUT,
    encode,
    encode_output,
    encode_part,
)
from codeinterp.sandbox.events import Error, Result
from codeinterp.sandbox.frames import Done, Pong, Reply
from codeinterp.sandbox.kernel import INLINE_CHARS, Kernel
from codeinterp.sandbox.session import (
    EXECUTION_CPU,
    FLOOD_SHARE,
    IDLE_CPU,
    Item,
    KernelProcess,
    _Exited,
    _Output,
)
from codeinterp.sandbox.zygote_client import SpawnedProcess


@dataclass
class Channel:
    process: KernelProcess
    kernel: socket.socket  # the kernel's end, non-blocking
    child: asyncio.subprocess.Process

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.kernel, data)

    async def items(self, timeout: float = 5.0) -> list[Item]:
        """Everything the host hands on, up to the end of the execution (or of the kernel)."""
        found: list[Item] = []
        deadline = time.monotonic() + timeout
        while True:
            item = await self.process.next_item(max(0.0, deadline - time.monotonic()))
            assert item is not None, f"nothing more within {timeout} s; so far {found}"
            found.append(item)
            if isinstance(item, _Exited) or (
                isinstance(item, Reply) and isinstance(item.payload, Done | Pong)
            ):
                return found


def frame(message: dict[str, Any]) -> bytes:
    return encode(message)


def done(execution_id: int, **fields: Any) -> bytes:
    return frame(
        {"ev": "done", "id": execution_id, "status": "ok", "execution_count": 1, "unsent": {}}
        | fields
    )


def text_of(items: list[Item], stream: str = "stdout") -> str:
    return "".join(i.text for i in items if isinstance(i, _Output) and i.stream == stream)


def payloads(items: list[Item]) -> list[Any]:
    return [i.payload for i in items if isinstance(i, Reply)]


@pytest_asyncio.fixture
async def channel() -> AsyncIterator[Channel]:
    async with open_channel() as opened:
        yield opened


class open_channel:  # used as `async with open_channel(...)`
    def __init__(self, output_cap: int = 1000, results_cap: int = 100_000) -> None:
        self.output_cap, self.results_cap = output_cap, results_cap

    async def __aenter__(self) -> Channel:
        host, kernel = socket.socketpair()
        kernel.setblocking(False)
        out_r, self.out_w = os.pipe()
        err_r, self.err_w = os.pipe()
        child = await asyncio.create_subprocess_exec("sleep", "60")
        spawned = SpawnedProcess(child.pid, 0, host, out_r, err_r)
        process = KernelProcess(spawned, self.output_cap, self.results_cap)

        def exited(task: asyncio.Task[int]) -> None:
            code = task.result()
            process.on_exit(-code if code < 0 else code << 8)  # as a wait status

        self.waiter = asyncio.ensure_future(child.wait())
        self.waiter.add_done_callback(exited)
        await process.open()
        self.channel = Channel(process, kernel, child)
        await self.channel.write(frame({"ev": "ready", "timings": {"jail": 1.0}}))
        await process.wait_ready(5)
        return self.channel

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.process.close()
        self.channel.kernel.close()
        os.close(self.out_w)
        os.close(self.err_w)
        await self.waiter


# -- what the kernel writes comes back whole ---------------------------------------------------


@pytest.fixture
def kernel_end() -> Any:
    """A real Kernel (without a shell: only its senders are used) on a fresh socket pair."""
    made: list[Kernel] = []

    def make(sock: socket.socket, execution_id: int, output_cap: int = 10**9) -> Kernel:
        kernel = Kernel(None, sock)  # type: ignore[arg-type]
        kernel._execution_id = execution_id
        kernel._output_cap = output_cap
        made.append(kernel)
        return kernel

    yield make
    Kernel.current = None


async def test_output_a_result_and_an_error_from_the_kernel_arrive_whole(kernel_end: Any) -> None:
    """Long output split across frames (a character cut in two between them), a result with
    long text, a JSON value and metadata, and an error with a long traceback: as sent."""
    async with open_channel(output_cap=10**9, results_cap=10**9) as channel:
        execution_id = channel.process.start_execution()
        sock = socket.socket(fileno=os.dup(channel.kernel.fileno()))
        sock.setblocking(True)
        kernel = kernel_end(sock, execution_id)
        output = "é" + "a" * MAX_KERNEL_FRAME + "😀" * 40_000
        html = "<p>" + "ü" * 200_000 + "</p>"
        traceback = "Traceback\n" + "frame\n" * 10_000

        def send() -> None:
            kernel.send_output("stdout", output)
            kernel.send_output("stderr", "warn\n")
            kernel.send_result(
                "display_data",
                {"text/html": html, "text/plain": "<HTML>", "application/json": {"k": [1]}},
                {"width": 3},
            )
            kernel.report_error("ValueError", "bad", traceback)
            kernel.sock.sendall(done(execution_id))

        sender = asyncio.create_task(asyncio.to_thread(send))
        items = await channel.items()
        await sender
        sock.close()
    assert text_of(items) == output
    assert text_of(items, "stderr") == "warn\n"
    result, error, end = payloads(items)
    assert result == Result(
        {"text/plain": "<HTML>", "application/json": {"k": [1]}, "text/html": html},
        {"width": 3},
        "display_data",
    )
    assert error == Error("ValueError", "bad", traceback)
    assert isinstance(end, Done)
    assert len(html) > INLINE_CHARS and len(traceback) > INLINE_CHARS  # both came as parts


async def test_the_kernel_holds_output_back_past_the_cap_and_says_how_much(
    kernel_end: Any,
) -> None:
    async with open_channel(output_cap=100) as channel:
        execution_id = channel.process.start_execution()
        sock = socket.socket(fileno=os.dup(channel.kernel.fileno()))
        kernel = kernel_end(sock, execution_id, output_cap=100)
        kernel.send_output("stdout", "x" * 150)
        kernel.send_output("stdout", "y" * 50)
        unsent = {k: v for k, v in kernel._output_unsent.items() if v}
        sock.sendall(done(execution_id, unsent=unsent))
        items = await channel.items()
        sock.close()
        assert text_of(items) == "x" * 100 + "\n[stdout truncated: over the 100 byte limit]\n"
        assert channel.process.dropped["stdout"] == 100  # every byte kept or counted


# -- hostile frames -----------------------------------------------------------------------------


async def test_frames_written_while_nothing_runs_are_dropped_unread(channel: Channel) -> None:
    """Output, results and even bytes that are not a frame at all, written between
    executions, are counted and dropped without being decoded."""
    await channel.write(encode_output(TAG_STDOUT, b"early"))
    await channel.write(
        frame(
            {
                "ev": "result",
                "id": 1,
                "type": "display_data",
                "data": {"text/plain": "forged"},
                "metadata": {},
            }
        )
    )
    await channel.write(b"\x00\x00\x00\x03[[[")
    await asyncio.sleep(0.2)
    execution_id = channel.process.start_execution()
    await channel.write(encode_output(TAG_STDOUT, b"mine"))
    await channel.write(done(execution_id))
    items = await channel.items()
    assert text_of(items) == "mine"
    assert payloads(items) == [Done("ok", 1, {})]
    assert channel.process.idle_frames_dropped == 3
    assert channel.process.violation is None


async def test_a_flood_while_nothing_runs_kills_the_kernel(channel: Channel) -> None:
    """Past its small allowance for frames written between executions, the kernel is killed
    and says why."""
    data = encode_output(TAG_STDOUT, b"x" * 100) * 200
    for _ in range(100):  # (the kernel killed, nothing reads the socket any more)
        if channel.process.violation:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.write(data), 0.5)
    items = await channel.items()
    assert isinstance(items[-1], _Exited)
    assert "while no code was running" in (channel.process.violation or "")
    assert (await asyncio.wait_for(channel.child.wait(), 5)) == -9


HOSTILE: dict[str, bytes] = {
    "unknown tag": b"\x00\x00\x00\x04\x07abc",
    "empty frame": b"\x00\x00\x00\x00",
    "JSON array": b"\x00\x00\x00\x06[1, 2]",
    "deep nesting": len(b"{" + b"[" * 50_000).to_bytes(4, "big") + b"{" + b"[" * 50_000,
    "stream as JSON": frame({"ev": "stream", "name": "stdout", "text": 12345}),
    "done listing files": frame(
        {
            "ev": "done",
            "id": 1,
            "status": "ok",
            "execution_count": 1,
            "unsent": {},
            "files": [{"name": "x"}],
        }
    ),
    "error value an int": frame({"ev": "error", "id": 1, "name": "E", "value": 1, "traceback": ""}),
    "parts never named": encode_part(b"text/html", b"<b>") + done(1),
    "parts that never came": frame(
        {
            "ev": "result",
            "id": 1,
            "type": "display_data",
            "data": {},
            "metadata": {},
            "parts": ["text/html"],
        }
    ),
    "oversized output": (MAX_KERNEL_FRAME + 1).to_bytes(4, "big")
    + b"\x01"
    + b"x" * MAX_KERNEL_FRAME,
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_frame_the_kernel_never_writes_ends_the_session(
    channel: Channel, data: bytes
) -> None:
    assert channel.process.start_execution() == 1
    await channel.write(data)
    items = await channel.items()
    assert isinstance(items[-1], _Exited)
    assert not [p for p in payloads(items) if isinstance(p, Done)]
    assert "invalid frame" in (channel.process.violation or "")
    assert "12345" not in text_of(items)
    assert (await asyncio.wait_for(channel.child.wait(), 5)) == -9


async def test_an_oversized_json_frame_counts_as_results_dropped(channel: Channel) -> None:
    """Only a JSON frame may be over the limit: it is read in slices, never decoded, and
    counted against the results budget with a marker."""
    execution_id = channel.process.start_execution()
    body = json.dumps(
        {
            "ev": "result",
            "id": execution_id,
            "type": "display_data",
            "data": {"text/plain": "x" * 5_000_000},
            "metadata": {},
        }
    ).encode()
    await channel.write(len(body).to_bytes(4, "big") + body)
    await channel.write(done(execution_id))
    items = await channel.items()
    [marker, end] = payloads(items)
    assert "results truncated" in marker.data["text/plain"]
    assert isinstance(end, Done)
    assert channel.process.dropped["results"] == len(body)
    assert channel.process.violation is None


async def test_results_past_the_budget_are_dropped_with_one_marker() -> None:
    async with open_channel(results_cap=50_000) as channel:
        execution_id = channel.process.start_execution()
        for _ in range(2):  # 2 x 40 KB of parts: the second does not fit
            await channel.write(encode_part(b"text/html", b"h" * 40_000))
            await channel.write(
                frame(
                    {
                        "ev": "result",
                        "id": execution_id,
                        "type": "display_data",
                        "data": {},
                        "metadata": {},
                        "parts": ["text/html"],
                    }
                )
            )
        small = {
            "ev": "result",
            "id": execution_id,
            "type": "display_data",
            "data": {"text/plain": "small"},
            "metadata": {},
        }
        await channel.write(frame(small))
        await channel.write(done(execution_id))
        items = await channel.items()
    results = [p for p in payloads(items) if isinstance(p, Result)]
    assert [r.data.get("text/html", r.data.get("text/plain"))[:5] for r in results] == [
        "hhhhh",
        "[resu",
        "small",
    ]
    assert channel.process.dropped["results"] > 40_000


async def test_frames_of_another_execution_or_a_ping_are_dropped(channel: Channel) -> None:
    """Stale ids are dropped; a ping takes its pong and nothing else."""
    execution_id = channel.process.start_execution()
    await channel.write(
        frame(
            {"ev": "error", "id": execution_id - 1, "name": "Stale", "value": "", "traceback": ""}
        )
    )
    await channel.write(done(execution_id + 5))
    await channel.write(done(execution_id))
    assert payloads(await channel.items()) == [Done("ok", 1, {})]
    ping_id = channel.process.start_execution("ping")
    await channel.write(encode_output(TAG_STDERR, b"noise"))
    await channel.write(done(ping_id))
    await channel.write(frame({"ev": "pong", "id": ping_id}))
    items = await channel.items()
    assert payloads(items) == [Pong()]
    assert text_of(items, "stderr") == ""
    assert channel.process.idle_frames_dropped == 1


async def test_past_its_allowance_an_execution_frames_wait_for_their_share(
    channel: Channel,
) -> None:
    """Once an execution has used its host CPU allowance, the reader pauses so that the
    channel gets at most FLOOD_SHARE of one CPU; within it, it only yields to other tasks."""
    channel.process.start_execution()
    assert channel.process._charge(EXECUTION_CPU) == 0.0  # a turn for the others, no pause
    assert channel.process._charge(0.01) == pytest.approx(0.01 * (1 / FLOOD_SHARE - 1))
    channel.process.start_execution()  # each execution starts with the whole allowance
    assert channel.process._charge(0.001) is None
    assert IDLE_CPU < EXECUTION_CPU

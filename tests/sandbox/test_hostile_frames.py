"""Sandboxed code writing its own frames to the kernel's channel: floods, frames sent while no
code runs, forged file lists and fields of the wrong type. None of it may cost the server more
than the session's share or reach the caller as if the kernel had said it.

The attacks write straight to the socket the kernel holds (`Kernel.current.sock`), from inside
the session, as any code could. Precise figures are in `bench/channel_flood.py`.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time

import pytest

from codeinterp.sandbox import Sandbox, Session
from codeinterp.sandbox.events import STATUSES

WRITE_FRAMES = """
import json, struct, time
from codeinterp.sandbox.kernel import Kernel
_sock = Kernel.current.sock
def frame(message):
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body
def send(data):
    _sock.sendall(data)
current_id = Kernel.current._execution_id
"""


def _host_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


FLOOD_FRAMES = {
    # 15 MB of text in each frame
    "15MB-stream-frames": "frame({'ev': 'stream', 'name': 'stdout', 'text': 'x' * 15_000_000})",
    # a few bytes in each, hundreds of frames per write
    "64B-stream-frames": "frame({'ev': 'stream', 'name': 'stdout', 'text': 'x' * 64}) * 500",
    # 4 MB of nested empty lists beside the text: slow to decode, large once decoded
    "4MB-nested-junk": "frame({'ev': 'stream', 'name': 'stdout', 'text': 'x',"
    " 'junk': [[]] * 1_300_000})",
    # raw output frames (a tag byte, then text), as the kernel writes its output
    "64B-output-frames": "(struct.pack('>I', 65) + b'\\x01' + b'x' * 64) * 500",
    "64KiB-output-frames": "struct.pack('>I', 65536) + b'\\x01' + b'x' * 65535",
}


@pytest.mark.parametrize("frames", FLOOD_FRAMES.values(), ids=FLOOD_FRAMES.keys())
async def test_stream_frame_flood_neither_stalls_another_session_nor_burns_the_host(
    sandbox: Sandbox, session: Session, frames: str
) -> None:
    """While one session writes stream frames to its channel as fast as it can for three
    seconds, another session's `1+1` still answers promptly, and the server spends a small
    part of one CPU on the flood."""
    flood = WRITE_FRAMES + (
        f"data = {frames}\n"
        "end = time.monotonic() + 3\n"
        "while time.monotonic() < end:\n    send(data)\n"
    )
    async with await sandbox.create_session() as other:
        assert (await other.run("1 + 1")).text == "2"
        cpu_before, started = _host_cpu(), time.monotonic()
        flooding = asyncio.create_task(session.run(flood, timeout=60))
        delays = []
        while not flooding.done():
            # From just before a short pause to the answer: a stalled event loop shows here
            # whether it stalls the pause or the round trip.
            t0 = time.monotonic()
            await asyncio.sleep(0.05)
            ex = await other.run("1 + 1", timeout=10)
            delays.append(time.monotonic() - t0 - 0.05)
            assert (ex.status, ex.text) == ("ok", "2")
        flooded = await flooding
        wall, cpu = time.monotonic() - started, _host_cpu() - cpu_before
    assert max(delays) < 0.5, f"slowest 1+1 beside the flood: {max(delays):.3f} s"
    # The server's whole process, the other session's round trips included.
    assert cpu < 0.35 * wall, f"server CPU {cpu:.2f} s in {wall:.2f} s"
    if flooded.status == "killed":  # cut short: the frames were not ones the kernel writes
        assert "invalid frame" in flooded.message, flooded.message
    else:  # the flood ran its course beside the other session
        assert flooded.status == "ok", (flooded.status, flooded.message)
        assert wall >= 3 and len(delays) >= 10, (wall, delays)
    assert len(flooded.stdout) <= session.policy.limits.output + 200
    assert (await session.run("1 + 1")).text == "2"


async def test_frames_written_between_executions_are_dropped_and_counted(
    session: Session,
) -> None:
    """A thread that writes frames after its execution has ended (output, a result and an end
    forged for the next execution) reaches nobody: the next execution shows only its own."""
    code = WRITE_FRAMES + (
        "import threading\n"
        "def later():\n"
        "    time.sleep(0.3)\n"
        "    send(frame({'ev': 'stream', 'name': 'stdout', 'text': 'LEAKED'}))\n"
        "    send(b'\\x00\\x00\\x00\\x07\\x01LEAKED')\n"
        "    send(frame({'ev': 'result', 'id': current_id + 1, 'type': 'display_data',\n"
        "                'data': {'text/plain': 'FORGED'}, 'metadata': {}}))\n"
        "    send(frame({'ev': 'done', 'id': current_id + 1, 'status': 'error',\n"
        "                'execution_count': 99}))\n"
        "threading.Thread(target=later).start()\n"
    )
    assert (await session.run(code)).status == "ok"
    await asyncio.sleep(1.0)
    after = await session.run("print('after')\n7 * 6")
    assert after.status == "ok", after.error
    assert after.stdout == "after\n"
    assert [r.data for r in after.results] == [{"text/plain": "42"}]
    assert after.execution_count != 99
    assert session.stats().idle_frames_dropped >= 4


async def test_a_flood_between_executions_gets_the_session_restarted(session: Session) -> None:
    """A thread that floods the channel once its execution has ended costs the server a small,
    fixed amount: the session is killed, and the next execution says why."""
    code = WRITE_FRAMES + (
        "import threading\n"
        "def later():\n"
        "    time.sleep(0.3)\n"
        "    data = frame({'ev': 'stream', 'name': 'stdout', 'text': 'x' * 1_000_000})\n"
        "    end = time.monotonic() + 3\n"
        "    while time.monotonic() < end:\n"
        "        send(data)\n"
        "threading.Thread(target=later, daemon=True).start()\n"
        "kept = 1\n"
    )
    assert (await session.run(code)).status == "ok"
    cpu_before = _host_cpu()
    await asyncio.sleep(2.0)
    assert _host_cpu() - cpu_before < 0.5
    after = await session.run("1 + 1")
    assert (after.status, after.text, after.state_lost) == ("ok", "2", True)
    assert "while no code was running" in after.message, after.message
    assert (await session.run("'kept' in dir()")).text == "False"


async def test_forged_done_naming_60000_files_reports_none_of_them(session: Session) -> None:
    """A forged end of execution listing 60,000 files (about 5 MB) gives the caller none of
    those names: the file list is the host's own account of /mnt/data."""
    code = WRITE_FRAMES + (
        "open('/mnt/data/real.txt', 'w').write('real')\n"
        "files = [{'path': f'/mnt/data/f{i}', 'name': f'f{i}', 'size': 1, 'change': 'created'}\n"
        "         for i in range(60_000)]\n"
        "send(frame({'ev': 'done', 'id': current_id, 'status': 'ok',\n"
        "            'execution_count': 1, 'files': files}))\n"
        "time.sleep(0.5)\n"
    )
    for _ in range(3):
        ex = await session.run(code, timeout=30)
        assert ex.status in STATUSES
        assert {f.name for f in ex.files} <= {"real.txt"}
    assert (await session.run("1 + 1")).text == "2"


async def test_forged_done_small_enough_to_read_names_no_forged_file(session: Session) -> None:
    """A forged end of execution that fits in one frame, naming 300 files that do not exist,
    gives the caller none of them either."""
    code = WRITE_FRAMES + (
        "files = [{'path': f'/mnt/data/g{i}', 'name': f'g{i}', 'size': 1, 'change': 'created'}\n"
        "         for i in range(300)]\n"
        "send(frame({'ev': 'done', 'id': current_id, 'status': 'ok',\n"
        "            'execution_count': 1, 'files': files}))\n"
        "time.sleep(0.5)\n"
    )
    ex = await session.run(code, timeout=30)
    assert ex.status in STATUSES
    assert not [f for f in ex.files if f.name.startswith("g")]
    assert (await session.run("1 + 1")).text == "2"


async def test_many_real_files_are_reported_up_to_a_bound(session: Session) -> None:
    """Code that really creates 3,000 files gets at most 1,000 of them listed; the rest are
    counted as left out."""
    ex = await session.run(
        "import os\nos.makedirs('/mnt/data/many')\n"
        "for i in range(3000):\n    open(f'/mnt/data/many/{i:05d}', 'w').close()",
        timeout=60,
    )
    assert ex.status == "ok", ex.error
    assert len(ex.files) == 1000
    assert all(f.change == "created" and f.name.startswith("many/") for f in ex.files)
    assert ex.truncated["files"] == 2000


@pytest.mark.parametrize(
    "text", [{"a": 1}, 12345, ["list"], None], ids=["dict", "int", "list", "null"]
)
async def test_stream_frame_with_text_that_is_not_a_string_is_rejected(
    session: Session, text: object
) -> None:
    """`text` that is not a string is never turned into output."""
    code = WRITE_FRAMES + (
        f"send(frame({{'ev': 'stream', 'name': 'stdout', 'text': {text!r}}}))\ntime.sleep(0.3)\n"
    )
    ex = await session.run(code, timeout=10)
    assert ex.status in STATUSES
    assert str(text) not in ex.stdout
    assert json.dumps(text) not in ex.stdout
    assert (await session.run("1 + 1")).text == "2"


async def test_large_results_and_output_arrive_whole(session: Session) -> None:
    """Long output and a large result (non-ASCII text split across frames) come back intact."""
    ex = await session.run(
        "from IPython.display import HTML, display\n"
        "text = ('é😀x' * 400_000)[:1_000_000]\n"
        "display(HTML(text))\n"
        "print('a' * 200_000 + 'é' * 100_000)\n"
        "len(text)",
        timeout=30,
    )
    assert ex.status == "ok", ex.error
    assert ex.results[0].data["text/html"] == ("é😀x" * 400_000)[:1_000_000]
    assert ex.stdout == "a" * 200_000 + "é" * 100_000 + "\n"
    assert ex.text == "1000000"


async def test_output_from_a_thread_never_corrupts_a_large_result(session: Session) -> None:
    """A thread printing while the main thread displays large results leaves every frame
    whole: all results arrive intact and the session keeps its state."""
    ex = await session.run(
        "import threading, time\n"
        "from IPython.display import HTML, display\n"
        "stop = False\n"
        "def chatter():\n"
        "    while not stop:\n"
        "        print('t' * 100)\n"
        "thread = threading.Thread(target=chatter)\nthread.start()\n"
        "for i in range(5):\n    display(HTML(str(i) * 2_000_000))\n"
        "stop = True\nthread.join()\nkept = 'yes'",
        timeout=60,
    )
    assert ex.status == "ok", (ex.status, ex.message, ex.error)
    assert [r.data["text/html"] for r in ex.results] == [str(i) * 2_000_000 for i in range(5)]
    printed = ex.stdout.split("\n[stdout truncated")[0]
    assert set(printed) <= {"t", "\n"}
    assert (await session.run("kept")).text == "'yes'"

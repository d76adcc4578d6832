"""The tunnels' byte relay (egress/relay.py) between real sockets on loopback, joined the way
the proxy joins them: a session's connection accepted, the one upstream made with the relay's
protocol, then `start` with what the session sent first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from codeinterp.egress import relay

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
WAIT = 10.0


@dataclass
class Tunnel:
    port: int  # where a "session" connects
    relays: list[relay.Relay] = field(default_factory=list)
    session_sides: list[asyncio.Transport] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)  # one entry per on_closed call
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def tunnel(target: Handler, first: bytes = b"", idle: float = 600.0) -> AsyncIterator[Tunnel]:
    """A listener whose connections are relayed to a server running `target`."""
    loop = asyncio.get_running_loop()
    upstream = await asyncio.start_server(target, "127.0.0.1", 0)
    upstream_port = upstream.sockets[0].getsockname()[1]
    joining: set[asyncio.Task[None]] = set()

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transport.pause_reading()  # as the proxy does until the relay starts
            number = len(made.relays)

            def on_closed() -> None:
                made.closed.append(number)
                made.ended.set()

            joined = relay.Relay(transport, relay.Idle(idle, lambda: joined.abort()), on_closed)
            made.relays.append(joined)
            made.session_sides.append(transport)

            async def join() -> None:
                await loop.create_connection(lambda: joined.server, "127.0.0.1", upstream_port)
                joined.start(first)

            task = loop.create_task(join())
            joining.add(task)
            task.add_done_callback(joining.discard)

    listener = await loop.create_server(Accepted, "127.0.0.1", 0)
    made = Tunnel(listener.sockets[0].getsockname()[1])
    try:
        yield made
    finally:
        listener.close()
        upstream.close()
        for joined in made.relays:
            joined.abort()


async def test_bytes_go_both_ways_the_first_bytes_first_and_an_end_passes_on() -> None:
    async def answer_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = await reader.read()  # until the session's end came through
        writer.write(b"got:" + received)
        writer.close()

    async with tunnel(answer_all, first=b"hello:") as made:
        reader, writer = await asyncio.open_connection("127.0.0.1", made.port)
        writer.write(b"world")
        writer.write_eof()  # half-closed: the answer still comes back
        assert await asyncio.wait_for(reader.read(), WAIT) == b"got:hello:world"
        writer.close()
        await asyncio.wait_for(made.ended.wait(), WAIT)
        await asyncio.sleep(0.05)
        assert made.closed == [0]  # once


async def test_a_session_that_does_not_read_holds_the_relay_to_one_buffer() -> None:
    total = 48 << 20
    sent = [0]

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"x" * (256 << 10)
        while sent[0] < total:
            writer.write(chunk)
            await writer.drain()
            sent[0] += len(chunk)
        writer.close()

    async with tunnel(flood) as made:
        reader, writer = await asyncio.open_connection("127.0.0.1", made.port)
        await asyncio.sleep(1.5)  # the session reads nothing meanwhile
        (session_side,) = made.session_sides
        # Without flow control the relay would have read all of it into its own buffer.
        assert session_side.get_write_buffer_size() <= 1 << 20, session_side
        assert sent[0] < total // 2, sent[0]  # what is left waits in the server
        received = 0
        while chunk := await asyncio.wait_for(reader.read(1 << 20), WAIT):
            assert set(chunk) == {ord("x")}
            received += len(chunk)
        assert received == total
        writer.close()


async def test_an_idle_relay_is_closed_and_traffic_keeps_it_open() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    async with tunnel(echo, idle=0.4) as made:
        reader, writer = await asyncio.open_connection("127.0.0.1", made.port)
        for _ in range(8):  # 0.8 s, past the idle limit, with a byte every 0.1 s
            writer.write(b".")
            assert await asyncio.wait_for(reader.read(1), WAIT) == b"."
            await asyncio.sleep(0.1)
        assert not made.ended.is_set()
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # then quiet: closed
        assert asyncio.get_running_loop().time() - started < 2.0
        await asyncio.wait_for(made.ended.wait(), WAIT)
        writer.close()


async def test_an_abort_ends_both_connections_at_once() -> None:
    server_saw: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.read()
        except ConnectionError:
            data = b"reset"
        server_saw.set_result(data)
        writer.close()

    async with tunnel(hold, first=b"opened") as made:
        reader, writer = await asyncio.open_connection("127.0.0.1", made.port)
        writer.write(b"!")
        await writer.drain()
        while not made.relays or not made.relays[0].started:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        made.relays[0].abort()
        try:
            end = await asyncio.wait_for(reader.read(), WAIT)
        except ConnectionError:
            end = b""
        assert end == b""
        assert (await asyncio.wait_for(server_saw, WAIT)).startswith(b"opened")
        await asyncio.wait_for(made.ended.wait(), WAIT)
        writer.close()


async def test_the_server_s_end_reaches_the_session_after_its_last_bytes() -> None:
    async def say_and_go(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"last words")
        await writer.drain()
        writer.close()

    async with tunnel(say_and_go) as made:
        reader, writer = await asyncio.open_connection("127.0.0.1", made.port)
        assert await asyncio.wait_for(reader.read(), WAIT) == b"last words"
        writer.close()
        await asyncio.wait_for(made.ended.wait(), WAIT)


async def test_a_first_write_that_fills_the_server_holds_the_session_until_it_drains() -> None:
    """What the session sent before the relay began can be more than the server's buffer
    takes at once: the session is then not read until the server has taken it."""
    stalled = asyncio.Event()
    taken = [0]

    async def read_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stalled.wait()
        while data := await reader.read(1 << 20):
            taken[0] += len(data)
        writer.close()

    first = b"f" * (4 << 20)  # past what the kernel's buffers hold, so the relay keeps some
    async with tunnel(read_late, first=first) as made:
        _reader, writer = await asyncio.open_connection("127.0.0.1", made.port)
        sent = 0
        chunk = b"s" * (256 << 10)
        while sent < 64 << 20:
            writer.write(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                break  # the session is held: what it writes stays with it
            sent += len(chunk)
        (joined,) = made.relays
        assert joined.started and joined.server.transport is not None
        assert joined.server.transport.get_write_buffer_size() <= len(first) + (1 << 20)
        assert sent < 32 << 20, sent
        stalled.set()  # the server reads now: everything gets through
        writer.write_eof()
        await asyncio.wait_for(made.ended.wait(), 30)
        assert taken[0] >= len(first) + sent
        writer.close()

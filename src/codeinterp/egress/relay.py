"""Bytes both ways between a session's connection and the one the proxy made for it, untouched
and unread: what a passthrough tunnel carries once its rules were checked (egress/addon.py).

Protocols on the event loop's own transports, not streams: each chunk is handed from one socket
to the other in the callback that received it, with no task or await between. A side whose
peer cannot take more stops being read until the peer has written its backlog, so a slow end
never makes the proxy hold more than a transport's buffer per direction. A relay that carried
nothing either way for `IDLE_SECONDS` is closed.

The standard library only: the proxy's venv loads this file by its path, as it does
sandbox/domains.py, and the server's tests import it as a module of the package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

IDLE_SECONDS = 600.0  # mitmproxy's own idle limit for a TCP connection


class Idle:
    """Calls `on_idle` once nothing was `touch`ed for `seconds` (checked when it could first be
    due, not at every touch: a busy relay costs one float store per chunk)."""

    def __init__(self, seconds: float, on_idle: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._seconds = seconds
        self._on_idle = on_idle
        self.last = self._loop.time()
        self._timer = self._loop.call_later(seconds, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def _check(self) -> None:
        due = self.last + self._seconds
        if self._loop.time() >= due:
            self._on_idle()
        else:
            self._timer = self._loop.call_at(due, self._check)

    def cancel(self) -> None:
        self._timer.cancel()


class _Side(asyncio.Protocol):
    """One connection of a relay: what it receives is written to the other."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.ended = False  # it sent its end (EOF)
        self.lost = False
        self.held = False  # not read: the other side has more to write than it should hold

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.relay.started:  # nothing comes down before the relay starts
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.relay.carry(self, data)

    def eof_received(self) -> bool:
        return self.relay.end(self)

    def pause_writing(self) -> None:
        # This side's outgoing buffer is full: stop reading what fills it.
        self.relay.peer(self).pause_reading()

    def resume_writing(self) -> None:
        self.relay.peer(self).resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.relay.lose(self)

    def pause_reading(self) -> None:
        self.held = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.held = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class Relay:
    """The session's connection (`client`, already open) joined to the one made for it.

    Make the relay, open the outgoing connection with `relay.server` as its protocol (which
    is not read until the relay starts), then `start` with what the session sent meanwhile.
    `on_closed` is called once, when both connections are gone."""

    def __init__(
        self, client: asyncio.Transport, idle: Idle, on_closed: Callable[[], None]
    ) -> None:
        self.client = _Side(self)
        self.client.transport = client
        self.server = _Side(self)
        self._idle = idle
        self._on_closed = on_closed
        self._closed = False
        self.started = False

    def start(self, first: bytes) -> None:
        """Send `first` (what the session sent before the relay began) and carry the rest."""
        client, server = self.client.transport, self.server.transport
        assert client is not None and server is not None
        self.started = True
        client.set_protocol(self.client)
        if client.is_closing():  # the session went away while the connection was made
            self.client.lost = True
            self.lose(self.client)
            return
        if first:
            server.write(first)  # which may hold the client, if it fills the server's buffer
        # Both were paused until now (the client by the proxy, the server by connection_made).
        for side in (self.client, self.server):
            if not side.held:
                side.resume_reading()

    def peer(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client

    def carry(self, side: _Side, data: bytes) -> None:
        self._idle.touch()
        other = self.peer(side).transport
        if other is not None and not other.is_closing():
            other.write(data)

    def end(self, side: _Side) -> bool:
        """`side` sent its end: pass it on, and keep the other direction open until it ends
        too (a half-close is the protocol's business, not the relay's)."""
        side.ended = True
        other = self.peer(side)
        if other.ended or other.transport is None or not other.transport.can_write_eof():
            self.close()
            return False
        if not other.transport.is_closing():
            other.transport.write_eof()
        return True

    def lose(self, side: _Side) -> None:
        """One connection is gone: the other is closed once it has written what it holds."""
        other = self.peer(side)
        if other.transport is not None and not other.transport.is_closing():
            other.transport.close()
        if other.lost or other.transport is None:
            self._finish()

    def close(self) -> None:
        for side in (self.client, self.server):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()

    def abort(self) -> None:
        """Both connections, now, whatever they hold (the session was dropped, or idle)."""
        for side in (self.client, self.server):
            if side.transport is not None:
                side.transport.abort()

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            self._idle.cancel()
            self._on_closed()

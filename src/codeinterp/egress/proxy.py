"""The egress proxy the server owns, and each session's way to it.

The proxy is mitmproxy (`mitmdump` from its own venv, .venv-egress, since its pins clash with
ours) running `addon.py`, which holds the rules. It listens on the host's loopback only. A
session with an allowlist gets a `Lease`:
- a client address of its own in 127.64.0.0/10, under which the proxy keeps its policy;
- a listener on 127.0.0.1:3128 inside the session's network namespace (sandbox/netns.py),
  made for each of its processes before any code runs;
- a relay, in this process, from each connection accepted there to the proxy, made from the
  lease's client address: that address is how the proxy knows whose rules apply.
The proxy reports every attempt a session makes; a lease keeps those since it was last asked,
so an execution can say what its code tried (`Lease.attempts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeinterp.errors import EgressUnavailable
from codeinterp.sandbox.netns import listen_in_namespace_of
from codeinterp.sandbox.policy import EGRESS_PROXY_PORT

from .policy import NetworkPolicy

log = logging.getLogger("codeinterp.egress")

ADDON = str(Path(__file__).with_name("addon.py"))
# The system's CA bundle, which a session's bundle extends with the proxy's CA.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CLIENT_NETWORK = ipaddress.ip_network("127.64.0.0/10")
START_SECONDS = 30.0
COMMAND_SECONDS = 10.0
# What one session can make the server hold open for it at once; more are closed at accept.
MAX_CONNECTIONS_PER_SESSION = 32
BODY_SIZE_LIMIT = "16m"
# The attempts a lease keeps between two executions; past it they are counted, not kept.
MAX_ATTEMPTS_KEPT = 1000
RELAY_CHUNK = 256 * 1024
CLOSE_SECONDS = 10.0  # what is left to send when a relay ends gets this long, then is dropped


def default_mitmdump() -> str:
    """`.venv-egress/bin/mitmdump` beside the server's own venv (scripts/setup makes both)."""
    return str(Path(sys.prefix).parent / ".venv-egress" / "bin" / "mitmdump")


@dataclass(frozen=True)
class EgressSettings:
    mitmdump: str = field(default_factory=default_mitmdump)
    confdir: str = ""  # the proxy's CA lives here (the data directory's `egress`)
    # name -> address the proxy uses instead of resolving the name (an operator's override)
    resolve: dict[str, str] = field(default_factory=dict)
    # Let names resolve to private addresses (10/8, 192.168/16, ...): an internal API, say.
    allow_private: bool = False
    upstream_ca: str | None = None  # a CA bundle the proxy trusts upstream, besides the system's


@dataclass
class Lease:
    """One session's way out: its policy at the proxy, and its relays."""

    proxy: EgressProxy
    client: str
    policy: NetworkPolicy
    _attempts: list[dict[str, Any]] = field(default_factory=list)
    _dropped: int = 0
    _relays: set[asyncio.Task[None]] = field(default_factory=set)
    # A connection to the proxy made ahead of the session's next one (see _connection_to_proxy)
    _spare: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None
    closed: bool = False

    async def attach(self, pid: int) -> Callable[[], None]:
        """A listener in `pid`'s network namespace, relayed to the proxy (SessionNetwork)."""
        listener = listen_in_namespace_of(pid, EGRESS_PROXY_PORT)
        loop = asyncio.get_running_loop()
        accepting = loop.create_task(self._accept(listener))
        if self._spare is None:
            self._spare = loop.create_task(self._connect())

        def detach() -> None:
            accepting.cancel()
            listener.close()
            for relay in list(self._relays):
                relay.cancel()

        return detach

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                inside, _ = await loop.sock_accept(listener)
            except OSError as e:  # out of descriptors, say: wait, and take connections again
                log.warning("egress: accepting a session's connection failed: %s", e)
                await asyncio.sleep(0.5)
                continue
            if len(self._relays) >= MAX_CONNECTIONS_PER_SESSION:
                inside.close()
                self.record(
                    {
                        "event": "attempt",
                        "allowed": False,
                        "reason": (
                            f"more than {MAX_CONNECTIONS_PER_SESSION} connections open at once"
                        ),
                    }
                )
                continue
            relay = loop.create_task(self._relay(inside))
            self._relays.add(relay)
            relay.add_done_callback(self._relays.discard)

    async def _relay(self, inside: socket.socket) -> None:
        try:
            inside.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            a_reader, a_writer = await asyncio.open_connection(sock=inside)
        except OSError:
            inside.close()
            return
        try:
            b_reader, b_writer = await self._connection_to_proxy()
        except (OSError, EgressUnavailable) as e:
            log.warning("egress: cannot reach the proxy: %s", e)
            a_writer.close()
            return
        try:
            await asyncio.gather(_pipe(a_reader, b_writer), _pipe(b_reader, a_writer))
        finally:
            # Counted until its sockets are gone: a peer that never reads cannot keep them.
            await asyncio.gather(*(_close(w) for w in (a_writer, b_writer)))

    async def _connection_to_proxy(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the proxy from this lease's address: the spare one made ahead (the
        proxy has done its part of accepting it: about half of a new connection's cost), then
        another spare is made for the next."""
        spare, self._spare = self._spare, None
        connection = None
        if spare is not None:
            try:
                connection = await spare  # under way already: sooner than starting again
            except (OSError, EgressUnavailable, asyncio.CancelledError):
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
        if connection is None or connection[0].at_eof():
            if connection is not None:
                connection[1].close()
            connection = await self._connect()
        if not self.closed:
            self._spare = asyncio.get_running_loop().create_task(self._connect())
        return connection

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.proxy.ensure_running()  # a proxy that died starts again for the next one
        return await asyncio.open_connection(
            "127.0.0.1", self.proxy.port, local_addr=(self.client, 0)
        )

    def record(self, event: dict[str, Any]) -> None:
        if len(self._attempts) < MAX_ATTEMPTS_KEPT:
            self._attempts.append(
                {k: v for k, v in event.items() if k not in ("event", "client") and v is not None}
            )
        else:
            self._dropped += 1

    async def attempts(self) -> tuple[list[dict[str, Any]], int]:
        """The attempts since the last call (and how many more were not kept)."""
        await self.proxy.sync()
        taken, dropped = self._attempts, self._dropped
        self._attempts, self._dropped = [], 0
        return taken, dropped

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            for relay in list(self._relays):
                relay.cancel()
            spare, self._spare = self._spare, None
            if spare is not None:
                spare.cancel()
                if spare.done() and not spare.cancelled() and spare.exception() is None:
                    spare.result()[1].close()
            await self.proxy.release(self)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the end on (half-close), so either side may finish
    sending first."""
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_SECONDS)
    except (TimeoutError, OSError):
        writer.transport.abort()


class EgressProxy:
    """The proxy process, started on first use and again if it died."""

    def __init__(self, settings: EgressSettings) -> None:
        self.settings = settings
        self.port = 0
        self.ca_bundle = os.path.join(settings.confdir, "sandbox-ca-bundle.crt")
        self._process: asyncio.subprocess.Process | None = None
        self._events: asyncio.StreamReader | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._leases: dict[str, Lease] = {}
        # Never given twice: a connection of an ended session must not find a new one's rules.
        # (4 million addresses; the proxy starts again with a fresh range when it runs out.)
        self._free = CLIENT_NETWORK.hosts()
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}

    @property
    def available(self) -> bool:
        return os.access(self.settings.mitmdump, os.X_OK)

    async def lease(self, policy: NetworkPolicy) -> Lease:
        """A client address with `policy` at the proxy, which is started if it is not running."""
        await self.ensure_running()
        client = str(next(self._free, None) or self._new_range())
        lease = Lease(self, client, policy)
        self._leases[client] = lease
        try:
            await self._command({"op": "set", "client": client, "policy": policy.for_proxy()})
        except BaseException:
            self._leases.pop(client, None)
            raise
        return lease

    async def release(self, lease: Lease) -> None:
        if self._leases.pop(lease.client, None) is None:
            return
        if self.running:
            with contextlib.suppress(EgressUnavailable, OSError):
                await self._command({"op": "drop", "client": lease.client})

    async def sync(self) -> None:
        """Return once every attempt the proxy has reported so far is in its lease."""
        if self.running:
            with contextlib.suppress(EgressUnavailable, OSError):
                await self._command({"op": "sync"})

    def _new_range(self) -> str:
        self._free = CLIENT_NETWORK.hosts()
        return str(next(self._free))

    # -- the process ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def ensure_running(self) -> None:
        """Start the proxy if it is not running (the first lease, or it died since)."""
        if self.running:
            return
        async with self._starting:
            if self.running:
                return
            if not self.available:
                raise EgressUnavailable(
                    f"network policies need the egress proxy, which is not installed "
                    f"({self.settings.mitmdump} is missing): run scripts/setup"
                )
            await self._start()
            await self.configure()
            # A proxy started again knows no one: tell it every live lease again.
            for lease in list(self._leases.values()):
                await self._command(
                    {"op": "set", "client": lease.client, "policy": lease.policy.for_proxy()}
                )

    async def _start(self) -> None:
        os.makedirs(self.settings.confdir, mode=0o700, exist_ok=True)
        read_end, write_end = os.pipe()
        options = {
            "confdir": self.settings.confdir,
            # Connect upstream only once the rules allowed the request, never before.
            "connection_strategy": "lazy",
            "termlog_verbosity": "warn",
            "flow_detail": "0",
            # What the proxy reads (plain HTTP, and HTTPS to a domain with secrets, which must be
            # read whole to take the value out of the answer) is held up to this, then refused.
            # Passthrough HTTPS is never read, whatever its size.
            "body_size_limit": BODY_SIZE_LIMIT,
            # One request at a time per connection: with MAX_CONNECTIONS_PER_SESSION, what a
            # session can make the proxy hold is bounded (HTTP/2 would multiply it by 100).
            "http2": "false",
        }
        if self.settings.upstream_ca:
            options["ssl_verify_upstream_trusted_ca"] = self.settings.upstream_ca
        args = [self.settings.mitmdump, "-q", "--listen-host", "127.0.0.1", "--listen-port", "0"]
        for name, value in options.items():
            args += ["--set", f"{name}={value}"]
        args += ["-s", ADDON]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": self.settings.confdir,
            "LANG": "C.UTF-8",
            "CODEINTERP_EGRESS_EVENTS_FD": str(write_end),
        }
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE,
                env=env,
                pass_fds=(write_end,),
                start_new_session=True,
            )
        finally:
            os.close(write_end)
        loop = asyncio.get_running_loop()
        events = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(events), os.fdopen(read_end, "rb", 0)
        )
        self._process, self._events = process, events
        try:
            ready = await asyncio.wait_for(events.readline(), START_SECONDS)
            self.port = int(json.loads(ready)["port"])
        except (TimeoutError, ValueError, KeyError) as e:
            process.kill()
            await process.wait()
            self._process = None
            raise EgressUnavailable(f"the egress proxy did not start ({e!r}); see the log") from e
        self._write_ca_bundle()
        self._reader = loop.create_task(self._read_events(events))
        log.info("egress proxy: mitmproxy on 127.0.0.1:%d (pid %d)", self.port, process.pid)

    def _write_ca_bundle(self) -> None:
        """The system's CAs and the proxy's, world-readable: what a session trusts."""
        with open(os.path.join(self.settings.confdir, "mitmproxy-ca-cert.pem"), "rb") as f:
            ours = f.read()
        try:
            with open(SYSTEM_CA_BUNDLE, "rb") as f:
                system = f.read()
        except FileNotFoundError:
            system = b""
        temporary = self.ca_bundle + ".new"
        with open(temporary, "wb") as f:
            f.write(system.rstrip(b"\n") + b"\n" + ours)
        os.chmod(temporary, 0o644)
        os.replace(temporary, self.ca_bundle)
        os.chmod(self.settings.confdir, 0o711)  # the bundle is bound by path; the key stays 0600

    async def _read_events(self, events: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await events.readline()
            except ValueError:  # a line past the limit (the addon clips its events): skip it
                continue
            if not line:
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "ack":
                waiter = self._waiting.pop(event.get("id"), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif event.get("event") == "attempt":
                lease = self._leases.get(event.get("client", ""))
                if lease is not None:
                    lease.record(event)
        if self._process is not None:  # not stopped by close()
            log.warning("egress proxy exited; it starts again on the next use")
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(EgressUnavailable("the egress proxy exited"))
        self._waiting.clear()

    async def _command(self, command: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise EgressUnavailable("the egress proxy is not running")
        self._next_id += 1
        command["id"] = self._next_id
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = waiter
        process.stdin.write(json.dumps(command).encode() + b"\n")
        try:
            await process.stdin.drain()
            await asyncio.wait_for(waiter, COMMAND_SECONDS)
        except (TimeoutError, ConnectionError) as e:
            raise EgressUnavailable(f"the egress proxy did not answer ({e!r})") from e
        finally:
            self._waiting.pop(command["id"], None)

    async def configure(self) -> None:
        """Send the server's settings (name overrides, private addresses) to a new proxy."""
        await self._command(
            {
                "op": "config",
                "resolve": self.settings.resolve,
                "allow_private": self.settings.allow_private,
            }
        )

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()

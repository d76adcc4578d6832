"""The egress proxy the server owns, and each session's way to it.

The proxy is mitmproxy (`mitmdump` from its own venv, .venv-egress, since its pins clash with
ours) running `addon.py`, which holds the rules. It listens on the host's loopback only. A
session with an allowlist gets a `Lease`:
- a client address of its own in 127.64.0.0/10, under which the proxy keeps its policy;
- a listener on 127.0.0.1:3128 inside the session's network namespace (sandbox/netns.py),
  made here for each of its processes before any code runs and handed to the proxy (its
  descriptor passed over the command channel), which accepts the session's connections there
  itself: no byte of a session's traffic passes through the server. The proxy treats each
  connection from that listener as one from the lease's address, whose rules apply.
The proxy reports every attempt a session makes; a lease keeps those since it was last asked,
so an execution can say what its code tried (`Lease.attempts`).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeinterp.background import BackgroundTasks
from codeinterp.errors import EgressUnavailable
from codeinterp.sandbox.cgroups import CgroupManager, SessionCgroup
from codeinterp.sandbox.netns import listen_in_namespace_of
from codeinterp.sandbox.policy import EGRESS_PROXY_PORT, Limits, MiB

from .policy import NetworkPolicy

log = logging.getLogger("codeinterp.egress")

ADDON = str(Path(__file__).with_name("addon.py"))
# The system's CA bundle, which a session's bundle extends with the proxy's CA.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CLIENT_NETWORK = ipaddress.ip_network("127.64.0.0/10")
START_SECONDS = 30.0
COMMAND_SECONDS = 10.0
# What one session can make the proxy hold open for it at once; more are closed at accept.
MAX_CONNECTIONS_PER_SESSION = 32
BODY_SIZE_LIMIT = "16m"
# The attempts a lease keeps between two executions; past it they are counted, not kept.
MAX_ATTEMPTS_KEPT = 1000
# A proxy that died is started again after this, doubled each time it dies young (up to the
# most), so a proxy that cannot stay up is not restarted in a tight loop.
RESTART_SECONDS = 0.2
MAX_RESTART_SECONDS = 30.0
YOUNG_SECONDS = 10.0
# Threads of the proxy's group (its resolver threads are 64 of them).
PROXY_THREADS = 256


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
    # The proxy's memory (with CgroupManager): what every session's connections together can
    # make it hold. Past it the kernel kills the proxy, which is started again.
    memory_limit: int = 2048 * MiB


@dataclass
class Lease:
    """One session's way out: its policy at the proxy, and the listeners handed to it."""

    proxy: EgressProxy
    client: str
    policy: NetworkPolicy
    _attempts: list[dict[str, Any]] = field(default_factory=list)
    _dropped: int = 0
    # Kept open here too, so a proxy started again can be handed them again.
    listeners: dict[str, socket.socket] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)
    closed: bool = False

    async def attach(self, pid: int) -> Callable[[], None]:
        """A listener in `pid`'s network namespace, handed to the proxy (SessionNetwork)."""
        listener = listen_in_namespace_of(pid, EGRESS_PROXY_PORT)
        key = f"{self.client}/{next(self._numbers)}"
        self.listeners[key] = listener
        try:
            await self.proxy.listen(self, key)
        except EgressUnavailable as e:
            if self.proxy.running:  # it is there and did not take it: no way out
                self.listeners.pop(key).close()
                raise
            # It is being started again, which hands it every lease's listeners; the session's
            # connections wait in the backlog meanwhile.
            log.warning("egress: the proxy takes process %d's listener once back: %s", pid, e)
        except BaseException:
            self.listeners.pop(key).close()
            raise

        def detach() -> None:
            if (gone := self.listeners.pop(key, None)) is not None:
                gone.close()
                self.proxy.unlisten(self, key)

        return detach

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
            for listener in self.listeners.values():
                listener.close()
            self.listeners.clear()
            await self.proxy.release(self)  # the proxy closes its copies and connections


class EgressProxy:
    """The proxy process, started on first use and again if it died."""

    def __init__(self, settings: EgressSettings, cgroups: CgroupManager | None = None) -> None:
        self.settings = settings
        self._cgroups = cgroups  # None: the proxy runs in the server's own group, uncapped
        self._group: SessionCgroup | None = None
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
        self._channel: socket.socket | None = None  # commands (and listeners) to the proxy
        self._sending = asyncio.Lock()  # one command's bytes at a time on the channel
        self._started_at = 0.0
        self._restart_delay = RESTART_SECONDS
        self._restarting: asyncio.Task[None] | None = None
        self._background = BackgroundTasks()
        self._closing = False
        self._oom_kills = 0

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

    async def listen(self, lease: Lease, key: str) -> None:
        """Hand the proxy `lease`'s listener `key`: it accepts the session's connections there."""
        await self._command(
            {"op": "listen", "client": lease.client, "listener": key},
            fd=lease.listeners[key].fileno(),
        )

    def unlisten(self, lease: Lease, key: str) -> None:
        """The proxy closes its copy of the listener (in the background: a process that ended
        need not wait for it)."""
        if self.running:
            self._background.start(
                self._quietly({"op": "unlisten", "client": lease.client, "listener": key})
            )

    async def _quietly(self, command: dict[str, Any]) -> None:
        with contextlib.suppress(EgressUnavailable, OSError):
            await self._command(command)

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
        """Start the proxy if it is not running (the first lease, or it died since: see
        `_restart`)."""
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
            # A proxy started again knows no one: tell it every live lease again, and hand it
            # their listeners (connections made meanwhile waited in their backlogs).
            for lease in list(self._leases.values()):
                await self._command(
                    {"op": "set", "client": lease.client, "policy": lease.policy.for_proxy()}
                )
                for key in list(lease.listeners):
                    await self.listen(lease, key)

    async def _start(self) -> None:
        os.makedirs(self.settings.confdir, mode=0o700, exist_ok=True)
        read_end, write_end = os.pipe()
        # Commands go over a Unix socket, not a pipe: a listener's descriptor can go with one.
        channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
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
                stdin=theirs.fileno(),
                env=env,
                pass_fds=(write_end,),
                start_new_session=True,
            )
        except BaseException:
            channel.close()
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
            theirs.close()
        try:
            self._confine(process.pid)
        except OSError as e:
            process.kill()
            await process.wait()
            channel.close()
            os.close(read_end)
            raise EgressUnavailable(f"the egress proxy could not be given its limits: {e}") from e
        channel.setblocking(False)
        if self._channel is not None:
            self._channel.close()
        self._channel = channel
        self._started_at = time.monotonic()
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
        self._reader = loop.create_task(self._read_events(events, process))
        log.info("egress proxy: mitmproxy on 127.0.0.1:%d (pid %d)", self.port, process.pid)

    def _confine(self, pid: int) -> None:
        """Put the proxy in a group of its own, capped: one group for every proxy this server
        starts, made with the first."""
        if self._cgroups is None:
            return
        if self._group is None:
            self._group = self._cgroups.create(
                "egress-proxy",
                Limits(
                    memory=self.settings.memory_limit,
                    processes=PROXY_THREADS,
                    cpus=float(os.cpu_count() or 1),  # not a CPU cap: a group of its own
                    socket_buffers=self.settings.memory_limit // 4,
                ),
            )
        self._group.add_process(pid)

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

    async def _read_events(
        self, events: asyncio.StreamReader, process: asyncio.subprocess.Process
    ) -> None:
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
                    if event.get("error"):
                        waiter.set_exception(
                            EgressUnavailable(f"the egress proxy: {event['error']}")
                        )
                    else:
                        waiter.set_result(None)
            elif event.get("event") == "attempt":
                lease = self._leases.get(event.get("client", ""))
                if lease is not None:
                    lease.record(event)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(EgressUnavailable("the egress proxy exited"))
        self._waiting.clear()
        if not self._closing:
            self._restarting = asyncio.get_running_loop().create_task(self._restart(process))

    async def _restart(self, died: asyncio.subprocess.Process) -> None:
        """The proxy `died`: start it again, soon, with every live lease (sessions' connections
        wait in their listeners' backlogs meanwhile)."""
        await died.wait()
        if self._group is not None and self._group.oom_kills() > self._oom_kills:
            self._oom_kills = self._group.oom_kills()
            log.error(
                "egress proxy: killed at its memory limit (%d MiB, CODEINTERP_EGRESS_MEMORY_MIB)",
                self.settings.memory_limit // MiB,
            )
        while not self._closing:
            young = time.monotonic() - self._started_at < YOUNG_SECONDS
            self._restart_delay = (
                min(self._restart_delay * 2, MAX_RESTART_SECONDS) if young else RESTART_SECONDS
            )
            log.warning("egress proxy exited; starting it again in %.1f s", self._restart_delay)
            await asyncio.sleep(self._restart_delay)
            try:
                await self.ensure_running()
                return
            except (EgressUnavailable, OSError) as e:
                log.error("egress proxy: starting it again failed: %s", e)

    async def _command(self, command: dict[str, Any], fd: int | None = None) -> None:
        """Send `command` (with the descriptor `fd`, if any) and wait for its ack."""
        channel = self._channel
        if not self.running or channel is None:
            raise EgressUnavailable("the egress proxy is not running")
        self._next_id += 1
        command["id"] = self._next_id
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting[self._next_id] = waiter
        line = json.dumps(command).encode() + b"\n"
        try:
            async with self._sending:
                sent = 0 if fd is None else await _send_with_descriptor(channel, line, fd)
                await asyncio.wait_for(loop.sock_sendall(channel, line[sent:]), COMMAND_SECONDS)
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
                "max_connections": MAX_CONNECTIONS_PER_SESSION,
            }
        )

    async def close(self) -> None:
        self._closing = True
        if self._restarting is not None:
            self._restarting.cancel()
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
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._group is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._group.remove, 5.0)
            self._group = None


async def _send_with_descriptor(channel: socket.socket, data: bytes, fd: int) -> int:
    """Send the start of `data` with a copy of descriptor `fd` attached (SCM_RIGHTS), when the
    non-blocking `channel` has room; returns how many bytes went."""
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    deadline = time.monotonic() + COMMAND_SECONDS
    while True:
        try:
            return channel.sendmsg([data], rights)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError("the command channel stayed full") from None
            await asyncio.sleep(0.01)

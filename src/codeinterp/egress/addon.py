"""The egress proxy's rules, as a mitmproxy addon: loaded by `mitmdump -s` in the proxy's own
venv (.venv-egress), so it imports only the standard library and mitmproxy, and of codeinterp
only sandbox/domains.py, by its path.

The server (egress/proxy.py) owns the process and talks to it over two channels:
- commands in, on stdin (a Unix socket), one JSON object a line: `config` (name overrides,
  private addresses, the connection cap), `set` a client's policy, `listen` on a listener the
  server made in a session's network namespace (its descriptor comes with the line), `unlisten`,
  `drop` a client (its listeners and connections too), `sync` (answered once every earlier
  event is written);
- events out, on the descriptor named by CODEINTERP_EGRESS_EVENTS_FD: `ready` with the port,
  `ack` of a command, and one `attempt` for every connection or request a session tried,
  allowed or refused.

A client is a session, named by a distinct address in 127.64.0.0/10 that is the key of its
policy here. Its connections arrive only on the listeners handed over for it
(`SessionConnection`): a tunnel the policy allows to a domain without secrets is served there,
in this loop, and every other connection goes to mitmproxy, given that address as its peer; a
connection that reached mitmproxy's own listener on the host's loopback belongs to no one and
gets nothing. What a policy allows:
- HTTPS through CONNECT to an allowed name and port (443 unless the entry names one), where the
  tunnel carries TLS whose ClientHello names the same host (no other name smuggled through the
  tunnel's handshake, no other protocol; what passes inside an end-to-end tunnel is not seen);
- HTTP in absolute form to an allowed name and port (80 unless named), Host header agreeing;
- never an IP literal, never a name that resolves only to non-public addresses (unless the
  server's configuration maps it or allows private ones); the proxy resolves names itself.
Connections to a domain with secrets are intercepted (TLS with the proxy's own CA, which the
session trusts); everything else passes through encrypted, untouched. In an intercepted request
to the secret's domain, each placeholder in the request line and headers becomes the secret's
value; in its response, the value becomes the placeholder again. No other request ever carries
a value.
"""

# No `from __future__ import annotations`: mitmproxy loads this file outside sys.modules,
# where dataclasses cannot resolve string annotations.
import asyncio
import concurrent.futures
import contextvars
import importlib.util
import ipaddress
import json
import logging
import os
import re
import select
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mitmproxy import addonmanager, ctx, http, tls
from mitmproxy.connection import Client
from mitmproxy.net.http import http1, url
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers import tls as tls_layer
from mitmproxy.proxy.layers.http._http1 import Http1Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData


def _load(relative: str, name: str) -> Any:
    """A standard-library module of codeinterp, by its path from this file's package: this venv
    has no codeinterp package. (In sys.modules first: dataclasses look it up.)"""
    path = Path(__file__).resolve().parent.parent / relative
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# The one definition of what an entry allows, the tunnels' byte relay, and background work.
domains = _load("sandbox/domains.py", "codeinterp_egress_domains")
relay = _load("egress/relay.py", "codeinterp_egress_relay")
background = _load("background.py", "codeinterp_egress_background")
log = logging.getLogger("codeinterp.egress.addon")

RESOLVER_THREADS = 64
MAX_NAME = 253  # a longer Host is not a name
# What mitmdump loads and the proxy needs; every other addon is dropped, since every hook of
# every connection is offered to every addon in turn.
NEEDED_ADDONS = frozenset(
    {"termlog", "core", "block", "disableh2c", "proxyserver", "scriptloader", "nextlayer",
     "tlsconfig", "errorcheck"}
)  # fmt: skip
MAX_COMMAND = 4 << 20  # bytes of one command line (a policy with every secret at its largest)
MAX_EVENT_TEXT = 300  # characters of any one value in an event (the lines stay < PIPE_BUF)
MAX_ESCAPED_TEXT = 40  # the same, for a line that is still longer (non-ASCII text)
# A tunnel's start, and the most of a request head (any, here or in mitmproxy) and of a TLS
# ClientHello that is read before it is refused.
TUNNEL_START = b"CONNECT "
HEAD_END = re.compile(rb"\n\r?\n")
MAX_REQUEST_HEAD = 64 << 10
MAX_CLIENT_HELLO = 64 << 10
MAX_CLIENT_HELLO_RECORDS = 8  # clients send one (two past 16 KiB)
NOT_TLS = "no TLS handshake"


# The client a connection was handed over for, in the task that hands it to mitmproxy (whose
# client_connected hook runs in that task): a connection without it came some other way.
HANDED_OVER: contextvars.ContextVar[str] = contextvars.ContextVar("handed_over")


@dataclass(frozen=True)
class Secret:
    domain: str
    placeholder: str
    value: str


@dataclass
class Policy:
    rules: list[Any]  # domains.Rule
    secrets: list[Secret] = field(default_factory=list)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> "Policy":
        return cls(
            [domains.Rule.parse(entry) for entry in data["allowed_domains"]],
            [
                Secret(s["domain"].lower().rstrip("."), s["placeholder"], s["value"])
                for s in data.get("secrets", [])
            ],
        )

    def refusal(self, host: str, port: int, scheme: str) -> str | None:
        """Why a connection to host:port is refused, or None if it is allowed."""
        why: str | None = domains.refusal(self.rules, host, port, scheme)
        return why

    def secrets_for(self, host: str) -> list[Secret]:
        return [s for s in self.secrets if s.domain == host]


def _clip(value: Any) -> Any:
    return value[:MAX_EVENT_TEXT] if isinstance(value, str) else value


class Egress:
    def __init__(self) -> None:
        self.policies: dict[str, Policy] = {}  # client address -> its session's policy
        # client connection id -> the policy it had when it came (an address is never given
        # to a second session, and a connection keeps the rules it started under)
        self.connections: dict[str, Policy] = {}
        self.resolve: dict[str, str] = {}
        self.allow_private = False
        self.tunnels: dict[str, str] = {}  # client connection id -> the host CONNECT opened
        self.max_connections = 0  # open at once per client (0: no cap); set by `config`
        self.listeners: dict[str, tuple[str, asyncio.Server]] = {}  # id -> (client, server)
        self.open: dict[str, set[SessionConnection]] = {}  # client -> its connections
        self.serving = background.BackgroundTasks()  # connections in mitmproxy's hands
        self._loop: asyncio.AbstractEventLoop | None = None
        # Events never block the proxy: a server that stops reading loses them, not the proxy.
        self._events = int(os.environ["CODEINTERP_EGRESS_EVENTS_FD"])
        os.set_blocking(self._events, False)
        self.events_lost = 0
        self._write_lock = threading.Lock()

    # -- the control channel ------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        # Dropped before the proxy runs (none of them has started anything to stop), and by
        # name: the rest of the chain, ours included, stays as mitmdump made it.
        addons = ctx.master.addons
        unneeded = [a for a in addons.chain if addonmanager._get_name(a) not in NEEDED_ADDONS]
        addons.chain = [a for a in addons.chain if a not in unneeded]
        for addon in addonmanager.traverse(unneeded):
            addons.lookup.pop(addonmanager._get_name(addon), None)
        # mitmdump sets the root logger to DEBUG and filters at its handler: each connection
        # would build log records only to drop them. Warnings still reach the server's log.
        logging.getLogger("mitmproxy").setLevel(logging.WARNING)

    def running(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Names are resolved in the loop's executor (asyncio does so): enough threads that a
        # few slow lookups do not hold up every session's.
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(RESOLVER_THREADS, "egress-resolve")
        )
        threading.Thread(target=self._read_commands, name="egress-commands", daemon=True).start()
        asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        while not proxyserver.listen_addrs():
            await asyncio.sleep(0.01)
        self._emit({"event": "ready", "port": proxyserver.listen_addrs()[0][1]})

    def _read_commands(self) -> None:
        """Read commands until the server goes away. A `listen` line's descriptor comes with
        the line's first bytes, so descriptors are taken in order, one per `listen`."""
        channel = socket.socket(fileno=0)
        channel.setblocking(True)
        pending = b""
        descriptors: list[int] = []
        while True:
            data, fds, _, _ = socket.recv_fds(channel, 1 << 16, 16)
            if not data:
                break
            descriptors += fds
            pending += data
            *lines, pending = pending.split(b"\n")
            if len(pending) > MAX_COMMAND:
                break
            for line in lines:
                command = json.loads(line)
                fd = descriptors.pop(0) if command["op"] == "listen" else None
                try:
                    self._command(command, fd)
                except Exception as e:  # said in the ack; the channel goes on
                    log.warning("egress: command %s failed: %r", command["op"], e)
                    error = f"{command['op']} failed: {e!r}"
                    self._emit({"event": "ack", "id": command.get("id"), "error": error})
                else:
                    self._emit({"event": "ack", "id": command.get("id")})
        # The server is gone: so is the reason to exist.
        os._exit(0)

    def _command(self, command: dict[str, Any], fd: int | None) -> None:
        op = command["op"]
        if op == "config":
            self.resolve = {domains.normal(k): v for k, v in command.get("resolve", {}).items()}
            self.allow_private = bool(command.get("allow_private", False))
            self.max_connections = int(command.get("max_connections", 0))
        elif op == "set":
            self.policies[command["client"]] = Policy.parse(command["policy"])
        elif op in ("listen", "unlisten", "drop"):
            # The loop's own: its servers and connections are touched there only; the ack
            # follows once done.
            assert self._loop is not None
            future = asyncio.run_coroutine_threadsafe(self._on_loop(command, fd), self._loop)
            future.result()

    async def _on_loop(self, command: dict[str, Any], fd: int | None) -> None:
        op, client = command["op"], command["client"]
        if op == "listen":
            assert fd is not None
            try:
                listener = socket.socket(fileno=fd)
            except OSError:
                os.close(fd)
                raise
            if command["listener"] in self.listeners or client not in self.policies:
                listener.close()  # handed over twice (the proxy was starting), or too late
                return
            server = await asyncio.get_running_loop().create_server(
                lambda: SessionConnection(self, client), sock=listener
            )
            self.listeners[command["listener"]] = (client, server)
        elif op == "unlisten":
            if (listening := self.listeners.pop(command["listener"], None)) is not None:
                listening[1].close()
        elif op == "drop":
            self.policies.pop(client, None)
            for key in [k for k, (owner, _) in self.listeners.items() if owner == client]:
                self.listeners.pop(key)[1].close()
            for connection in self.open.pop(client, set()):
                connection.abort()

    def admit(self, connection: "SessionConnection") -> bool:
        """Count a new connection of its client, unless the client has its most open."""
        live = self.open.setdefault(connection.client, set())
        if self.max_connections and len(live) >= self.max_connections:
            reason = f"more than {self.max_connections} connections open at once"
            self._emit(
                {"event": "attempt", "client": connection.client, "allowed": False,
                 "reason": reason}
            )  # fmt: skip
            return False
        live.add(connection)
        return True

    def release(self, connection: "SessionConnection") -> None:
        live = self.open.get(connection.client)
        if live is not None:
            live.discard(connection)
            if not live:
                del self.open[connection.client]

    async def to_mitmproxy(
        self,
        connection: "SessionConnection",
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """A connection from a session's namespace: to mitmproxy as one from its client."""
        client = connection.client
        port = writer.get_extra_info("peername")[1]
        real = writer.get_extra_info

        def get_extra_info(name: str, default: Any = None) -> Any:
            return (client, port) if name == "peername" else real(name, default)

        writer.get_extra_info = get_extra_info  # type: ignore[method-assign]
        HANDED_OVER.set(client)
        try:
            regular = next(iter(ctx.master.addons.get("proxyserver").servers))
            await regular.handle_stream(reader, writer)
        finally:
            self.release(connection)

    def _emit(self, event: dict[str, Any]) -> None:
        # One write of at most PIPE_BUF bytes is atomic: a line is whole or not there.
        line = (json.dumps(event) + "\n").encode()
        if len(line) > select.PIPE_BUF:  # text JSON escapes at up to 6 bytes a character
            short = {k: v[:MAX_ESCAPED_TEXT] if isinstance(v, str) else v for k, v in event.items()}
            line = (json.dumps(short) + "\n").encode()
        with self._write_lock:
            try:
                os.write(self._events, line)
            except BlockingIOError:
                self.events_lost += 1

    def _attempt(
        self, client: str, scheme: str, host: str, port: int, refusal: str | None, **extra: Any
    ) -> None:
        event = {
            "event": "attempt",
            "client": client,
            "scheme": scheme,
            "host": host,
            "port": port,
            "allowed": refusal is None,
            "reason": refusal,
            **extra,
        }
        # What the session sent is in it: keep every line well under PIPE_BUF.
        self._emit({k: _clip(v) for k, v in event.items()})

    # -- the rules ----------------------------------------------------------------------------

    def client_connected(self, client: Client) -> None:
        policy = self.policies.get(client.peername[0])
        if HANDED_OVER.get(None) != client.peername[0]:  # not from a session's listener
            client.error = "not a session's connection"
        elif policy is None:
            client.error = "no network policy for this client"
        else:
            self.connections[client.id] = policy

    def client_disconnected(self, client: Client) -> None:
        self.tunnels.pop(client.id, None)
        self.connections.pop(client.id, None)

    def _policy(self, client: Client) -> Policy | None:
        """The connection's policy, while its session still has one."""
        if client.peername[0] not in self.policies:
            return None
        return self.connections.get(client.id)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        policy = self._policy(flow.client_conn)
        host, port = domains.normal(flow.request.host), flow.request.port
        refusal = "no network policy" if policy is None else policy.refusal(host, port, "https")
        self._attempt(flow.client_conn.peername[0], "https", host, port, refusal, method="CONNECT")
        if refusal is not None:
            flow.response = http.Response.make(403, f"codeinterp egress: {refusal}\n")
            # A client that is refused a tunnel shows its status line, not its body.
            flow.response.reason = status_phrase("Forbidden", refusal)
            return
        self.tunnels[flow.client_conn.id] = host

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        client = data.context.client
        policy = self._policy(client)
        target = data.context.server.address
        host = domains.normal(target[0]) if target else ""
        sni = domains.normal(data.client_hello.sni or "")
        reason = "no network policy" if policy is None else _sni_refusal(host, sni)
        if policy is None or reason is not None:
            self._attempt(
                client.peername[0],
                "https",
                sni or host,
                target[1] if target else 0,
                reason,
                method="TLS",
            )
            client.error = reason
            # Pass through to nowhere: the connection is killed before any byte goes on.
            data.ignore_connection = True
            data.context.server.error = reason
            return
        # Intercept only where a secret must be put in; the rest stays end-to-end encrypted.
        data.ignore_connection = not policy.secrets_for(host)

    def server_connect_error(self, data: ServerConnectionHookData) -> None:
        """A connection that could not be made (its name has no address the policy may reach,
        say: see `addresses`) is reported with the reason."""
        if data.server.address is not None:
            host, port = data.server.address
            name = domains.normal(str(host))
            self._attempt(data.client.peername[0], "connect", name, port, data.server.error)

    def addresses(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """socket.getaddrinfo for this process: a name resolves to the server's override for it,
        else to its public addresses only (private ones too if allowed; never loopback). An IP
        literal is left alone: no rule lets a request name one, and the proxy's own listener
        is bound by one."""
        text = host.decode() if isinstance(host, bytes) else str(host)
        if domains.is_ip(text):
            return _getaddrinfo(host, port, *args, **kwargs)
        name = domains.normal(text)
        if name in self.resolve:
            return _getaddrinfo(self.resolve[name], port, *args, **kwargs)
        kept = [
            entry
            for entry in _getaddrinfo(host, port, *args, **kwargs)
            if self._reachable(ipaddress.ip_address(entry[4][0]))
        ]
        if not kept:
            raise socket.gaierror(
                socket.EAI_NONAME, f"{name} resolves only to non-public addresses"
            )
        return kept

    def _reachable(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if (
            address.is_loopback
            or address.is_unspecified
            or address.is_link_local  # 169.254.169.254: a cloud's metadata service
            or address.is_multicast
            or address.is_reserved
        ):
            return False
        return address.is_global or (self.allow_private and address.is_private)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.request.method == "CONNECT":
            return
        policy = self._policy(flow.client_conn)
        refusal = "no network policy" if policy is None else self._request_refusal(flow, policy)
        host = domains.normal(flow.request.pretty_host)
        self._attempt(
            flow.client_conn.peername[0],
            flow.request.scheme,
            host,
            flow.request.port,
            refusal,
            method=flow.request.method,
            path=flow.request.path.split("?", 1)[0],
        )
        if refusal is not None:
            flow.response = http.Response.make(403, f"codeinterp egress: {refusal}\n")
        elif policy is not None and self._secrets(flow, policy):
            # The answer must be readable to take the value back out of it.
            flow.request.headers["accept-encoding"] = "identity"

    def _request_refusal(self, flow: http.HTTPFlow, policy: Policy) -> str | None:
        """Why a request is refused. The host the connection goes to (a tunnel's, or the
        request line's) and the Host header must agree, and inside a tunnel a request line
        may name no other host: the rules are checked against one name, the one reached."""
        host = domains.normal(flow.request.pretty_host)
        if len(host) > MAX_NAME:
            return "the Host header is not a name"
        tunnel = self.tunnels.get(flow.client_conn.id)
        if tunnel is None:
            target = domains.normal(flow.request.host)
            if host != target:
                return f"the Host header names {host}, the request line {target}"
        else:
            if host != tunnel:
                return f"the Host header names {host}, inside a tunnel to {tunnel}"
            if flow.request.authority:
                try:
                    named, _ = url.parse_authority(flow.request.authority, check=True)
                except ValueError:
                    return "the request line names no valid host"
                named = domains.normal(named)
                if named != tunnel:
                    return f"the request line names {named}, inside a tunnel to {tunnel}"
        return policy.refusal(host, flow.request.port, flow.request.scheme)

    def _secrets(self, flow: http.HTTPFlow, policy: Policy) -> list[Secret]:
        """The secrets of the request's domain, if it is intercepted HTTPS (never plain HTTP)."""
        if flow.request.scheme != "https" or not flow.client_conn.tls_established:
            return []
        return policy.secrets_for(domains.normal(flow.request.pretty_host))

    def request(self, flow: http.HTTPFlow) -> None:
        """The value in place of each placeholder, in the request line and headers only: a body
        is the kind of thing a domain keeps and shows again."""
        policy = self._policy(flow.client_conn)
        if policy is None or flow.response is not None:
            return
        for secret in self._secrets(flow, policy):
            _replace_in_headers(flow.request, secret.placeholder, secret.value)
            if secret.placeholder in flow.request.path:
                flow.request.path = flow.request.path.replace(secret.placeholder, secret.value)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        policy = self._policy(flow.client_conn)
        if policy is not None and flow.response is not None and self._secrets(flow, policy):
            flow.response.stream = False  # read whole (up to body_size_limit) to be cleaned

    def response(self, flow: http.HTTPFlow) -> None:
        """The value back into its placeholder, in what the secret's domain answers."""
        policy = self._policy(flow.client_conn)
        if policy is None or flow.response is None:
            return
        for secret in self._secrets(flow, policy):
            response = flow.response
            _replace_in_headers(response, secret.value, secret.placeholder)
            if response.headers.get("content-encoding"):
                response.decode(strict=False)
            content = response.raw_content
            if content and secret.value.encode() in content:
                response.content = content.replace(
                    secret.value.encode(), secret.placeholder.encode()
                )


def client_hello_progress(data: bytes | bytearray) -> tuple[bool, str | None]:
    """Whether a tunnel's first bytes can hold a whole TLS ClientHello yet, and why they are
    refused if they are. The parser walks the whole buffer at each call: it is called only
    once the ClientHello can be all there (its length is in its first four bytes), and one cut
    into more records than a client makes is refused, so bytes sent one at a time cost little."""
    if not data:
        return False, None
    if data[0] != 0x16 or (len(data) >= 6 and data[5] != 1):
        return False, NOT_TLS  # not a handshake record, or not one that starts a ClientHello
    if len(data) < 9:
        return False, None
    if int.from_bytes(data[3:5], "big") < 4:
        return False, "a TLS handshake cut too small"
    needed = 9 + int.from_bytes(data[6:9], "big")
    if needed > MAX_CLIENT_HELLO:
        return False, f"a TLS handshake past {MAX_CLIENT_HELLO} bytes"
    if len(data) > needed + 5 * MAX_CLIENT_HELLO_RECORDS:
        return False, "a TLS handshake in too many records"
    return len(data) >= needed, None


def status_phrase(phrase: str, why: str) -> str:
    """A status line's reason phrase that says why (printable ASCII, one line, clipped)."""
    said = "".join(c if " " <= c <= "~" else "?" for c in why)[:MAX_EVENT_TEXT]
    return f"{phrase} ({said})"


def _sni_refusal(host: str, sni: str) -> str | None:
    """Why a tunnel to `host` whose TLS names `sni` is refused: it must name the same host."""
    if sni != host:
        return f"TLS names {sni or 'no server'} inside a tunnel to {host}"
    return None


class SessionConnection(asyncio.Protocol):
    """One connection from a session's listener.

    The common case, a CONNECT that the session's policy allows to a domain without secrets, is
    served here: the answer, then the tunnel's TLS ClientHello, which must name the host, then
    the connection upstream and its bytes relayed untouched (relay.py). mitmproxy's layers would
    do the same at several times the cost per connection (docs/notes.md). Everything else (plain
    HTTP, a domain with secrets, a refusal, a request that does not parse) goes to mitmproxy
    with what was read so far, and is served by the hooks of `Egress`.
    """

    def __init__(self, egress: Egress, client: str) -> None:
        self.egress = egress
        self.client = client
        self.policy: Policy | None = None
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.step = self._sniff  # what to do with what came in
        self.ended = False  # the session sent its end
        self.host, self.port = "", 0
        self.idle: Any = None  # relay.Idle
        self.connecting: asyncio.Task[None] | None = None
        self.joined: Any = None  # relay.Relay, made with the connection upstream
        self.connected = False  # the connection upstream is made
        self.searched = 0  # bytes of the head already searched for its end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.egress.admit(self):
            transport.abort()
            self.step = self._ignore
            return
        self.idle = relay.Idle(relay.IDLE_SECONDS, self.abort)
        self.policy = self.egress.policies.get(self.client)
        if self.policy is None:  # dropped meanwhile: mitmproxy's hooks refuse it
            self._to_mitmproxy()

    def data_received(self, data: bytes) -> None:
        self.idle.touch()
        self.buffer += data
        self.step()

    def eof_received(self) -> bool:
        self.ended = True
        if self.step in (self._sniff, self._head):
            self._to_mitmproxy()  # it reads the end after what was sent
            return True
        self.abort()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # (Not called once the connection is mitmproxy's: its protocol is then another.)
        if self.joined is not None:  # not started: its connection upstream would stay open
            self.joined.abort()
        if self.idle is not None:
            self.idle.cancel()
        if self.connecting is not None and not self.connecting.done():
            # A name being looked up goes on in its thread, whatever: it counts against the
            # session's connections until it is done, so a session cannot pile them up.
            self.connecting.cancel()
            self.connecting.add_done_callback(lambda _: self.egress.release(self))
        else:
            self.egress.release(self)

    def abort(self) -> None:
        if self.joined is not None:  # the session's connection and the one made for it
            self.joined.abort()
        elif self.transport is not None:
            self.transport.abort()

    # -- the steps ------------------------------------------------------------------------------

    def _ignore(self) -> None:
        self.buffer.clear()

    def _sniff(self) -> None:
        """A tunnel starts with CONNECT; anything else is mitmproxy's at once."""
        start = bytes(self.buffer[: len(TUNNEL_START)])
        if not TUNNEL_START.startswith(start):
            self._to_mitmproxy()
        elif len(start) == len(TUNNEL_START):
            self.step = self._head
            self._head()

    def _head(self) -> None:
        # From where the last search stopped (less the end's own length): a head sent a byte
        # at a time is searched once, not once per byte.
        end = HEAD_END.search(self.buffer, max(0, self.searched - 3))
        self.searched = len(self.buffer)
        if end is None:
            if len(self.buffer) > MAX_REQUEST_HEAD:
                self._to_mitmproxy()  # which refuses it as it refuses any such head
            return
        lines = [line.rstrip(b"\r") for line in bytes(self.buffer[: end.start()]).split(b"\n")]
        try:
            request = http1.read_request_head(lines)
        except ValueError:
            self._to_mitmproxy()
            return
        host, port = domains.normal(request.host), request.port
        policy = self.policy
        if (
            request.method != "CONNECT"
            or policy is None
            or self.client not in self.egress.policies
            or policy.refusal(host, port, "https") is not None
            or policy.secrets_for(host)
        ):
            self._to_mitmproxy()
            return
        self.host, self.port = host, port
        assert self.transport is not None
        self.transport.write(request.data.http_version + b" 200 Connection established\r\n\r\n")
        # The connection upstream is made while the session starts its TLS: the host and port
        # are allowed, and nothing goes up it before the ClientHello is checked.
        self.joined = relay.Relay(self.transport, self.idle, lambda: self.egress.release(self))
        self.connecting = asyncio.get_running_loop().create_task(self._connect())
        self.egress._attempt(self.client, "https", host, port, None, method="CONNECT")
        del self.buffer[: end.end()]
        self.step = self._hello
        self._hello()

    def _hello(self) -> None:
        """The tunnel's first bytes: a TLS ClientHello that names the CONNECT's host."""
        ready, refusal = client_hello_progress(self.buffer)
        if ready:
            try:
                hello = tls_layer.parse_client_hello(bytes(self.buffer))
            except Exception:  # a ClientHello that does not parse (the parser raises its own)
                refusal = NOT_TLS
        if refusal is not None:
            self._refuse(f"{refusal} inside a tunnel to {self.host}", self.host)
            return
        if not ready or hello is None:  # more to come
            return
        sni = domains.normal(hello.sni or "")
        if self.client not in self.egress.policies:
            self._refuse("no network policy", sni or self.host)
        elif (refusal := _sni_refusal(self.host, sni)) is not None:
            self._refuse(refusal, sni or self.host)
        else:
            # What comes after waits in the socket until the relay starts.
            assert self.transport is not None
            self.transport.pause_reading()
            self.step = self._checked
            self._join()

    def _checked(self) -> None:
        """Bytes that came with the ClientHello's last chunk stay in the buffer."""

    def _refuse(self, reason: str, host: str) -> None:
        self.egress._attempt(self.client, "https", host, self.port, reason, method="TLS")
        self.step = self._ignore
        self.abort()

    async def _connect(self) -> None:
        assert self.joined is not None
        try:
            # Names resolve through `Egress.addresses`, as mitmproxy's own connections do.
            await asyncio.get_running_loop().create_connection(
                lambda: self.joined.server, self.host, self.port
            )
        except Exception as e:  # OSError mostly; anything else must not leave a silent 200
            self.egress._attempt(self.client, "connect", self.host, self.port, str(e) or repr(e))
            self.abort()
            return
        self.connected = True
        self._join()

    def _join(self) -> None:
        """Start the relay once the ClientHello was checked and the connection is made."""
        if self.step == self._checked and self.connected:
            self.step = self._ignore
            first, self.buffer = bytes(self.buffer), bytearray()
            self.joined.start(first)

    def _to_mitmproxy(self) -> None:
        """The connection, with what was read of it, to mitmproxy (`Egress.to_mitmproxy`)."""
        assert self.transport is not None
        self.step = self._ignore
        self.idle.cancel()  # mitmproxy has its own
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        writer = asyncio.StreamWriter(self.transport, protocol, reader, loop)
        if self.buffer:
            reader.feed_data(bytes(self.buffer))
            self.buffer.clear()
        if self.ended:
            reader.feed_eof()
        self.egress.serving.start(self.egress.to_mitmproxy(self, reader, writer))


def _replace_in_headers(message: http.Message, old: str, new: str) -> None:
    for name in list(message.headers.keys()):
        values = message.headers.get_all(name)
        if any(old in value for value in values):
            message.headers.set_all(name, [value.replace(old, new) for value in values])


def _bounded_request_head(self: Http1Server, event: Any) -> Any:
    """mitmproxy's own reading of a request head, with the bound it lacks (it holds any number
    of bytes until a head is whole): past MAX_REQUEST_HEAD, the answer is 431 and the
    connection is closed."""
    yield from _read_request_head(self, event)
    if self.state == self.read_headers and len(self.buf) > MAX_REQUEST_HEAD:
        reason = f"a request head past {MAX_REQUEST_HEAD} bytes"
        egress._attempt(self.conn.peername[0], "http", "", 0, reason)
        answer = http.Response.make(431, f"codeinterp egress: {reason}\n", {"Connection": "close"})
        answer.reason = "Request Header Fields Too Large"
        yield commands.SendData(self.conn, http1.assemble_response(answer))
        yield commands.CloseConnection(self.conn)
        self.state = self.done


def _bounded_client_hello(self: tls_layer.ClientTLSLayer, data: bytes) -> Any:
    """mitmproxy's own reading of a ClientHello (for a domain with secrets), held to what the
    tunnels served here are: no more than they take, and parsed only once it can be whole."""
    if not self.client_hello_parsed:
        ready, refusal = client_hello_progress(self.recv_buffer + data)
        if refusal is not None:
            return False, refusal
        if not ready:
            self.recv_buffer.extend(data)
            return False, None
    return (yield from _read_client_hello(self, data))


_read_request_head = Http1Server.read_headers
Http1Server.read_headers = _bounded_request_head
_read_client_hello = tls_layer.ClientTLSLayer.receive_handshake_data
tls_layer.ClientTLSLayer.receive_handshake_data = _bounded_client_hello
_getaddrinfo = socket.getaddrinfo
egress = Egress()
# Every name this process connects to is resolved by the rules above: asyncio, which mitmproxy
# connects with, looks socket.getaddrinfo up at each call.
socket.getaddrinfo = egress.addresses
addons = [egress]

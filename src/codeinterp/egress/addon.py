"""The egress proxy's rules, as a mitmproxy addon: loaded by `mitmdump -s` in the proxy's own
venv (.venv-egress), so it imports only the standard library and mitmproxy, never codeinterp.

The server (egress/proxy.py) owns the process and talks to it over two pipes:
- commands in, on stdin, one JSON object a line: `config` (name overrides, private addresses),
  `set` a client's policy, `drop` it, `sync` (answered once every earlier event is written);
- events out, on the descriptor named by CODEINTERP_EGRESS_EVENTS_FD: `ready` with the port,
  `ack` of a command, and one `attempt` for every connection or request a session tried,
  allowed or refused.

A client is a session: the server relays each session's connections from a distinct loopback
address (127.64.0.0/10), which is the key of its policy here. A client with no policy gets
nothing. What a policy allows:
- HTTPS through CONNECT to an allowed name and port (443 unless the entry names one), where the
  TLS ClientHello names the same host (no domain fronting, no smuggling another name through);
- HTTP in absolute form to an allowed name and port (80 unless named), Host header agreeing;
- never an IP literal, never a name that resolves only to non-public addresses (unless the
  server's configuration maps it or allows private ones); the proxy resolves names itself.
Connections to a domain with secrets are intercepted (TLS with the proxy's own CA, which the
session trusts); everything else passes through encrypted, untouched. In an intercepted request
to the secret's domain, each placeholder becomes the secret's value; in its response, the value
becomes the placeholder again. No other request ever carries a value.
"""

# No `from __future__ import annotations`: mitmproxy loads this file outside sys.modules,
# where dataclasses cannot resolve string annotations.
import asyncio
import ipaddress
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import ctx, http, tls
from mitmproxy.connection import Client
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class Rule:
    """One allowed entry: an exact name or `*.` a suffix, and a port (None: the scheme's)."""

    name: str
    wildcard: bool
    port: int | None

    @classmethod
    def parse(cls, entry: str) -> "Rule":
        entry = entry.strip().lower().rstrip(".")
        port: int | None = None
        host, sep, tail = entry.rpartition(":")
        if sep and tail.isdigit():
            entry, port = host, int(tail)
        wildcard = entry.startswith("*.")
        return cls(entry[2:] if wildcard else entry, wildcard, port)

    def matches(self, host: str, port: int, scheme: str) -> bool:
        if port != (self.port if self.port is not None else DEFAULT_PORTS[scheme]):
            return False
        if self.wildcard:
            return host.endswith("." + self.name)
        return host == self.name


@dataclass(frozen=True)
class Secret:
    domain: str
    placeholder: str
    value: str


@dataclass
class Policy:
    rules: list[Rule]
    secrets: list[Secret] = field(default_factory=list)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> "Policy":
        return cls(
            [Rule.parse(entry) for entry in data["allowed_domains"]],
            [
                Secret(s["domain"].lower().rstrip("."), s["placeholder"], s["value"])
                for s in data.get("secrets", [])
            ],
        )

    def refusal(self, host: str, port: int, scheme: str) -> str | None:
        """Why a connection to host:port is refused, or None if it is allowed."""
        if _is_ip(host):
            return "an IP address, not a name: only allowed domain names are reachable"
        if any(rule.matches(host, port, scheme) for rule in self.rules):
            return None
        if any(
            rule.matches(host, rule.port or DEFAULT_PORTS[scheme], scheme) for rule in self.rules
        ):
            return f"port {port} is not allowed for {host}"
        return f"{host} is not in the allowed domains"

    def secrets_for(self, host: str) -> list[Secret]:
        return [s for s in self.secrets if s.domain == host]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _normal(host: str) -> str:
    return host.lower().rstrip(".")


class Egress:
    def __init__(self) -> None:
        self.policies: dict[str, Policy] = {}
        self.resolve: dict[str, str] = {}
        self.allow_private = False
        self.tunnels: dict[str, str] = {}  # client connection id -> the host CONNECT opened
        self._events = os.fdopen(int(os.environ["CODEINTERP_EGRESS_EVENTS_FD"]), "w", 1)
        self._write_lock = threading.Lock()

    # -- the control channel ------------------------------------------------------------------

    def running(self) -> None:
        threading.Thread(target=self._read_commands, name="egress-commands", daemon=True).start()
        asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        while not proxyserver.listen_addrs():
            await asyncio.sleep(0.01)
        self._emit({"event": "ready", "port": proxyserver.listen_addrs()[0][1]})

    def _read_commands(self) -> None:
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            if op == "config":
                self.resolve = {_normal(k): v for k, v in command.get("resolve", {}).items()}
                self.allow_private = bool(command.get("allow_private", False))
            elif op == "set":
                self.policies[command["client"]] = Policy.parse(command["policy"])
            elif op == "drop":
                self.policies.pop(command["client"], None)
            self._emit({"event": "ack", "id": command.get("id")})
        # The server is gone: so is the reason to exist.
        os._exit(0)

    def _emit(self, event: dict[str, Any]) -> None:
        with self._write_lock:
            self._events.write(json.dumps(event) + "\n")

    def _attempt(
        self, client: str, scheme: str, host: str, port: int, refusal: str | None, **extra: Any
    ) -> None:
        self._emit(
            {
                "event": "attempt",
                "client": client,
                "scheme": scheme,
                "host": host,
                "port": port,
                "allowed": refusal is None,
                "reason": refusal,
                **extra,
            }
        )

    # -- the rules ----------------------------------------------------------------------------

    def client_connected(self, client: Client) -> None:
        if client.peername[0] not in self.policies:
            client.error = "no network policy for this client"

    def client_disconnected(self, client: Client) -> None:
        self.tunnels.pop(client.id, None)

    def _policy(self, client: Client) -> Policy | None:
        return self.policies.get(client.peername[0])

    def http_connect(self, flow: http.HTTPFlow) -> None:
        policy = self._policy(flow.client_conn)
        host, port = _normal(flow.request.host), flow.request.port
        refusal = "no network policy" if policy is None else policy.refusal(host, port, "https")
        self._attempt(flow.client_conn.peername[0], "https", host, port, refusal, method="CONNECT")
        if refusal is not None:
            flow.response = http.Response.make(403, f"codeinterp egress: {refusal}\n")
            return
        self.tunnels[flow.client_conn.id] = host

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        client = data.context.client
        policy = self._policy(client)
        target = data.context.server.address
        host = _normal(target[0]) if target else ""
        sni = _normal(data.client_hello.sni or "")
        if policy is None or sni != host:
            reason = (
                "no network policy"
                if policy is None
                else f"TLS names {sni or 'no server'} inside a tunnel to {host}"
            )
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

    def server_connect(self, data: ServerConnectionHookData) -> None:
        """Resolve the name here, keeping only addresses the policy may reach."""
        if data.server.address is None:
            return
        host, port = data.server.address
        host = _normal(host)
        try:
            address = self._resolve(host, port)
        except OSError as e:
            data.server.error = f"cannot resolve {host}: {e}"
            self._attempt(data.client.peername[0], "dns", host, port, data.server.error)
            return
        if address is None:
            data.server.error = f"{host} resolves only to non-public addresses"
            self._attempt(data.client.peername[0], "dns", host, port, data.server.error)
            return
        if data.server.sni is None and not _is_ip(host):
            data.server.sni = host
        data.server.address = (address, port)

    def _resolve(self, host: str, port: int) -> str | None:
        if host in self.resolve:
            return self.resolve[host]
        for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            address = ipaddress.ip_address(sockaddr[0])
            if address.is_global or (self.allow_private and not address.is_loopback):
                return str(address)
        return None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.request.method == "CONNECT":
            return
        client = flow.client_conn.peername[0]
        policy = self._policy(flow.client_conn)
        # The host the connection goes to (a tunnel's, or the request line's) and the Host
        # header must agree: the rules are checked against one name, the one reached.
        host = _normal(flow.request.pretty_host)
        tunnel = self.tunnels.get(flow.client_conn.id)
        target = tunnel if tunnel is not None else _normal(flow.request.host)
        scheme, port = flow.request.scheme, flow.request.port
        if policy is None:
            refusal: str | None = "no network policy"
        elif host != target:
            where = "a tunnel to" if tunnel is not None else "the request line names"
            refusal = f"the Host header names {host}, {where} {target}"
        else:
            refusal = policy.refusal(host, port, scheme)
        self._attempt(
            client,
            scheme,
            host,
            port,
            refusal,
            method=flow.request.method,
            path=flow.request.path.split("?", 1)[0][:200],
        )
        if refusal is not None:
            flow.response = http.Response.make(403, f"codeinterp egress: {refusal}\n")

    def request(self, flow: http.HTTPFlow) -> None:
        policy = self._policy(flow.client_conn)
        if policy is None or flow.response is not None or flow.request.scheme != "https":
            return
        for secret in policy.secrets_for(_normal(flow.request.pretty_host)):
            _replace(flow.request, secret.placeholder, secret.value)

    def response(self, flow: http.HTTPFlow) -> None:
        policy = self._policy(flow.client_conn)
        if policy is None or flow.response is None or flow.request.scheme != "https":
            return
        for secret in policy.secrets_for(_normal(flow.request.pretty_host)):
            _replace(flow.response, secret.value, secret.placeholder)


def _replace(message: http.Message, old: str, new: str) -> None:
    for name, value in list(message.headers.items(multi=True)):
        if old in value:
            values = message.headers.get_all(name)
            message.headers.set_all(name, [v.replace(old, new) for v in values])
    if isinstance(message, http.Request) and old in message.path:
        message.path = message.path.replace(old, new)
    content = message.raw_content
    if content and old.encode() in content and not message.headers.get("content-encoding"):
        message.content = content.replace(old.encode(), new.encode())


addons = [Egress()]

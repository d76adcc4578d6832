"""Which (host, port) a network policy's allowed entries let through: the one definition, used
where a policy is checked (egress/policy.py), where it is enforced (egress/addon.py, in the
proxy's own venv, which loads this file by its path) and in a session (`%pip`, which says at
once that an index is not allowed). The standard library only, and no imports of this package.

An entry is a name (`api.example.com`) or `*.` and a suffix (`*.example.com`: its subdomains,
not the name itself), with an optional port (`api.example.com:8443`); without one, HTTPS may use
443 and HTTP 80. Names compare in lower case, without a trailing dot.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_PORTS = {"https": 443, "http": 80}


def normal(host: str) -> str:
    return host.strip().lower().rstrip(".")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Rule:
    """One allowed entry: an exact name or a suffix's subdomains, and a port (None: the
    scheme's)."""

    name: str
    wildcard: bool
    port: int | None

    @classmethod
    def parse(cls, entry: str) -> Rule:
        text = normal(entry)
        port: int | None = None
        host, sep, tail = text.rpartition(":")
        if sep and tail.isdigit():
            text, port = host, int(tail)
        wildcard = text.startswith("*.")
        return cls(text[2:] if wildcard else text, wildcard, port)

    def covers(self, host: str) -> bool:
        """The name is this entry's (whatever the port)."""
        return host.endswith("." + self.name) if self.wildcard else host == self.name

    def matches(self, host: str, port: int, scheme: str) -> bool:
        wanted = self.port if self.port is not None else DEFAULT_PORTS[scheme]
        return port == wanted and self.covers(host)


def refusal(rules: list[Rule], host: str, port: int, scheme: str) -> str | None:
    """Why a connection to host:port is refused, or None if an entry allows it."""
    host = normal(host)
    if is_ip(host):
        return "an IP address, not a name: only allowed domain names are reachable"
    if any(rule.matches(host, port, scheme) for rule in rules):
        return None
    if any(rule.covers(host) for rule in rules):
        return f"port {port} is not allowed for {host}"
    return f"{host} is not in the allowed domains"

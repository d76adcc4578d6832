"""A session's network policy as a checked value: which domains it may reach, and the secrets the
egress proxy puts into requests to their domains (OpenAI's `ContainerNetworkPolicy*` shapes).

An allowed entry is a name (`api.example.com`), a wildcard for its subdomains (`*.example.com`,
not the name itself), either with an optional port (`api.example.com:8443`); without one, HTTPS
may use 443 and HTTP 80. A secret is seen by the session only as a placeholder, in an
environment variable of the secret's name; the proxy swaps in the value on the way out to the
secret's domain and swaps it back out of what that domain answers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from codeinterp.errors import InvalidRequest
from codeinterp.sandbox import domains
from codeinterp.sandbox.policy import (
    ALLOWED_DOMAINS_VARIABLE,
    CA_BUNDLE_VARIABLES,
    NO_PROXY_VARIABLES,
    PROXY_VARIABLES,
    SESSION_ENV,
)

MAX_DOMAINS = 256
MAX_SECRETS = 64
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Names a secret may not take: the session's own settings, which the proxy and its CAs rely on.
RESERVED_VARIABLES = frozenset(
    {name for name, _ in SESSION_ENV}
    | set(CA_BUNDLE_VARIABLES)
    | set(PROXY_VARIABLES)
    | set(NO_PROXY_VARIABLES)
    | {ALLOWED_DOMAINS_VARIABLE, "PIP_TARGET", "PIP_RETRIES", "PIP_TIMEOUT"}
    | {"PYTHONPATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "PIP_NO_INDEX"}
)


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="network_policy")


def parse_domain(entry: str) -> tuple[str, int | None]:
    """(name, port) of an allowed entry, lower case, `*.` kept; InvalidRequest if malformed."""
    text = entry.strip().lower().rstrip(".")
    port: int | None = None
    host, sep, tail = text.rpartition(":")
    if sep:
        if not tail.isdigit() or not 0 < int(tail) < 65536:
            raise _bad(f"allowed domain {entry!r}: the port must be a number from 1 to 65535")
        text, port = host, int(tail)
    name = text[2:] if text.startswith("*.") else text
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        raise _bad(f"allowed domain {entry!r}: an IP address; only domain names can be allowed")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise _bad(
            f"allowed domain {entry!r} is not a domain name "
            "(like api.example.com, *.example.com or api.example.com:8443)"
        )
    return text, port


@dataclass(frozen=True)
class DomainSecret:
    domain: str
    name: str
    value: str

    @property
    def placeholder(self) -> str:
        """What the session sees instead of the value: the same in every session, so a state
        that kept it in a variable still works after a sleep."""
        return f"codeinterp-secret-{self.name}"


@dataclass(frozen=True)
class NetworkPolicy:
    """`disabled` (no domains) or `allowlist`."""

    allowed_domains: tuple[str, ...] = ()
    domain_secrets: tuple[DomainSecret, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_domains)

    @classmethod
    def from_request(cls, data: dict[str, Any] | None) -> NetworkPolicy:
        """From OpenAI's shape (validated here, beyond what the wire model checks)."""
        if not data or data.get("type", "disabled") == "disabled":
            return cls()
        entries = list(data.get("allowed_domains") or [])
        if not entries:
            raise _bad("an allowlist needs at least one allowed domain")
        if len(entries) > MAX_DOMAINS:
            raise _bad(f"at most {MAX_DOMAINS} allowed domains")
        parsed = [parse_domain(entry) for entry in entries]
        secrets = [
            DomainSecret(domains.normal(str(s["domain"])), str(s["name"]), str(s["value"]))
            for s in data.get("domain_secrets") or []
        ]
        if len(secrets) > MAX_SECRETS:
            raise _bad(f"at most {MAX_SECRETS} domain secrets")
        names = [secret.name for secret in secrets]
        for secret in secrets:
            if not _VARIABLE.match(secret.name):
                raise _bad(
                    f"domain secret name {secret.name!r}: use letters, digits and _ "
                    "(it is the name of the variable that holds its placeholder)"
                )
            if secret.name in RESERVED_VARIABLES:
                raise _bad(f"domain secret name {secret.name!r} is a variable the sandbox sets")
            if names.count(secret.name) > 1:
                raise _bad(f"domain secret name {secret.name!r} is used twice")
            if not any(domains.Rule.parse(text).covers(secret.domain) for text, _ in parsed):
                raise _bad(f"domain secret for {secret.domain!r}: that domain is not allowed")
        return cls(tuple(domains.normal(entry) for entry in entries), tuple(secrets))

    def to_wire(self) -> dict[str, Any]:
        """OpenAI's container field: the secrets are never shown."""
        if not self.enabled:
            return {"type": "disabled"}
        return {"type": "allowlist", "allowed_domains": list(self.allowed_domains)}

    def stored_secrets(self) -> list[dict[str, str]] | None:
        """The secrets as the database keeps them (beside the wire shape, never in it): a
        container woken after a restart needs them."""
        if not self.domain_secrets:
            return None
        return [{"domain": s.domain, "name": s.name, "value": s.value} for s in self.domain_secrets]

    def for_proxy(self) -> dict[str, Any]:
        """The policy as the proxy's addon takes it."""
        return {
            "allowed_domains": list(self.allowed_domains),
            "secrets": [
                {"domain": s.domain, "placeholder": s.placeholder, "value": s.value}
                for s in self.domain_secrets
            ],
        }

    def placeholders(self) -> dict[str, str]:
        """The session's variables: each secret's name, holding its placeholder."""
        return {s.name: s.placeholder for s in self.domain_secrets}


NO_NETWORK = NetworkPolicy()  # `disabled`: loopback only

"""Network policies: what a session may reach, through an egress proxy the server owns.

`policy.py` is the checked value (OpenAI's `disabled` / `allowlist` with domain secrets),
`proxy.py` runs the proxy and hands it each session's listener, `addon.py` holds the rules
inside the proxy's own process, and `relay.py` carries the passthrough tunnels' bytes there.
Used by the sessions layer; uses the sandbox's `netns` for the listener inside a session.
"""

from codeinterp.errors import EgressUnavailable

from .policy import NO_NETWORK, DomainSecret, NetworkPolicy
from .proxy import EgressProxy, EgressSettings, Lease, default_mitmdump

__all__ = [
    "NO_NETWORK",
    "DomainSecret",
    "EgressProxy",
    "EgressSettings",
    "EgressUnavailable",
    "Lease",
    "NetworkPolicy",
    "default_mitmdump",
]

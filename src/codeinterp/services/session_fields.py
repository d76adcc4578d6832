"""The session fields of a create or modify body (an environment and a network policy), checked
and turned into what the object stores: the same for containers and assistants."""

from __future__ import annotations

from typing import Any

from codeinterp.egress import NetworkPolicy
from codeinterp.protocol.containers import NetworkPolicy as NetworkPolicyParam
from codeinterp.sandbox import environments


def session_fields(
    data_dir: str, environment: str | None, network_policy: NetworkPolicyParam | None
) -> dict[str, Any]:
    """`environment` pinned to NAME@VERSION, `network_policy` in its wire shape (None if not
    asked for) and `domain_secrets` as stored; InvalidRequest for an unknown environment or a
    malformed policy."""
    fields: dict[str, Any] = {}
    if environment is not None:
        fields["environment"] = environments.for_session(data_dir, environment).id
    if network_policy is not None:
        network = NetworkPolicy.from_request(network_policy.model_dump(exclude_none=True))
        fields["network_policy"] = network.to_wire()
        fields["domain_secrets"] = network.stored_secrets()
    return fields

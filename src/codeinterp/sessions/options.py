"""What an owner's stored fields ask of its sessions, as SessionOptions: the packages of its
environment and its network policy. One function, for every owner that has such fields (a
container, an assistant's threads)."""

from __future__ import annotations

from typing import Any

from codeinterp.egress import NetworkPolicy
from codeinterp.sandbox import environments

from .manager import SessionOptions


def options_for(
    data_dir: str,
    environment: str | None,
    network_request: dict[str, Any] | None,
    **rest: Any,
) -> SessionOptions:
    """`environment`: NAME@VERSION (its packages; InvalidRequest if it is gone);
    `network_request`: the policy in OpenAI's shape, secrets included; `rest`: the other
    SessionOptions fields."""
    packages = (
        environments.for_session(data_dir, environment).site_packages if environment else None
    )
    return SessionOptions(
        packages=packages, network=NetworkPolicy.from_request(network_request), **rest
    )

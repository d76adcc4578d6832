"""The Containers API's objects (OpenAI's shapes) and our execute extension."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

from .common import RequestModel, WireModel

MEMORY_LIMITS = ("1g", "4g", "16g", "64g")
DEFAULT_EXPIRY_MINUTES = 20
STORED = "stored"  # the serialization context of what the database keeps
MAX_EXPIRY_MINUTES = 7 * 24 * 60


class ExpiresAfter(RequestModel):
    anchor: Literal["last_active_at"]
    minutes: int = Field(ge=1, le=MAX_EXPIRY_MINUTES)


class DomainSecretParam(RequestModel):
    domain: str = Field(min_length=1, max_length=253)
    name: str = Field(min_length=1, max_length=128)
    value: str = Field(min_length=1, max_length=10 * 1024 * 1024)


class NetworkPolicy(RequestModel):
    """OpenAI's `ContainerNetworkPolicyDisabledParam` / `...AllowlistParam`; what the entries
    mean is checked by egress.NetworkPolicy.from_request."""

    type: Literal["disabled", "allowlist"]
    allowed_domains: list[str] | None = Field(default=None, max_length=256)
    domain_secrets: list[DomainSecretParam] | None = Field(
        default=None, min_length=1, max_length=64
    )


class ContainerCreate(RequestModel):
    name: str = Field(max_length=256)
    expires_after: ExpiresAfter | None = None
    file_ids: list[str] = Field(default_factory=list, max_length=50)
    memory_limit: Literal["1g", "4g", "16g", "64g"] | None = None
    network_policy: NetworkPolicy | None = None
    # An extension: a File of purpose "snapshot" (POST /v1/containers/{id}/snapshots, or an
    # uploaded archive) whose variables and files the new container starts with.
    snapshot_id: str | None = Field(default=None, max_length=256)
    # An extension: an environment (`codeinterp env build`), NAME or NAME@VERSION, whose
    # packages the container has on top of the default set.
    environment: str | None = Field(default=None, max_length=80)


class SessionFields(WireModel):
    """What an object asks of the sessions it makes (a container's, an assistant's threads'):
    an environment and a network policy. The policy's secrets are kept in the database with the
    object and never shown; `environment`, and an assistant's `network_policy`, only when set."""

    network_policy: dict[str, Any] | None = None
    environment: str | None = None  # an extension (NAME@VERSION)
    # The allowlist's secrets ({domain, name, value}): kept in the database, never shown.
    domain_secrets: list[dict[str, str]] | None = None

    @model_serializer(mode="wrap")
    def _shape(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        body: dict[str, Any] = handler(self)
        for name in ("environment", "network_policy"):
            if body.get(name) is None:
                body.pop(name, None)
        if info.context != STORED or body.get("domain_secrets") is None:
            body.pop("domain_secrets", None)
        return body

    def stored(self) -> dict[str, Any]:
        """The object as the database keeps it (its secrets too)."""
        return self.model_dump(mode="json", context=STORED)

    @property
    def allowed_domains(self) -> list[str]:
        """What the network policy lets the sessions reach (none: no network)."""
        return list((self.network_policy or {}).get("allowed_domains") or [])

    def network_request(self) -> dict[str, Any] | None:
        """The network policy as it was asked for, secrets included (None: none asked)."""
        if self.network_policy is None:
            return None
        return {**self.network_policy, "domain_secrets": self.domain_secrets}


class Container(SessionFields):
    id: str
    object: Literal["container"] = "container"
    name: str
    created_at: int
    status: Literal["running", "expired"] = "running"
    last_active_at: int
    expires_after: dict[str, Any]
    memory_limit: str = "1g"
    network_policy: dict[str, Any] | None = Field(default_factory=lambda: {"type": "disabled"})


class ContainerFile(WireModel):
    id: str
    object: Literal["container.file"] = "container.file"
    created_at: int
    bytes: int
    container_id: str
    path: str
    source: Literal["user", "assistant"]


class ContainerFileCreate(RequestModel):
    file_id: str


class ExecuteRequest(RequestModel):
    code: str = Field(max_length=4 * 1024 * 1024)
    timeout: float | None = Field(default=None, gt=0, le=24 * 3600)
    stream: bool = False

"""Pieces shared by every resource: the base model, lists, deletions, errors, metadata."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

log = logging.getLogger("codeinterp.protocol")


class WireModel(BaseModel):
    """Objects we send: extra fields are kept (stored bodies may be newer than this code), and
    assignments are validated, so `run.usage = {...}` becomes a Usage like any parsed field."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


class RequestModel(BaseModel):
    """Bodies we receive: unknown fields are accepted and logged, never an error."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_unknown_fields(self) -> RequestModel:
        if self.model_extra:
            log.info(
                "%s: ignoring unknown fields %s", type(self).__name__, sorted(self.model_extra)
            )
        return self


def check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's rule: at most 16 pairs, keys up to 64 characters, string values up to 512."""
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError("metadata can hold at most 16 key-value pairs")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"metadata key {key[:20]!r}... is longer than 64 characters")
        if not isinstance(item, str):
            raise ValueError(f"metadata value for {key!r} must be a string")
        if len(item) > 512:
            raise ValueError(f"metadata value for {key!r} is longer than 512 characters")
    return value


class WithMetadata(RequestModel):
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(value)

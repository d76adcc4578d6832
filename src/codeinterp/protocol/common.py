"""Pieces shared by every resource: the base model, lists, deletions, errors, metadata."""

from __future__ import annotations

import logging
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

log = logging.getLogger("codeinterp.protocol")

T = TypeVar("T")


def is_none(value: object) -> bool:
    return value is None


# A field of an object we send that OpenAI's schema types as a string, number or object, never
# null, and does not require: left out of the wire object while it is None. (A field the schema
# lets be null, such as a message's `assistant_id`, stays an ordinary `X | None` and is sent.)
OrAbsent = Annotated[T | None, Field(exclude_if=is_none)]


def _not_null(value: T | None) -> T | None:
    if value is None:
        raise PydanticCustomError("null_not_allowed", "expected a value, but got null instead")
    return value


# A field of a request that may be left out but, when sent, must not be null (OpenAI's schema
# gives it no null), such as `model` when modifying an assistant.
NotNull = Annotated[T | None, AfterValidator(_not_null)]


class Shape(BaseModel):
    """A nested object of a request that is checked against OpenAI's schema but kept as plain
    JSON (see `validated_as`); keys the schema does not have are dropped."""

    model_config = ConfigDict(extra="ignore")


def _as_sent(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return value


def validated_as(shape: Any) -> GetPydanticSchema:
    """For `Annotated[dict[str, Any] | None, validated_as(Model | None)]`: the value is checked
    as `shape` (errors name the exact field), then kept as the JSON the client sent, less
    unknown keys, for code that copies it into stored objects and on to the model."""

    def schema(source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(
            _as_sent, handler.generate_schema(shape)
        )

    return GetPydanticSchema(schema)


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

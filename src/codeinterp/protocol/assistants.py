"""Assistants: tools, tool resources, create and modify bodies, the Assistant object."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from .common import NotNull, OrAbsent, Shape, WireModel, WithMetadata, validated_as
from .containers import NetworkPolicy, SessionFields


class FunctionDefinition(WireModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: OrAbsent[str] = None
    parameters: OrAbsent[dict[str, Any]] = None
    strict: bool | None = None


class CodeInterpreterTool(WireModel):
    type: Literal["code_interpreter"] = "code_interpreter"


class FileSearchTool(WireModel):
    type: Literal["file_search"] = "file_search"
    file_search: OrAbsent[dict[str, Any]] = None


class FunctionTool(WireModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


Tool = Annotated[CodeInterpreterTool | FileSearchTool | FunctionTool, Field(discriminator="type")]


class CodeInterpreterResources(WireModel):
    file_ids: list[str] = Field(default_factory=list, max_length=20)


class ToolResources(WireModel):
    """A resource the object has no use for is left out: `{}`, never `{"file_search": null}`."""

    code_interpreter: OrAbsent[CodeInterpreterResources] = None
    file_search: OrAbsent[dict[str, Any]] = None


# -- response_format, as OpenAI's AssistantsApiResponseFormatOption -------------------------------


class TextFormat(Shape):
    type: Literal["text"]


class JsonObjectFormat(Shape):
    type: Literal["json_object"]


class JsonSchemaSpec(Shape):
    name: str
    description: NotNull[str] = None
    schema_: NotNull[dict[str, Any]] = Field(default=None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(Shape):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


FormatObject = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]
# "auto" or a format object, checked and kept as sent
ResponseFormat = Annotated[Any, validated_as(Literal["auto"] | FormatObject | None)]


class AssistantFields(WithMetadata):
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=256_000)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_resources: ToolResources | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    response_format: ResponseFormat = None
    reasoning_effort: str | None = None
    # Extensions: the environment (NAME or NAME@VERSION) and the network policy (OpenAI's
    # container shape) of the sessions its threads' runs make.
    environment: str | None = Field(default=None, max_length=80)
    network_policy: NetworkPolicy | None = None


class AssistantCreate(AssistantFields):
    model: str = Field(min_length=1)


class AssistantUpdate(AssistantFields):
    """Left out, a field keeps its value; `model` and `tools` cannot be set to null."""

    model: NotNull[str] = None
    tools: NotNull[list[Tool]] = Field(default=None, max_length=128)

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("model must not be empty")
        return value


class Assistant(SessionFields):
    id: str
    object: Literal["assistant"] = "assistant"
    created_at: int
    name: str | None = None
    description: str | None = None
    model: str
    instructions: str | None = None
    tools: list[Tool] = Field(default_factory=list)
    tool_resources: ToolResources | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    temperature: float | None = None
    top_p: float | None = None
    response_format: Any = "auto"

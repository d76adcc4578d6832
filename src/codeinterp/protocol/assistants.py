"""Assistants: tools, tool resources, create and modify bodies, the Assistant object."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from .common import WireModel, WithMetadata


class FunctionDefinition(WireModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class CodeInterpreterTool(WireModel):
    type: Literal["code_interpreter"] = "code_interpreter"


class FileSearchTool(WireModel):
    type: Literal["file_search"] = "file_search"
    file_search: dict[str, Any] | None = None


class FunctionTool(WireModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


Tool = Annotated[CodeInterpreterTool | FileSearchTool | FunctionTool, Field(discriminator="type")]


class CodeInterpreterResources(WireModel):
    file_ids: list[str] = Field(default_factory=list, max_length=20)


class ToolResources(WireModel):
    code_interpreter: CodeInterpreterResources | None = None
    file_search: dict[str, Any] | None = None


class AssistantFields(WithMetadata):
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=256_000)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_resources: ToolResources | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    response_format: Any = None
    reasoning_effort: str | None = None


class AssistantCreate(AssistantFields):
    model: str = Field(min_length=1)


class AssistantUpdate(AssistantFields):
    model: str | None = None

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("model must not be empty")
        return value


class Assistant(WireModel):
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

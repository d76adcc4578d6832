"""Runs and run steps: request bodies and the wire objects."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .assistants import ResponseFormat, Tool
from .common import NotNull, RequestModel, Shape, WireModel, WithMetadata, validated_as
from .threads import MessageCreate, ThreadCreate

RunStatus = Literal[
    "queued",
    "in_progress",
    "requires_action",
    "cancelling",
    "cancelled",
    "failed",
    "completed",
    "incomplete",
    "expired",
]
ACTIVE_RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")


# -- tool_choice and truncation_strategy, as OpenAI's schema has them --------------------------


class FunctionName(Shape):
    name: str


class NamedToolChoice(Shape):
    type: Literal["function", "code_interpreter", "file_search"]
    function: NotNull[FunctionName] = None


class TruncationStrategy(Shape):
    type: Literal["auto", "last_messages"]
    last_messages: int | None = Field(default=None, ge=1)


# checked, and kept as sent (the run stores them and hands them to the model as they are)
ToolChoice = Annotated[
    Any, validated_as(Literal["none", "auto", "required"] | NamedToolChoice | None)
]
Truncation = Annotated[dict[str, Any] | None, validated_as(TruncationStrategy | None)]


class RunFields(WithMetadata):
    model: str | None = None
    instructions: str | None = None
    additional_instructions: str | None = None
    tools: list[Tool] | None = Field(default=None, max_length=20)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_prompt_tokens: int | None = Field(default=None, ge=256)
    max_completion_tokens: int | None = Field(default=None, ge=16)
    truncation_strategy: Truncation = None
    tool_choice: ToolChoice = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat = None
    reasoning_effort: str | None = None
    stream: bool | None = None


class RunCreate(RunFields):
    assistant_id: str
    additional_messages: list[MessageCreate] | None = None


class ThreadAndRunCreate(RunFields):
    assistant_id: str
    thread: ThreadCreate | None = None
    tool_resources: dict[str, Any] | None = None


class RunUpdate(WithMetadata):
    pass


class ToolOutput(RequestModel):
    tool_call_id: str
    output: str = ""


class SubmitToolOutputs(RequestModel):
    tool_outputs: list[ToolOutput]
    stream: bool | None = None


class Usage(WireModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class LastError(WireModel):
    code: str
    message: str


class FunctionCall(WireModel):
    name: str
    arguments: str
    output: str | None = None


class RequiredToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SubmitToolOutputsAction(WireModel):
    tool_calls: list[RequiredToolCall]


class RequiredAction(WireModel):
    type: Literal["submit_tool_outputs"] = "submit_tool_outputs"
    submit_tool_outputs: SubmitToolOutputsAction


class Run(WireModel):
    id: str
    object: Literal["thread.run"] = "thread.run"
    created_at: int
    thread_id: str
    assistant_id: str
    status: RunStatus = "queued"
    required_action: RequiredAction | None = None
    last_error: LastError | None = None
    expires_at: int | None = None
    started_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    incomplete_details: dict[str, Any] | None = None
    model: str
    instructions: str = ""
    tools: list[Tool] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    usage: Usage | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: dict[str, Any] = Field(
        default_factory=lambda: {"type": "auto", "last_messages": None}
    )
    response_format: Any = "auto"
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True


class RunStep(WireModel):
    id: str
    object: Literal["thread.run.step"] = "thread.run.step"
    created_at: int
    assistant_id: str
    thread_id: str
    run_id: str
    type: Literal["message_creation", "tool_calls"]
    status: Literal["in_progress", "cancelled", "failed", "completed", "expired"] = "in_progress"
    step_details: dict[str, Any]
    last_error: LastError | None = None
    expired_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    usage: Usage | None = None

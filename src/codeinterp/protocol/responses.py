"""The Responses API's request (POST /v1/responses), checked as OpenAI checks it, for the tools
this server runs: `code_interpreter` (in a container) and `function` (answered by the client)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from codeinterp.errors import InvalidRequest

from .common import RequestModel, Shape, check_metadata, validated_as
from .containers import MEMORY_LIMITS, NetworkPolicy

INCLUDE_OUTPUTS = "code_interpreter_call.outputs"
# Fields OpenAI's schema lets be null, meaning their default.
NULL_IS_DEFAULT = ("stream", "store", "parallel_tool_calls")


class AutoContainer(RequestModel):
    type: Literal["auto"]
    file_ids: list[str] = Field(default_factory=list, max_length=50)
    memory_limit: Literal["1g", "4g", "16g", "64g"] | None = None
    network_policy: NetworkPolicy | None = None


class CodeInterpreterTool(RequestModel):
    type: Literal["code_interpreter"]
    container: str | AutoContainer


class FunctionTool(RequestModel):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


def _check_tool(tool: Any) -> CodeInterpreterTool | FunctionTool:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind == "code_interpreter":
        return CodeInterpreterTool.model_validate(tool)
    if kind == "function":
        return FunctionTool.model_validate(tool)
    raise ValueError(
        f"tool type {kind!r} is not supported here: use 'code_interpreter' or 'function'"
    )


class TextFormat(Shape):
    """`text.format` of a request: plain text, JSON, or JSON that a schema describes."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_needs_a_name(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise ValueError("a json_schema format needs a name and a schema")
        return self


class TextConfig(Shape):
    format: TextFormat | None = None


class ResponseCreate(RequestModel):
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    include: list[str] | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    parallel_tool_calls: bool = True
    text: Annotated[dict[str, Any] | None, validated_as(TextConfig | None)] = None
    metadata: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=16)
    background: bool | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(value)

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for tool in value:
            checked = _check_tool(tool)
            if isinstance(checked, FunctionTool) and checked.name == "python":
                raise ValueError("the function name 'python' is reserved for code_interpreter")
        if sum(1 for t in value if t.get("type") == "code_interpreter") > 1:
            raise ValueError("at most one code_interpreter tool")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str) and value not in ("auto", "none", "required"):
            raise ValueError("must be 'auto', 'none', 'required' or a tool")
        return value

    @field_validator("input")
    @classmethod
    def _input(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, list) and not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """OpenAI's schema lets these flags be null, which means their default."""
        if isinstance(data, dict) and any(data.get(k, False) is None for k in NULL_IS_DEFAULT):
            return {k: v for k, v in data.items() if not (k in NULL_IS_DEFAULT and v is None)}
        return data

    @model_validator(mode="after")
    def _unsupported(self) -> ResponseCreate:
        if self.background:
            raise ValueError("background responses are not supported by this server")
        return self

    @model_validator(mode="after")
    def _outputs_answer_calls(self) -> ResponseCreate:
        """Without a previous response, a function call's output must follow the call in the
        input (with one, the call may be in that response; the service checks it there)."""
        if self.previous_response_id or isinstance(self.input, str):
            return self
        called: set[Any] = set()
        for item in self.input:
            if item.get("type") == "function_call":
                called.add(item.get("call_id"))
            elif item.get("type") == "function_call_output" and item.get("call_id") not in called:
                raise InvalidRequest(
                    "No tool call found for function call output with call_id "
                    f"{item.get('call_id')}.",
                    param="input",
                )
        return self

    def code_interpreter(self) -> CodeInterpreterTool | None:
        for tool in self.tools:
            if tool.get("type") == "code_interpreter":
                return CodeInterpreterTool.model_validate(tool)
        return None

    def functions(self) -> list[FunctionTool]:
        return [FunctionTool.model_validate(t) for t in self.tools if t.get("type") == "function"]

    def response_format(self) -> dict[str, Any] | None:
        """`text.format` as Chat Completions' `response_format` for the model (None: text)."""
        chosen = (self.text or {}).get("format") or {"type": "text"}
        if chosen["type"] == "json_object":
            return {"type": "json_object"}
        if chosen["type"] == "json_schema":
            keys = ("name", "schema", "description", "strict")
            return {
                "type": "json_schema",
                "json_schema": {k: chosen[k] for k in keys if k in chosen},
            }
        return None

    @property
    def include_outputs(self) -> bool:
        return INCLUDE_OUTPUTS in (self.include or [])


__all__ = ["MEMORY_LIMITS", "ResponseCreate"]

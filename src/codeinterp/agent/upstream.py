"""The language model: any OpenAI-compatible Chat Completions endpoint, through the official
AsyncOpenAI client, always streamed so text and code can be relayed as they arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai

from codeinterp.errors import UpstreamError


@dataclass
class ToolCallDraft:
    """A tool call as it arrives in fragments."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCallDelta:
    call: ToolCallDraft  # the call so far, after this fragment
    fragment: str


@dataclass
class Completion:
    """Everything one model turn produced."""

    text: str = ""
    tool_calls: list[ToolCallDraft] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


Delta = TextDelta | ToolCallDelta


def _error_code(exc: openai.APIError) -> str:
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit_exceeded"
    return "server_error"


class UpstreamFailure(UpstreamError):
    def __init__(self, message: str, code: str = "server_error") -> None:
        super().__init__(message)
        self.code = code


class Upstream:
    def __init__(
        self, base_url: str, api_key: str, model_map: dict[str, str], timeout: float
    ) -> None:
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=2
        )
        self.model_map = model_map

    def model_name(self, requested: str) -> str:
        return self.model_map.get(requested, requested)

    async def close(self) -> None:
        await self.client.close()

    async def stream(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        completion: Completion,
        **options: Any,
    ) -> AsyncIterator[Delta]:
        """Yield deltas of one model turn; `completion` holds the whole turn when it ends."""
        request: dict[str, Any] = {
            "model": self.model_name(model),
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **{k: v for k, v in options.items() if v is not None},
        }
        if tools:
            request["tools"] = tools
        drafts: dict[int, ToolCallDraft] = {}
        try:
            # The client's own request plumbing, with raw chunks: `chat.completions.create`
            # would walk the whole conversation through its TypedDict transforms and build a
            # model object for every chunk, about 1 ms per turn on the run's critical path.
            stream = await self.client.post(
                "/chat/completions",
                body=request,
                cast_to=object,
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
            async for chunk in stream:
                if not isinstance(chunk, dict):
                    raise UpstreamFailure("the model endpoint sent a chunk that is not an object")
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    completion.prompt_tokens += _count(usage.get("prompt_tokens"))
                    completion.completion_tokens += _count(usage.get("completion_tokens"))
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    if not isinstance(delta, dict):
                        continue
                    content = delta.get("content")
                    if isinstance(content, str) and content:
                        completion.text += content
                        yield TextDelta(content)
                    for call in delta.get("tool_calls") or ():
                        draft, fragment = _merge_tool_call(drafts, call)
                        yield ToolCallDelta(draft, fragment)
        except openai.APIStatusError as exc:
            raise UpstreamFailure(
                f"the model endpoint answered {exc.status_code}: {exc.message}", _error_code(exc)
            ) from exc
        except openai.APIError as exc:
            raise UpstreamFailure(f"the model endpoint failed: {exc}") from exc
        completion.tool_calls = [drafts[i] for i in sorted(drafts)]


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _merge_tool_call(drafts: dict[int, ToolCallDraft], call: object) -> tuple[ToolCallDraft, str]:
    """Fold one streamed tool call fragment into its draft; returns the draft and new arguments."""
    if not isinstance(call, dict) or not isinstance(call.get("index", 0), int):
        raise UpstreamFailure("the model endpoint sent a malformed tool call")
    index = call.get("index", 0)
    draft = drafts.get(index)
    if draft is None:
        draft = drafts[index] = ToolCallDraft(index)
    if isinstance(call.get("id"), str) and call["id"]:
        draft.id = call["id"]
    function = call.get("function")
    fragment = ""
    if isinstance(function, dict):
        if isinstance(function.get("name"), str):
            draft.name += function["name"]
        if isinstance(function.get("arguments"), str):
            fragment = function["arguments"]
            draft.arguments += fragment
    return draft, fragment

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
            stream = await self.client.chat.completions.create(**request)
            async for chunk in stream:
                if chunk.usage is not None:
                    completion.prompt_tokens += chunk.usage.prompt_tokens or 0
                    completion.completion_tokens += chunk.usage.completion_tokens or 0
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        completion.text += delta.content
                        yield TextDelta(delta.content)
                    for call in delta.tool_calls or []:
                        draft = drafts.get(call.index)
                        if draft is None:
                            draft = drafts[call.index] = ToolCallDraft(call.index)
                        if call.id:
                            draft.id = call.id
                        fragment = ""
                        if call.function is not None:
                            if call.function.name:
                                draft.name += call.function.name
                            fragment = call.function.arguments or ""
                            draft.arguments += fragment
                        yield ToolCallDelta(draft, fragment)
        except openai.APIStatusError as exc:
            raise UpstreamFailure(
                f"the model endpoint answered {exc.status_code}: {exc.message}", _error_code(exc)
            ) from exc
        except openai.APIError as exc:
            raise UpstreamFailure(f"the model endpoint failed: {exc}") from exc
        completion.tool_calls = [drafts[i] for i in sorted(drafts)]

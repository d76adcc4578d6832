"""The language model: any OpenAI-compatible Chat Completions endpoint, through the official
AsyncOpenAI client, always streamed so text and code can be relayed as they arrive."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
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
    finish_reason: str | None = None


Delta = TextDelta | ToolCallDelta


def _error_code(exc: openai.APIError) -> str:
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit_exceeded"
    return "server_error"


class UpstreamFailure(UpstreamError):
    def __init__(self, message: str, code: str = "server_error", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status  # the endpoint's HTTP status, if it answered with one


class Upstream:
    def __init__(
        self, base_url: str, api_key: str, model_map: dict[str, str], timeout: float
    ) -> None:
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=2
        )
        self.model_map = model_map
        # Requests we only relay (Chat Completions without our tool) go as they came (the
        # model name mapped), and the client gets the upstream's own answers and errors.
        self._relay = httpx2.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            # identity: the bytes are forwarded as they come, without Content-Encoding
            headers={"Authorization": f"Bearer {api_key or 'none'}", "Accept-Encoding": "identity"},
            timeout=timeout,
        )

    def model_name(self, requested: str) -> str:
        return self.model_map.get(requested, requested)

    async def close(self) -> None:
        await self.client.close()
        await self._relay.aclose()

    async def relay(self, path: str, body: dict[str, Any]) -> httpx2.Response:
        """POST `body` (its model mapped) to the upstream's `path`; the response is open for
        streaming, and the caller must close it."""
        if isinstance(body.get("model"), str):
            body = {**body, "model": self.model_name(body["model"])}
        request = self._relay.build_request("POST", path.lstrip("/"), json=body)
        try:
            return await self._relay.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise UpstreamFailure(f"the model endpoint failed: {exc}") from exc

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
        with _failures_translated():
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
            async for chunk in _closing(stream):
                for delta in _deltas(chunk, completion, drafts):
                    yield delta
        completion.tool_calls = [drafts[i] for i in sorted(drafts)]

    async def list_models(self) -> list[dict[str, Any]]:
        """The upstream's own model objects (GET /models), as it sends them; entries without
        a string id are left out."""
        with _failures_translated():
            listing = await self.client.get("/models", cast_to=object)
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise UpstreamFailure("the model endpoint sent a model list without its data")
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


@contextlib.contextmanager
def _failures_translated() -> Iterator[None]:
    """The client's errors as UpstreamFailure, with the endpoint's status when it answered."""
    try:
        yield
    except openai.APIStatusError as exc:
        raise UpstreamFailure(
            f"the model endpoint answered {exc.status_code}: {exc.message}",
            _error_code(exc),
            exc.status_code,
        ) from exc
    except openai.APIError as exc:
        raise UpstreamFailure(f"the model endpoint failed: {exc}") from exc


def _deltas(
    chunk: object, completion: Completion, drafts: dict[int, ToolCallDraft]
) -> Iterator[Delta]:
    """The text and tool call fragments of one streamed chunk; its usage and finish reason
    go into `completion`."""
    if not isinstance(chunk, dict):
        raise UpstreamFailure("the model endpoint sent a chunk that is not an object")
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        completion.prompt_tokens += _count(usage.get("prompt_tokens"))
        completion.completion_tokens += _count(usage.get("completion_tokens"))
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("finish_reason"), str):
            completion.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        content = delta.get("content")
        if isinstance(content, str) and content:
            completion.text += content
            yield TextDelta(content)
        for call in delta.get("tool_calls") or ():
            draft, fragment = _merge_tool_call(drafts, call)
            yield ToolCallDelta(draft, fragment)


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


async def _closing(stream: openai.AsyncStream[object]) -> AsyncIterator[object]:
    """The stream's chunks; its HTTP response is closed however the iteration ends."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await stream.close()

"""The model-and-tool loop, the one every door runs: ask the model, run the python it wrote, give
it the result, ask again, until it answers without a tool call.

The loop owns what must be the same everywhere: the model stream (the only
``upstream.stream(`` in the code base) and its token sums, the id given to a tool call the model
sent without one, the first turn's ``tool_choice`` (a forced tool is the first turn's only, so a
later turn may answer in text), one tool budget and one time limit whose errors name the setting
to raise, the answer to a call of an unknown tool (an error the model reads, so it can correct
itself), and several calls in one turn (run in order: the python session is one).

A door is a :class:`ToolHost`: it turns the loop's events into its own objects and stream (an
Assistants run's steps and messages, a response's items, chat chunks), runs python where its
code runs, and decides what the client's function calls do (a run waits for their outputs;
Responses and Chat end the loop and hand them to the client).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from opentelemetry.trace import SpanKind

from codeinterp.errors import TimeLimitExceeded, ToolBudgetExceeded
from codeinterp.telemetry import metrics, tracing

from . import python_tool
from .upstream import (
    Completion,
    TextDelta,
    ToolCallDelta,
    ToolCallDraft,
    Upstream,
    UpstreamFailure,
)

log = logging.getLogger("codeinterp.agent")

UNKNOWN_TOOL = "error: there is no tool named {name!r}"
# The server's settings behind the loop's limits (a request may set its own, e.g. max_tool_calls).
MAX_TOOL_CALLS_SETTING = "CODEINTERP_MAX_TOOL_CALLS_PER_RUN"
TIME_LIMIT_SETTING = "CODEINTERP_RUN_EXPIRY_SECONDS"


@dataclass
class ToolResult:
    """One tool call of a turn and what the model reads back."""

    call: ToolCallDraft
    kind: Literal["python", "function", "unknown"]
    output: str


@dataclass
class LoopRequest:
    """What one loop needs from its door. The loop appends each turn's assistant and tool
    messages to `messages`; `system` goes before them in every request."""

    model: str
    messages: list[dict[str, Any]]  # the conversation; grows with each turn
    python: bool  # the python tool is offered
    function_tools: list[dict[str, Any]]  # the client's, in Chat Completions form
    max_tool_calls: int
    max_tool_calls_setting: str  # what to raise, named in the error
    time_limit: float  # seconds
    time_limit_setting: str
    call_id_seed: str  # a tool call the model sent without an id gets call_<seed tail><index>
    tool_choice: Any = None  # Chat Completions form; the first turn's only
    options: dict[str, Any] = field(default_factory=dict)  # sampling and format, as sent
    # Token budgets of the whole loop (not of one turn): past one it ends `incomplete`.
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    system: list[dict[str, Any]] = field(default_factory=list)  # sent first, not kept in messages
    trace: dict[str, Any] = field(default_factory=dict)  # the door's attributes of the trace

    @property
    def function_names(self) -> set[str]:
        return {t["function"]["name"] for t in self.function_tools}

    def tools(self) -> list[dict[str, Any]]:
        return ([python_tool.DEFINITION] if self.python else []) + self.function_tools


@dataclass
class LoopOutcome:
    """How the loop ended: the model answered (`completed`), it called the client's functions
    and the door handed them over (`functions`, the calls in `pending`), or a token budget ran
    out before it answered (`incomplete`, `reason` naming the budget)."""

    status: Literal["completed", "functions", "incomplete"]
    completion: Completion
    pending: list[ToolCallDraft] = field(default_factory=list)
    reason: str | None = None  # incomplete: the budget spent (max_prompt_tokens, ...)


class ToolHost(Protocol):
    """A door, as the loop sees it."""

    async def text(self, delta: str) -> None:
        """A piece of the model's text, as it arrives."""

    async def tool_call(self, call: ToolCallDraft, fragment: str) -> None:
        """A tool call as it arrives (`call` so far, `fragment` its newest arguments)."""

    async def turn_streamed(self, completion: Completion) -> None:
        """The model's turn has arrived whole; its tool calls run next, if it has any."""

    async def run_python(self, call: ToolCallDraft, code: str) -> str:
        """Run the code; return what the model reads back (errors included)."""

    async def call_functions(self, calls: list[ToolCallDraft]) -> dict[str, str] | None:
        """The client's function calls: their outputs by call id to go on, or None to end the
        loop and hand them to the client."""

    async def turn_done(self, results: Sequence[ToolResult]) -> None:
        """Every tool call of the turn has its result."""


class ModelLoop:
    def __init__(self, upstream: Upstream, request: LoopRequest, host: ToolHost) -> None:
        self.upstream = upstream
        self.request = request
        self.host = host
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.tool_calls_made = 0
        self.turns = 0

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    async def run(self) -> LoopOutcome:
        """Turns until the model answers or hands calls to the client. Raises
        ToolBudgetExceeded or TimeLimitExceeded past a limit, UpstreamFailure if the model
        endpoint fails."""
        request = self.request
        door = str(request.trace.get("codeinterp.door", "other"))
        started = time.monotonic()
        ended = "error"
        with tracing.span(f"invoke_agent {tracing.AGENT_NAME}", self._trace_start()) as root:
            try:
                async with asyncio.timeout(request.time_limit):
                    outcome = await self._turns()
                ended = outcome.status
            except TimeoutError:
                ended = "time_limit"
                raise TimeLimitExceeded(
                    f"the model and its tools took longer than {request.time_limit:g} s; "
                    f"raise {request.time_limit_setting} to allow more"
                ) from None
            except ToolBudgetExceeded:
                ended = "tool_budget"
                raise
            except asyncio.CancelledError:
                ended = "cancelled"  # a cancelled run, a client that went away
                raise
            finally:
                tracing.set_attributes(root, {**self._trace_totals(), "codeinterp.outcome": ended})
                metrics.LOOPS.labels(door, ended).inc()
                metrics.LOOP_SECONDS.labels(door).observe(time.monotonic() - started)
            return outcome

    def _trace_start(self) -> dict[str, Any]:
        request = self.request
        asked = [m for m in request.messages if m.get("role") == "user"]
        prompt = _text_of(asked[-1].get("content")) if asked else ""
        return {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": tracing.AGENT_NAME,
            "gen_ai.request.model": request.model,
            "codeinterp.prompt": tracing.content.clip(prompt) if prompt else None,
            **request.trace,
        }

    def _trace_totals(self) -> dict[str, Any]:
        return {
            "gen_ai.usage.input_tokens": self.prompt_tokens,
            "gen_ai.usage.output_tokens": self.completion_tokens,
            "codeinterp.model_turns": self.turns,
            "codeinterp.tool_calls": self.tool_calls_made,
        }

    async def _turns(self) -> LoopOutcome:
        while True:
            completion = await self._model_turn()
            await self.host.turn_streamed(completion)
            calls = completion.tool_calls
            spent = self._budget_spent(completion)
            if spent is not None:
                return LoopOutcome("incomplete", completion, reason=spent)
            if not calls:
                self.request.messages.append({"role": "assistant", "content": completion.text})
                return LoopOutcome("completed", completion)
            self._spend(len(calls))
            self.request.messages.append(_assistant_message(completion))
            results = {r.call.id: r for r in await self._run_own_calls(calls)}
            functions = [c for c in calls if self._is_function(c)]
            if functions:
                outputs = await self.host.call_functions(functions)
                if outputs is None:
                    self._answer(list(results.values()))
                    return LoopOutcome("functions", completion, functions)
                for call in functions:
                    results[call.id] = ToolResult(call, "function", outputs.get(call.id, ""))
            in_order = [results[c.id] for c in calls]
            self._answer(in_order)
            await self.host.turn_done(in_order)

    def _answer(self, results: Sequence[ToolResult]) -> None:
        """The tool messages that answer the turn's calls, for the next turn."""
        self.request.messages.extend(
            {"role": "tool", "tool_call_id": r.call.id, "content": r.output} for r in results
        )

    def _budget_spent(self, completion: Completion) -> str | None:
        """The token budget this turn used up, if the loop cannot go on: the completion budget
        when the model was cut off by it, the prompt budget when another turn is wanted."""
        request = self.request
        if request.max_completion_tokens is not None and (
            self.completion_tokens >= request.max_completion_tokens
            and (completion.finish_reason == "length" or completion.tool_calls)
        ):
            return "max_completion_tokens"
        prompt_budget = request.max_prompt_tokens
        if (
            prompt_budget is not None
            and completion.tool_calls
            and self.prompt_tokens >= prompt_budget
        ):
            return "max_prompt_tokens"
        return None

    def _spend(self, calls: int) -> None:
        self.tool_calls_made += calls
        limit = self.request.max_tool_calls
        if self.tool_calls_made > limit:
            raise ToolBudgetExceeded(
                f"the model made more than {limit} tool calls; "
                f"raise {self.request.max_tool_calls_setting} to allow more"
            )

    async def _model_turn(self) -> Completion:
        try:
            return await self._ask_model()
        except UpstreamFailure as exc:
            # A model without image input refuses the request (400) before streaming anything:
            # ask again with each image named in text instead.
            if exc.status != 400 or not _without_images(self.request.messages):
                raise
            log.warning("the model refused image input (%s); images are sent as text", exc)
            self.turns -= 1
            return await self._ask_model()

    async def _ask_model(self) -> Completion:
        request = self.request
        options = dict(request.options)
        if request.tool_choice is not None and self.turns == 0 and request.tools():
            options["tool_choice"] = request.tool_choice
        if request.max_completion_tokens is not None:  # what is left of the loop's budget
            left = request.max_completion_tokens - self.completion_tokens
            options["max_completion_tokens"] = max(1, left)
        self.turns += 1
        completion = Completion()
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": tracing.PROVIDER_NAME,
            "gen_ai.request.model": request.model,
        }
        started, failed = time.monotonic(), True
        with tracing.span(f"chat {request.model}", attributes, SpanKind.CLIENT) as turn:
            try:
                await self._stream_turn(completion, options)
                failed = False
            finally:
                tracing.set_attributes(turn, _turn_attributes(completion))
                metrics.model_turn(
                    time.monotonic() - started,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                    failed,
                )
        for call in completion.tool_calls:
            if not call.id:
                call.id = f"call_{request.call_id_seed[-8:]}{call.index}"
        return completion

    async def _stream_turn(self, completion: Completion, options: dict[str, Any]) -> None:
        request = self.request
        try:
            async for delta in self.upstream.stream(
                request.model,
                [*request.system, *request.messages],
                request.tools(),
                completion,
                **options,
            ):
                if isinstance(delta, TextDelta):
                    await self.host.text(delta.text)
                elif isinstance(delta, ToolCallDelta) and delta.call.name:
                    await self.host.tool_call(delta.call, delta.fragment)
        finally:
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens

    def _is_python(self, call: ToolCallDraft) -> bool:
        return self.request.python and call.name == python_tool.TOOL_NAME

    def _is_function(self, call: ToolCallDraft) -> bool:
        return call.name in self.request.function_names

    async def _run_own_calls(self, calls: list[ToolCallDraft]) -> list[ToolResult]:
        """The turn's python calls, in order, and an error for each call of an unknown tool."""
        results = []
        for call in calls:
            if self._is_python(call):
                code = python_tool.code_from_arguments(call.arguments)
                results.append(ToolResult(call, "python", await self.host.run_python(call, code)))
            elif not self._is_function(call):
                results.append(ToolResult(call, "unknown", UNKNOWN_TOOL.format(name=call.name)))
        return results


def _text_of(content: Any) -> str:
    """A message's text: its string, or its text parts joined (images are not copied into
    spans: a data URI can be megabytes, encoded again for every run)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else ()
    return "\n".join(
        str(p.get("text", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text"
    )


def _turn_attributes(completion: Completion) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": completion.prompt_tokens,
        "gen_ai.usage.output_tokens": completion.completion_tokens,
        "gen_ai.response.finish_reasons": [completion.finish_reason]
        if completion.finish_reason
        else None,
        "codeinterp.output.text": tracing.content.clip(completion.text)
        if completion.text
        else None,
        "codeinterp.output.tool_calls": [c.name for c in completion.tool_calls] or None,
    }


def _without_images(messages: list[dict[str, Any]]) -> bool:
    """Replace every image part of `messages` by a text part naming it; whether there was one."""
    replaced = False
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for index, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = str(part.get("image_url", {}).get("url", ""))
                name = "an attached image" if url.startswith("data:") else url
                content[index] = {"type": "text", "text": f"[image: {name}; not shown to you]"}
                replaced = True
    return replaced


def _assistant_message(completion: Completion) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": completion.text or None,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in completion.tool_calls
        ],
    }

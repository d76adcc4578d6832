"""A scripted stand-in for the upstream model: a real Chat Completions server over HTTP.

The run loop talks to its upstream through the official ``openai`` client, so the only test
double we allow is the model itself, and it has to speak the real wire protocol: JSON for
``stream: false``, ``text/event-stream`` chunks for ``stream: true``, OpenAI's error envelope
and status codes. ``ScriptedUpstream`` is that server. It runs uvicorn on 127.0.0.1 in a
background thread and answers each ``POST /v1/chat/completions`` with the next *turn* of a
script::

    script = [python_call("print(6 * 7)"), Text("The answer is 42.")]
    with ScriptedUpstream(script) as upstream:
        env = {"CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url}
        ...  # drive our server
        assert "42" in upstream.last_tool_results()[0]

A script is either a list of turns (and callables, see below) consumed in order, or a callable
``(request) -> Turn`` that sees the JSON body the client sent. Turns:

* ``Text(content, usage=(prompt, completion))``: an assistant message, ``finish_reason`` stop.
* ``ToolCalls([ToolCall(name, arguments_json)], content=None)``: tool calls.
* ``Fail(status, message)``: an OpenAI error envelope with that HTTP status.
* ``Delay(seconds, then=turn)``: wait (before any response byte), then answer with ``then``.
  The wait ends early if the client hangs up, which is recorded (``upstream.disconnected``).
* ``Broken(then, after_chunks, error=None)``: the answer breaks off mid-way: the connection is
  dropped (or, with ``error``, an error event is sent in the stream, as OpenAI does).

Problems are loud: a script that runs out of turns or raises, a request that OpenAI would
reject (``strict=True``: a tool message without its assistant tool call, an assistant tool
call without its tool messages, ``stream_options`` without ``stream`` ...), get a non-retryable
error response *and* are kept in ``upstream.errors``; leaving the ``with`` block (or calling
``check()``) then raises ``UpstreamScriptError`` listing them.

Note on retries: the ``openai`` client retries 408/409/429/5xx responses and dropped
connections (``max_retries``, 2 by default), and every retry consumes a turn. ``Fail`` sends no
``x-should-retry`` header unless asked (``Fail(500, "...", should_retry=False)``).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

import anyio
import anyio.to_thread
import uvicorn

__all__ = [
    "Broken",
    "Delay",
    "Fail",
    "Request",
    "Responder",
    "Script",
    "ScriptExhausted",
    "ScriptedUpstream",
    "Text",
    "ToolCall",
    "ToolCalls",
    "Turn",
    "TurnSequence",
    "UpstreamScriptError",
    "completion_body",
    "completion_chunks",
    "python_call",
    "request_problem",
    "sequence",
]

Request: TypeAlias = dict[str, Any]
FinishReason: TypeAlias = Literal["stop", "length", "content_filter"]

DEFAULT_USAGE = (10, 5)


# --------------------------------------------------------------------------- turns


@dataclass(frozen=True)
class Text:
    """An assistant message. ``usage`` is (prompt_tokens, completion_tokens)."""

    content: str
    usage: tuple[int, int] = DEFAULT_USAGE
    finish_reason: FinishReason = "stop"


@dataclass(frozen=True)
class ToolCall:
    """One function call; ``arguments`` is the JSON *string* the model produced.

    ``id`` defaults to a fresh ``call_...`` id, made when the turn is played.
    """

    name: str
    arguments: str = "{}"
    id: str | None = None


@dataclass(frozen=True)
class ToolCalls:
    """An assistant message with tool calls (and optionally some text before them)."""

    calls: Sequence[ToolCall]
    content: str | None = None
    usage: tuple[int, int] = DEFAULT_USAGE


@dataclass(frozen=True)
class Fail:
    """An error response: ``{"error": {"message", "type", "param", "code"}}`` with ``status``.

    ``type`` defaults from the status like OpenAI's (``invalid_request_error`` for 4xx,
    ``requests`` for 429, ``server_error`` for 5xx). ``should_retry`` sets the
    ``x-should-retry`` header that the ``openai`` client obeys; None sends no header.
    """

    status: int
    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None
    should_retry: bool | None = None


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` before answering with ``then`` (no response byte is sent meanwhile)."""

    seconds: float
    then: Turn = field(default_factory=lambda: Text(""))


@dataclass(frozen=True)
class Broken:
    """Play ``then`` but break off after ``after_chunks`` stream chunks.

    Without ``error`` the connection is dropped (no ``[DONE]``; for a non-streaming request, the
    JSON body is cut in half), so the client sees a connection error. With ``error``, an
    ``data: {"error": {...}}`` event is sent instead and the stream ends, which the ``openai``
    client raises as ``APIError`` (for a non-streaming request: a 500 error envelope).
    """

    then: Text | ToolCalls
    after_chunks: int = 2
    error: str | None = None


Turn: TypeAlias = Text | ToolCalls | Fail | Delay | Broken
Responder: TypeAlias = Callable[[Request], Turn]
Script: TypeAlias = Responder | Sequence[Turn | Responder]

_TURN_TYPES = (Text, ToolCalls, Fail, Delay, Broken)


def python_call(code: str, id: str | None = None) -> ToolCalls:
    """The model calling the ``python`` tool with ``{"code": code}``."""
    return ToolCalls([ToolCall("python", json.dumps({"code": code}), id=id)])


class UpstreamScriptError(AssertionError):
    """The scripted upstream saw something a test should not ignore."""


class ScriptExhausted(UpstreamScriptError):
    """A list script was asked for more turns than it has."""


class TurnSequence:
    """A list of turns (or responders) played in order; raises ``ScriptExhausted`` past its end."""

    def __init__(self, turns: Sequence[Turn | Responder]) -> None:
        self._turns = list(turns)
        self._next = 0
        self._lock = threading.Lock()
        for position, turn in enumerate(self._turns):
            if not isinstance(turn, _TURN_TYPES) and not callable(turn):
                raise TypeError(f"script item {position} is {turn!r}, not a Turn or a callable")

    @property
    def consumed(self) -> int:
        return self._next

    @property
    def remaining(self) -> int:
        return len(self._turns) - self._next

    def __call__(self, request: Request) -> Turn:
        with self._lock:
            if self._next >= len(self._turns):
                raise ScriptExhausted(
                    f"the script ran out of turns: it has {len(self._turns)} and the model was "
                    f"asked for turn {self._next + 1}; {_describe_request(request)}"
                )
            item = self._turns[self._next]
            self._next += 1
        return item if isinstance(item, _TURN_TYPES) else item(request)


def sequence(*turns: Turn | Responder) -> TurnSequence:
    """``sequence(a, b)`` is the script "answer a, then b, then fail clearly"."""
    return TurnSequence(turns)


def _as_responder(script: Script) -> Responder:
    if isinstance(script, TurnSequence):
        return script
    if isinstance(script, Sequence) and not isinstance(script, str | bytes):
        return TurnSequence(script)
    if callable(script):
        return script
    raise TypeError(f"a script is a list of turns or a callable, not {script!r}")


def _describe_request(request: Request) -> str:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return "the request has no messages"
    last = messages[-1]
    if not isinstance(last, dict):
        return f"{len(messages)} messages"
    content = _text_of(last.get("content"))
    if len(content) > 200:
        content = content[:200] + "..."
    return f"{len(messages)} messages, the last one {last.get('role')!r}: {content!r}"


def _text_of(content: object) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


# --------------------------------------------------------------------------- wire format


def _usage(usage: tuple[int, int]) -> dict[str, Any]:
    prompt, completion = usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


def _call_ids(turn: ToolCalls) -> list[str]:
    return [call.id or f"call_{secrets.token_hex(12)}" for call in turn.calls]


def completion_body(
    turn: Text | ToolCalls,
    *,
    completion_id: str,
    created: int,
    model: str,
    call_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ``chat.completion`` object answering a non-streaming request with ``turn``."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": turn.content,
        "refusal": None,
        "annotations": [],
    }
    finish_reason: str
    if isinstance(turn, ToolCalls):
        ids = list(call_ids) if call_ids is not None else _call_ids(turn)
        message["tool_calls"] = [
            {
                "id": ids[i],
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for i, c in enumerate(turn.calls)
        ]
        finish_reason = "tool_calls"
    else:
        finish_reason = turn.finish_reason
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": _usage(turn.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_scripted",
    }


def completion_chunks(
    turn: Text | ToolCalls,
    *,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    chunk_size: int = 4,
    call_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects streaming ``turn``, the way OpenAI sends them.

    A role chunk (``content: ""``) first; the text a few characters per chunk; each tool call
    as a header chunk (``index``, ``id``, ``type``, ``function.name``, empty ``arguments``)
    followed by argument fragments (``index`` and ``function.arguments`` only); a chunk with an
    empty delta and the ``finish_reason``; then, with ``include_usage``, a chunk with
    ``choices: []`` and the usage (the other chunks then carry ``usage: null``). As with
    OpenAI, a tool-call turn without text starts with ``{"role": "assistant", "content": null}``
    and the first tool call in the same delta.
    """

    def chunk(
        delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_scripted",
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = usage
        return body

    chunks: list[dict[str, Any]] = []
    size = max(1, chunk_size)
    headers: list[dict[str, Any]] = []
    fragments: list[list[dict[str, Any]]] = []
    if isinstance(turn, ToolCalls):
        ids = list(call_ids) if call_ids is not None else _call_ids(turn)
        for index, call in enumerate(turn.calls):
            headers.append(
                {
                    "index": index,
                    "id": ids[index],
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
            )
            fragments.append(
                [
                    {"index": index, "function": {"arguments": piece}}
                    for piece in _pieces(call.arguments, size)
                ]
            )

    if turn.content is None and headers:
        chunks.append(
            chunk(
                {"role": "assistant", "content": None, "tool_calls": [headers[0]], "refusal": None}
            )
        )
        chunks.extend(chunk({"tool_calls": [fragment]}) for fragment in fragments[0])
        first_call = 1
    else:
        chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        chunks.extend(chunk({"content": piece}) for piece in _pieces(turn.content or "", size))
        first_call = 0
    for index in range(first_call, len(headers)):
        chunks.append(chunk({"tool_calls": [headers[index]]}))
        chunks.extend(chunk({"tool_calls": [fragment]}) for fragment in fragments[index])

    finish = "tool_calls" if isinstance(turn, ToolCalls) else turn.finish_reason
    chunks.append(chunk({}, finish))
    if include_usage:
        chunks.append(chunk(None, usage=_usage(turn.usage)))
    return chunks


def _error_type(status: int) -> str:
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


def _envelope(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --------------------------------------------------------------------------- validation

_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_Problem: TypeAlias = tuple[str, str | None, str | None]  # message, param, code


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def request_problem(body: object) -> _Problem | None:
    """Why OpenAI would reject this Chat Completions request with a 400, or None.

    Only well-known rules are checked (the ones a run loop gets wrong): required fields, message
    roles and contents, tool calls answered by tool messages and vice versa, tool definitions,
    and ``stream_options`` / ``tool_choice`` without ``stream`` / ``tools``.
    """
    if not isinstance(body, dict):
        return ("The request body must be a JSON object.", None, None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return ("you must provide a model parameter", None, None)
    messages = body.get("messages")
    if messages is None:
        return ("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        return (
            f"Invalid type for 'messages': expected an array, but got {_type_name(messages)}"
            " instead.",
            "messages",
            "invalid_type",
        )
    if not messages:
        return (
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got"
            " an empty array instead.",
            "messages",
            "empty_array",
        )
    pending: list[str] = []  # tool_call_ids still waiting for their tool message
    pending_from = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return (
                f"Invalid type for '{where}': expected an object, but got {_type_name(message)}"
                " instead.",
                where,
                "invalid_type",
            )
        role = message.get("role")
        if role not in _ROLES:
            return (
                f"Invalid value: {role!r}. Supported values are: 'system', 'assistant', 'user',"
                " 'function', 'tool', and 'developer'.",
                f"{where}.role",
                "invalid_value",
            )
        if role != "tool" and pending:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages"
                " responding to each 'tool_call_id'. The following tool_call_ids did not have"
                f" response messages: {', '.join(pending)}",
                f"messages.[{pending_from}].role",
                None,
            )
        content = message.get("content")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                return (
                    f"Missing required parameter: '{where}.tool_call_id'.",
                    f"{where}.tool_call_id",
                    "missing_required_parameter",
                )
            if call_id not in pending:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a"
                    " preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                    None,
                )
            pending.remove(call_id)
        if role == "assistant":
            tool_calls = message.get("tool_calls")
            if tool_calls is not None:
                problem = _tool_calls_problem(tool_calls, where)
                if problem is not None:
                    return problem
                pending = [call["id"] for call in tool_calls]
                pending_from = i
            if content is None and not tool_calls and message.get("function_call") is None:
                return (
                    "Invalid value for 'content': expected a string, got null.",
                    f"{where}.content",
                    None,
                )
        if content is None and role in ("system", "developer", "user", "tool"):
            return (f"Missing required parameter: '{where}.content'.", f"{where}.content", None)
        if content is not None and not isinstance(content, str | list):
            return (
                f"Invalid type for '{where}.content': expected one of a string or array of"
                f" objects, but got {_type_name(content)} instead.",
                f"{where}.content",
                "invalid_type",
            )
    if pending:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding"
            " to each 'tool_call_id'. The following tool_call_ids did not have response messages:"
            f" {', '.join(pending)}",
            f"messages.[{pending_from}].role",
            None,
        )
    tools = body.get("tools")
    if tools is not None:
        problem = _tools_problem(tools)
        if problem is not None:
            return problem
    if body.get("tool_choice") is not None and not tools:
        return (
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are"
            " specified.",
            "tool_choice",
            None,
        )
    if body.get("stream_options") is not None and body.get("stream") is not True:
        return (
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            None,
        )
    return None


def _tool_calls_problem(tool_calls: object, where: str) -> _Problem | None:
    if not isinstance(tool_calls, list):
        return (
            f"Invalid type for '{where}.tool_calls': expected an array, but got"
            f" {_type_name(tool_calls)} instead.",
            f"{where}.tool_calls",
            "invalid_type",
        )
    if not tool_calls:
        return (
            f"Invalid '{where}.tool_calls': empty array. Expected an array with minimum length 1,"
            " but got an empty array instead.",
            f"{where}.tool_calls",
            "empty_array",
        )
    for j, call in enumerate(tool_calls):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            return (f"Invalid type for '{at}': expected an object.", at, "invalid_type")
        for key in ("id", "type", "function"):
            if key not in call:
                return (
                    f"Missing required parameter: '{at}.{key}'.",
                    f"{at}.{key}",
                    "missing_required_parameter",
                )
        if not isinstance(call["id"], str):
            return (f"Invalid type for '{at}.id': expected a string.", f"{at}.id", "invalid_type")
        function = call["function"]
        if call["type"] != "function" or not isinstance(function, dict):
            return (f"Invalid value for '{at}'.", at, "invalid_value")
        for key in ("name", "arguments"):
            value = function.get(key)
            if value is None:
                return (
                    f"Missing required parameter: '{at}.function.{key}'.",
                    f"{at}.function.{key}",
                    "missing_required_parameter",
                )
            if not isinstance(value, str):
                return (
                    f"Invalid type for '{at}.function.{key}': expected a string, but got"
                    f" {_type_name(value)} instead.",
                    f"{at}.function.{key}",
                    "invalid_type",
                )
    return None


def _tools_problem(tools: object) -> _Problem | None:
    if not isinstance(tools, list):
        return (
            f"Invalid type for 'tools': expected an array, but got {_type_name(tools)} instead.",
            "tools",
            "invalid_type",
        )
    for k, tool in enumerate(tools):
        at = f"tools[{k}]"
        if not isinstance(tool, dict) or tool.get("type") not in ("function", "custom"):
            return (f"Invalid value for '{at}.type'.", f"{at}.type", "invalid_value")
        if tool["type"] != "function":
            continue
        function = tool.get("function")
        if not isinstance(function, dict) or "name" not in function:
            return (
                f"Missing required parameter: '{at}.function.name'.",
                f"{at}.function.name",
                "missing_required_parameter",
            )
        name = function["name"]
        if (
            not isinstance(name, str)
            or not 1 <= len(name) <= 64
            or not all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
        ):
            return (
                f"Invalid '{at}.function.name': string does not match pattern. Expected a string"
                " that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                f"{at}.function.name",
                "invalid_value",
            )
    return None


# --------------------------------------------------------------------------- the server

ASGIMessage: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[ASGIMessage]]
Send: TypeAlias = Callable[[ASGIMessage], Awaitable[None]]

_INCOMPLETE = "ASGI callable returned without completing response."
# Set while a ``Broken`` turn drops its connection on purpose, so uvicorn's complaint is muted.
_dropping: contextvars.ContextVar[bool] = contextvars.ContextVar("dropping", default=False)


class _MuteDeliberateDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_dropping.get() and record.getMessage() == _INCOMPLETE)


_drop_filter = _MuteDeliberateDrops()


class _QuickServer(uvicorn.Server):
    """uvicorn's server, checking for shutdown every 10 ms instead of every 100 ms."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.01)


class _Closing(Exception):
    """The upstream is stopping; a pending wait ends."""


@dataclass
class _Record:
    body: Request
    headers: dict[str, str]
    disconnected: bool = False
    received: float = 0.0  # time.perf_counter() when the body had arrived
    finished: float = 0.0  # ... and when the answer had been sent (0 while in progress)


class ScriptedUpstream:
    """A scripted Chat Completions server on 127.0.0.1, run in a background thread.

    ``script`` may be given later (``upstream.script = ...``), so one server can serve many
    tests; ``reset()`` forgets the recorded requests and errors too. ``chunk_size`` is the
    number of characters per streamed text/arguments chunk; ``chunk_delay`` a pause between
    streamed chunks. ``api_key``, when given, is required as the bearer token (401 otherwise).
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        chunk_size: int = 4,
        chunk_delay: float = 0.0,
        strict: bool = True,
        api_key: str | None = None,
        models: Sequence[str] = ("gpt-4o-mini", "gpt-4o"),
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.chunk_size = chunk_size
        self.chunk_delay = chunk_delay
        self.strict = strict
        self.api_key = api_key
        self.models = list(models)
        self._wanted_port = port
        self._startup_timeout = startup_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._responder: Responder | None = None
        self._records: list[_Record] = []
        self._errors: list[str] = []
        self._closing = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None
        self._port: int | None = None
        if script is not None:
            self.script = script

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the scripted upstream is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted connections inherit TCP_NODELAY: streamed chunks go out at once, as
            # from OpenAI, instead of waiting on the client's delayed ACK (~40 ms each).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Started again after stop(): same port, so URLs handed out stay valid.
            sock.bind(("127.0.0.1", self._port or self._wanted_port))
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            http="h11",
            interface="asgi3",
            ws="none",
            lifespan="off",
            loop="asyncio",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        server = _QuickServer(config)
        uvicorn_log = logging.getLogger("uvicorn.error")
        if _drop_filter not in uvicorn_log.filters:
            uvicorn_log.addFilter(_drop_filter)
        self._closing.clear()
        self._crash = None
        self._server = server

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # SystemExit on a failed startup, too
                self._crash = exc
            finally:
                sock.close()

        thread = threading.Thread(target=serve, name=f"scripted-upstream-{self._port}", daemon=True)
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the scripted upstream did not start: {self._crash!r}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving; waiting requests (``Delay``) are answered with a 503 at once.

        ``start()`` serves again on the same port (an upstream outage and its recovery).
        """
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        self._closing.set()
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        if thread.is_alive():
            raise RuntimeError("the scripted upstream's server thread did not stop")
        self._thread = None
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.check()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the scripted upstream is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (without ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what an ``openai`` client takes as ``base_url``."""
        return f"{self.url}/v1"

    # ------------------------------------------------------------------ script and records

    @property
    def script(self) -> Responder | None:
        """The current script as a responder (a list is wrapped in a ``TurnSequence``)."""
        return self._responder

    @script.setter
    def script(self, script: Script | None) -> None:
        responder = None if script is None else _as_responder(script)
        with self._lock:
            self._responder = responder

    def reset(self, script: Script | None = None) -> None:
        """Forget recorded requests and errors and install ``script`` (None: no script)."""
        responder = None if script is None else _as_responder(script)
        with self._lock:
            self._responder = responder
            self._records.clear()
            self._errors.clear()

    @property
    def requests(self) -> list[Request]:
        """Every ``/v1/chat/completions`` JSON body received, in order."""
        with self._lock:
            return [record.body for record in self._records]

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of those requests (lower-case names), e.g. ``authorization``."""
        with self._lock:
            return [dict(record.headers) for record in self._records]

    @property
    def last_request(self) -> Request:
        with self._lock:
            if not self._records:
                raise AssertionError("the scripted upstream has received no request")
            return self._records[-1].body

    @property
    def disconnected(self) -> list[int]:
        """Indexes of requests whose client hung up before the answer was complete."""
        with self._lock:
            return [i for i, record in enumerate(self._records) if record.disconnected]

    @property
    def errors(self) -> list[str]:
        """Script failures and invalid requests seen so far (``check()`` raises on them)."""
        with self._lock:
            return list(self._errors)

    def take_errors(self) -> list[str]:
        """Return the errors and forget them (for tests that provoke them on purpose)."""
        with self._lock:
            errors = list(self._errors)
            self._errors.clear()
            return errors

    def check(self) -> None:
        """Raise ``UpstreamScriptError`` if the script failed or a request was invalid."""
        errors = self.errors
        if errors:
            raise UpstreamScriptError(
                "the scripted upstream saw problems:\n" + "\n".join(f"- {e}" for e in errors)
            )

    def tool_results(self, index: int = -1) -> list[str]:
        """The contents of the ``role: "tool"`` messages in request ``index``."""
        requests = self.requests
        if not requests:
            raise AssertionError("the scripted upstream has received no request")
        messages = requests[index].get("messages") or []
        return [
            _text_of(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "tool"
        ]

    def last_tool_results(self) -> list[str]:
        """The contents of the ``role: "tool"`` messages in the last request."""
        return self.tool_results(-1)

    def model_seconds(self, since: int = 0) -> float:
        """Seconds spent answering requests `since` onwards: the model's time, which a server
        benchmark subtracts."""
        with self._lock:
            records = self._records[since:]
        return sum(r.finished - r.received for r in records if r.finished)

    def wait_for_requests(self, count: int = 1, timeout: float = 10.0) -> list[Request]:
        """Block until at least ``count`` requests arrived; return them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._records) >= count, timeout):
                raise TimeoutError(
                    f"the scripted upstream got {len(self._records)} request(s) in {timeout}s,"
                    f" not {count}"
                )
            return [record.body for record in self._records]

    async def wait_for_requests_async(self, count: int = 1, timeout: float = 10.0) -> list[Request]:
        """``wait_for_requests`` for async tests (polls without blocking the event loop)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self._records) >= count:
                    return [record.body for record in self._records]
                got = len(self._records)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the scripted upstream got {got} request(s) in {timeout}s, not {count}"
                )
            await asyncio.sleep(0.01)

    def wait_for_disconnect(self, index: int = -1, timeout: float = 10.0) -> None:
        """Block until the client of request ``index`` hung up before its answer was done."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: bool(self._records) and self._records[index].disconnected, timeout
            ):
                raise TimeoutError(
                    f"the client of upstream request {index} did not hang up in {timeout}s"
                )

    async def wait_for_disconnect_async(self, index: int = -1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._records and self._records[index].disconnected:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the client of upstream request {index} did not hang up in {timeout}s"
                )
            await asyncio.sleep(0.01)

    def _error(self, message: str) -> None:
        with self._changed:
            self._errors.append(message)
            self._changed.notify_all()

    # ------------------------------------------------------------------ ASGI app

    async def _app(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"].rstrip("/")
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        if method == "POST" and path == "/v1/chat/completions":
            started = time.perf_counter()
            count = len(self._records)
            try:
                await self._chat(bytes(raw), headers, receive, send)
            finally:
                with self._lock:
                    if len(self._records) > count:
                        self._records[count].received = started
                        self._records[count].finished = time.perf_counter()
        elif method == "GET" and path == "/v1/models":
            data = [self._model_object(model) for model in self.models]
            await _send_json(send, 200, {"object": "list", "data": data})
        elif method == "GET" and path.startswith("/v1/models/"):
            model = path.removeprefix("/v1/models/")
            if model in self.models:
                await _send_json(send, 200, self._model_object(model))
            else:
                message_ = f"The model '{model}' does not exist or you do not have access to it."
                body = _envelope(message_, "invalid_request_error", None, "model_not_found")
                await _send_json(send, 404, body)
        else:
            body = _envelope(f"Invalid URL ({method} {scope['path']})", "invalid_request_error")
            await _send_json(send, 404, body)

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1700000000, "owned_by": "scripted"}

    async def _chat(
        self, raw: bytes, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            self._error(f"a request body was not JSON: {raw[:200]!r}")
            message = (
                "We could not parse the JSON body of your request. (HINT: This likely means you"
                " aren't using your HTTP library correctly. The OpenAI API expects a JSON payload,"
                " but what was sent was not valid JSON.)"
            )
            await _send_json(send, 400, _envelope(message, "invalid_request_error"))
            return
        with self._changed:
            index = len(self._records)
            self._records.append(_Record(body if isinstance(body, dict) else {}, headers))
            responder = self._responder
            self._changed.notify_all()

        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            message = "Incorrect API key provided. You can find your API key in your settings."
            error = _envelope(message, "invalid_request_error", None, "invalid_api_key")
            await _send_json(send, 401, error)
            return
        if self.strict:
            problem = request_problem(body)
            if problem is not None:
                text, param, code = problem
                self._error(f"request {index} would be rejected by OpenAI: {text} (param: {param})")
                error = _envelope(text, "invalid_request_error", param, code)
                await _send_json(send, 400, error, retry=False)
                return
        if not isinstance(body, dict):
            await _send_json(
                send, 400, _envelope("Expected a JSON object.", "invalid_request_error")
            )
            return

        turn: Turn
        try:
            if responder is None:
                raise UpstreamScriptError("no script is set")
            turn = await anyio.to_thread.run_sync(
                responder, copy.deepcopy(body), abandon_on_cancel=True
            )
            if not isinstance(turn, _TURN_TYPES):
                raise UpstreamScriptError(f"the script returned {turn!r}, which is not a Turn")
        except Exception as exc:
            message = f"request {index}: {exc}"
            if not isinstance(exc, UpstreamScriptError):
                message = f"request {index}: the script raised {exc!r}"
            self._error(message)
            await _send_json(
                send, 500, _envelope(f"scripted upstream: {message}", "server_error"), retry=False
            )
            return

        exchange = _Exchange(self, index, body, receive, send)
        await exchange.run(turn)

    def _mark_disconnected(self, index: int) -> None:
        with self._changed:
            self._records[index].disconnected = True
            self._changed.notify_all()


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, Any],
    *,
    retry: bool | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"x-request-id", f"req_{secrets.token_hex(16)}".encode()),
    ]
    if retry is not None:
        headers.append((b"x-should-retry", b"true" if retry else b"false"))
    headers += extra or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def _sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


class _Exchange:
    """Plays one turn to one client, noticing if the client hangs up before the end."""

    def __init__(
        self, upstream: ScriptedUpstream, index: int, body: Request, receive: Receive, send: Send
    ) -> None:
        self.upstream = upstream
        self.index = index
        self.body = body
        self.receive = receive
        self.send = send
        self.answered = False
        self.started = False
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.include_usage = (
            self.stream and isinstance(options, dict) and options.get("include_usage") is True
        )
        model = body.get("model")
        self.model = model if isinstance(model, str) else "unknown"
        self.completion_id = f"chatcmpl-{secrets.token_urlsafe(21)}"
        self.created = int(time.time())

    async def run(self, turn: Turn) -> None:
        hung_up = False
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal hung_up
                while (await self.receive())["type"] != "http.disconnect":
                    pass
                if not self.answered:
                    hung_up = True
                    group.cancel_scope.cancel()

            group.start_soon(watch)
            try:
                await self.play(turn)
            except _Closing:
                if self.started:
                    _dropping.set(True)  # cut short mid-stream: uvicorn closes the connection
                else:
                    message = "The scripted upstream is shutting down."
                    await _send_json(self.send, 503, _envelope(message, "server_error"))
            self.answered = True
            group.cancel_scope.cancel()
        if hung_up:
            self.upstream._mark_disconnected(self.index)

    async def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self.upstream._closing.is_set():
                raise _Closing
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await anyio.sleep(min(left, 0.05))

    async def play(self, turn: Turn) -> None:
        while isinstance(turn, Delay):
            await self.sleep(turn.seconds)
            turn = turn.then
        if isinstance(turn, Fail):
            error = _envelope(
                turn.message, turn.type or _error_type(turn.status), turn.param, turn.code
            )
            if turn.code is None and turn.status == 429:
                error["error"]["code"] = "rate_limit_exceeded"
            await _send_json(self.send, turn.status, error, retry=turn.should_retry)
        elif isinstance(turn, Broken):
            await self.play_broken(turn)
        elif self.stream:
            await self.start_stream()
            for chunk in self.chunks(turn):
                await self.send_chunk(_sse(chunk))
            await self.finish_stream()
        else:
            body = completion_body(
                turn, completion_id=self.completion_id, created=self.created, model=self.model
            )
            await _send_json(self.send, 200, body)

    def chunks(self, turn: Text | ToolCalls) -> list[dict[str, Any]]:
        return completion_chunks(
            turn,
            completion_id=self.completion_id,
            created=self.created,
            model=self.model,
            include_usage=self.include_usage,
            chunk_size=self.upstream.chunk_size,
        )

    async def start_stream(self) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", f"req_{secrets.token_hex(16)}".encode()),
        ]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        self.started = True

    async def send_chunk(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})
        delay = self.upstream.chunk_delay
        if delay > 0:
            await self.sleep(delay)
        else:
            await anyio.sleep(0)  # let a hang-up be noticed between chunks

    async def finish_stream(self) -> None:
        await self.send({"type": "http.response.body", "body": _sse("[DONE]"), "more_body": True})
        self.answered = True
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def play_broken(self, turn: Broken) -> None:
        if not self.stream:
            if turn.error is not None:
                error = _envelope(turn.error, "server_error")
                await _send_json(self.send, 500, error, retry=False)
                return
            data = json.dumps(
                completion_body(
                    turn.then,
                    completion_id=self.completion_id,
                    created=self.created,
                    model=self.model,
                )
            ).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ]
            await self.send({"type": "http.response.start", "status": 200, "headers": headers})
            self.started = True
            half = data[: len(data) // 2]
            await self.send({"type": "http.response.body", "body": half, "more_body": True})
            self.answered = True
            _dropping.set(True)  # returning now makes uvicorn close the connection
            return
        await self.start_stream()
        for chunk in self.chunks(turn.then)[: turn.after_chunks]:
            await self.send_chunk(_sse(chunk))
        if turn.error is not None:
            await self.send_chunk(_sse(_envelope(turn.error, "server_error")))
            await self.finish_stream_without_done()
        else:
            self.answered = True
            _dropping.set(True)

    async def finish_stream_without_done(self) -> None:
        self.answered = True
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

"""Frames from the kernel, checked before the host believes them.

The kernel runs in the same process as untrusted code, which can write its own frames to the
session socket. So every JSON frame is checked strictly against its kind: exactly its keys, the
type of every field. Anything else raises `FrameError` and the session that sent it is
restarted (see session.py). Nothing a frame says can make the host report a status outside
`STATUSES`. Sizes are bounded before any of this: by the frame limit (channel.py) and by each
execution's budgets (session.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .events import Error, Result

KERNEL_STATUSES = ("ok", "error", "interrupted")
RESULT_KINDS = ("execute_result", "display_data")
STREAMS = ("stdout", "stderr")
ERROR_PARTS = ("value", "traceback")
MAX_PARTS = 32  # long values in one result
MAX_KEY_CHARS = 255  # a MIME type, or a part's key
MAX_ID = 2**63 - 1
MAX_COUNT = 2**53


_RESULT_KEYS = frozenset({"ev", "id", "type", "data", "metadata"})
_ERROR_KEYS = frozenset({"ev", "id", "name"})
_DONE_KEYS = frozenset({"ev", "id", "status", "execution_count", "unsent"})
_PONG_KEYS = frozenset({"ev", "id"})
_SAVED_KEYS = frozenset({"ev", "id", "status", "bytes", "saved", "skipped", "error"})
MAX_SKIPPED = 50  # names a snapshot frame lists as not saved (the archive lists them all)


class FrameError(Exception):
    """A frame that is not one the kernel sends."""


@dataclass(frozen=True)
class Done:
    """The kernel's end of one execution, before the host adds what only it knows."""

    status: Literal["ok", "error", "interrupted"]
    execution_count: int | None
    unsent: dict[str, int]  # stream -> bytes of output the kernel held back (over the cap)


@dataclass(frozen=True)
class Pong:
    """The answer to a ping."""


@dataclass(frozen=True)
class Saved:
    """The end of a snapshot: the archive's size, how many variables it holds, and some of
    what it left out, with why."""

    status: Literal["ok", "error", "too_large"]  # too_large: past the host's max_bytes
    bytes: int
    saved: int
    skipped: dict[str, str]
    error: str


@dataclass(frozen=True)
class Reply:
    """A checked frame of one execution (or ping), as the host buffers it."""

    id: int
    payload: Result | Error | Done | Pong | Saved
    parts: tuple[str, ...] = ()  # keys whose values came as part frames just before this one


def _check_keys(message: dict[str, Any], required: frozenset[str], optional: set[str]) -> None:
    keys = message.keys()
    if keys == required:
        return
    missing = required - keys
    if missing:
        raise FrameError(f"missing {', '.join(sorted(missing))}")
    unknown = keys - required - optional
    if unknown:
        raise FrameError(f"unknown field {sorted(unknown)[0][:40]!r}")


def _count(value: Any, name: str, limit: int = MAX_COUNT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise FrameError(f"{name} is not a count")
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise FrameError(f"{name} is not a string")
    return value


def _key(value: Any, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_KEY_CHARS:
        raise FrameError(f"{name} is not a key of 1 to {MAX_KEY_CHARS} characters")
    return value


def _parts(message: dict[str, Any], allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    raw = message.get("parts")
    if raw is None and "parts" not in message:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_PARTS:
        raise FrameError(f"parts is not a list of at most {MAX_PARTS} keys")
    parts = tuple(_key(key, "a part's key") for key in raw)
    if len(set(parts)) != len(parts):
        raise FrameError("parts names a key twice")
    if allowed is not None and not set(parts) <= set(allowed):
        raise FrameError("parts names a field that cannot be a part")
    return parts


def is_json_type(mime: str) -> bool:
    return mime == "application/json" or mime.endswith("+json")


def parse_result(message: dict[str, Any]) -> Reply:
    """A rich result: MIME values are text, or any JSON for JSON types."""
    _check_keys(message, _RESULT_KEYS, {"parts"})
    kind = message["type"]
    if kind not in RESULT_KINDS:
        raise FrameError("unknown result type")
    raw, metadata = message["data"], message["metadata"]
    if not isinstance(raw, dict) or not isinstance(metadata, dict):
        raise FrameError("data and metadata must be objects")
    for mime, value in raw.items():
        _key(mime, "a MIME type")
        if not (type(value) is str or is_json_type(mime)):
            raise FrameError("a MIME value that is not text")
    parts = _parts(message, None)
    if parts and any(key in raw for key in parts):
        raise FrameError("a MIME type both in data and in parts")
    if not raw and not parts:
        raise FrameError("a result without data")
    return Reply(_count(message["id"], "id", MAX_ID), Result(dict(raw), metadata, kind), parts)


def parse_error(message: dict[str, Any]) -> Reply:
    """An exception; `value` and `traceback` are either fields or parts."""
    _check_keys(message, _ERROR_KEYS, {"value", "traceback", "parts"})
    parts = _parts(message, ERROR_PARTS)
    fields = {}
    for field in ERROR_PARTS:
        if (field in message) == (field in parts):
            raise FrameError(f"{field} must be a field or a part, once")
        if field in message:
            fields[field] = _string(message[field], field)
    name = _string(message["name"], "name")
    error = Error(name or "Error", fields.get("value", ""), fields.get("traceback", ""))
    return Reply(_count(message["id"], "id", MAX_ID), error, parts)


def parse_done(message: dict[str, Any]) -> Reply:
    _check_keys(message, _DONE_KEYS, set())
    status, count, unsent = message["status"], message["execution_count"], message["unsent"]
    if status not in KERNEL_STATUSES:
        raise FrameError("unknown status")
    if not isinstance(unsent, dict) or not unsent.keys() <= set(STREAMS):
        raise FrameError("unsent is not a count per stream")
    done = Done(
        status=status,
        execution_count=None if count is None else _count(count, "execution_count"),
        unsent={stream: _count(n, "unsent") for stream, n in unsent.items()},
    )
    return Reply(_count(message["id"], "id", MAX_ID), done)


def parse_pong(message: dict[str, Any]) -> Reply:
    _check_keys(message, _PONG_KEYS, set())
    return Reply(_count(message["id"], "id", MAX_ID), Pong())


def parse_saved(message: dict[str, Any]) -> Reply:
    _check_keys(message, _SAVED_KEYS, set())
    status, skipped = message["status"], message["skipped"]
    if status not in ("ok", "error", "too_large"):
        raise FrameError("unknown status")
    if not isinstance(skipped, dict) or len(skipped) > MAX_SKIPPED:
        raise FrameError(f"skipped is not a map of at most {MAX_SKIPPED} names")
    saved = Saved(
        status=status,
        bytes=_count(message["bytes"], "bytes"),
        saved=_count(message["saved"], "saved"),
        skipped={_key(k, "a name"): _string(v, "a reason") for k, v in skipped.items()},
        error=_string(message["error"], "error"),
    )
    return Reply(_count(message["id"], "id", MAX_ID), saved)


_PARSERS = {
    "result": parse_result,
    "error": parse_error,
    "done": parse_done,
    "pong": parse_pong,
    "saved": parse_saved,
}


def parse_message(message: dict[str, Any]) -> Reply:
    """A JSON frame the kernel sends once it serves; FrameError for anything else."""
    parser = _PARSERS.get(message.get("ev"))  # type: ignore[arg-type]
    if parser is None:
        raise FrameError(f"unknown frame kind {str(message.get('ev'))[:40]!r}")
    return parser(message)


def parse_restored(message: dict[str, Any]) -> dict[str, Any] | None:
    """What a session started from a snapshot says it restored (in its ready message): how
    many variables, some of those the snapshot had left out with why, and what went wrong;
    bounded and checked. None if the session was not restored."""
    raw = message.get("restored")
    if not isinstance(raw, dict):
        return None
    count, skipped, errors = raw.get("variables"), raw.get("skipped"), raw.get("errors")
    return {
        "variables": count if isinstance(count, int) and not isinstance(count, bool) else 0,
        "skipped": {
            str(k)[:MAX_KEY_CHARS]: str(v)[:1000]
            for k, v in list(skipped.items() if isinstance(skipped, dict) else ())[:MAX_SKIPPED]
        },
        "errors": [str(e)[:1000] for e in (errors if isinstance(errors, list) else [])[:20]],
    }


def parse_timings(message: dict[str, Any]) -> dict[str, float]:
    """The jail's step timings from the ready message (milliseconds by step); others dropped."""
    raw = message.get("timings")
    if not isinstance(raw, dict):
        return {}
    return {
        step[:MAX_KEY_CHARS]: float(ms)
        for step, ms in list(raw.items())[:64]
        if isinstance(step, str) and isinstance(ms, int | float) and not isinstance(ms, bool)
    }

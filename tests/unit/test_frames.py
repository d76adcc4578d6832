"""Frames from the kernel: each kind is checked strictly, field by field, before the host
believes it; framing helpers split what they join."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from codeinterp.sandbox.channel import (
    MAX_KERNEL_FRAME,
    TAG_PART,
    TAG_STDERR,
    TAG_STDOUT,
    ProtocolError,
    decode_object,
    encode_output,
    encode_part,
    part_room,
    read_size,
    split_part,
)
from codeinterp.sandbox.events import Error, Result
from codeinterp.sandbox.frames import (
    MAX_PARTS,
    Done,
    FrameError,
    Pong,
    Reply,
    parse_message,
    parse_timings,
)

RESULT = {
    "ev": "result",
    "id": 3,
    "type": "display_data",
    "data": {"text/plain": "x", "application/json": {"k": [1, None]}},
    "metadata": {"isolated": True},
}
ERROR = {"ev": "error", "id": 3, "name": "ValueError", "value": "bad", "traceback": "tb"}
DONE = {"ev": "done", "id": 3, "status": "error", "execution_count": 7, "unsent": {"stdout": 5}}


def test_each_kind_the_kernel_sends_is_read() -> None:
    """Results (text and JSON values), errors, ends and pongs become typed replies."""
    assert parse_message(RESULT) == Reply(
        3, Result(RESULT["data"], {"isolated": True}, "display_data")
    )
    assert parse_message(ERROR) == Reply(3, Error("ValueError", "bad", "tb"))
    assert parse_message(DONE) == Reply(3, Done("error", 7, {"stdout": 5}))
    assert parse_message({"ev": "pong", "id": 0}) == Reply(0, Pong())
    assert parse_message({**DONE, "execution_count": None, "unsent": {}}).payload == Done(
        "error", None, {}
    )


def test_long_values_are_named_as_parts() -> None:
    """A result or error may leave values out and name them in `parts` instead."""
    result = {**RESULT, "data": {"text/plain": "x"}, "parts": ["text/html", "image/png"]}
    assert parse_message(result).parts == ("text/html", "image/png")
    error = {"ev": "error", "id": 1, "name": "E", "value": "v", "parts": ["traceback"]}
    reply = parse_message(error)
    assert reply.parts == ("traceback",)
    assert reply.payload == Error("E", "v", "")
    assert parse_message({**RESULT, "data": {}, "parts": ["text/html"]}).parts == ("text/html",)


INVALID: dict[str, dict[str, Any]] = {
    "unknown kind": {"ev": "stream", "name": "stdout", "text": "x"},
    "no kind": {"id": 1},
    "ready once serving": {"ev": "ready", "timings": {}},
    "id a string": {**DONE, "id": "3"},
    "id a bool": {**DONE, "id": True},
    "id negative": {**DONE, "id": -1},
    "id a float": {**DONE, "id": 3.0},
    "done status unknown": {**DONE, "status": "pwned"},
    "done count a bool": {**DONE, "execution_count": False},
    "done count negative": {**DONE, "execution_count": -2},
    "done with files": {**DONE, "files": [{"name": "x"}]},
    "done without unsent": {k: v for k, v in DONE.items() if k != "unsent"},
    "done unsent of a third stream": {**DONE, "unsent": {"stdin": 1}},
    "done unsent negative": {**DONE, "unsent": {"stdout": -1}},
    "done unsent huge": {**DONE, "unsent": {"stdout": 2**60}},
    "pong with more": {"ev": "pong", "id": 1, "text": "x"},
    "result type unknown": {**RESULT, "type": "stream"},
    "result data a list": {**RESULT, "data": ["not", "a", "dict"]},
    "result text value an int": {**RESULT, "data": {"text/plain": 12345}},
    "result text value a dict": {**RESULT, "data": {"text/html": {"a": 1}}},
    "result mime empty": {**RESULT, "data": {"": "x"}},
    "result mime too long": {**RESULT, "data": {"x" * 256: "x"}},
    "result metadata a list": {**RESULT, "metadata": []},
    "result without data": {**RESULT, "data": {}},
    "result extra field": {**RESULT, "files": []},
    "result parts not a list": {**RESULT, "parts": "text/html"},
    "result parts twice": {**RESULT, "parts": ["a/b", "a/b"]},
    "result parts also in data": {**RESULT, "parts": ["text/plain"]},
    "result parts too many": {**RESULT, "parts": [f"a/{i}" for i in range(MAX_PARTS + 1)]},
    "result parts not strings": {**RESULT, "parts": [1]},
    "error without name": {"ev": "error", "id": 1, "value": "", "traceback": ""},
    "error name an int": {**ERROR, "name": 5},
    "error value a list": {**ERROR, "value": ["v"]},
    "error traceback missing": {k: v for k, v in ERROR.items() if k != "traceback"},
    "error value both field and part": {**ERROR, "parts": ["value"]},
    "error part of another field": {**ERROR, "parts": ["name"]},
}


@pytest.mark.parametrize("message", INVALID.values(), ids=INVALID.keys())
def test_anything_else_is_refused(message: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        parse_message(message)


def test_ready_timings_keep_only_numbers_by_step() -> None:
    message = {"ev": "ready", "timings": {"jail": 1.5, "seccomp": 2, "x": "y", "b": True}}
    assert parse_timings(message) == {"jail": 1.5, "seccomp": 2.0}
    assert parse_timings({"ev": "ready", "timings": ["no"]}) == {}


def test_part_frames_carry_a_key_and_raw_bytes() -> None:
    frame = encode_part(b"text/html", b"<b>\xc3")
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4
    key, data = split_part(frame[4:])
    assert (key, bytes(data)) == ("text/html", b"<b>\xc3")
    assert part_room(b"text/html") + 2 + len(b"text/html") == MAX_KERNEL_FRAME


@pytest.mark.parametrize(
    "body",
    [
        b"",
        bytes([TAG_PART]),
        bytes([TAG_PART, 0]) + b"data",  # an empty key
        bytes([TAG_PART, 9]) + b"short",  # a key longer than the frame
        bytes([TAG_PART, 2]) + b"\xff\xfe" + b"data",  # a key that is not UTF-8
        bytes([TAG_STDOUT, 1]) + b"kdata",  # not a part at all
    ],
)
def test_malformed_part_frames_are_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        split_part(body)


def test_output_frames_are_a_tag_and_the_bytes() -> None:
    assert encode_output(TAG_STDERR, b"oops") == struct.pack(">I", 5) + b"\x02oops"
    assert encode_output(TAG_STDOUT, b"")[4:] == bytes([TAG_STDOUT])


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"{", b"[" * 100_000, b"\xff"])
def test_bodies_that_are_not_json_objects_are_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_object(body)


def test_read_size_leaves_the_body_unread() -> None:
    async def read() -> tuple[int | None, bytes, int | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(encode_output(TAG_STDOUT, b"abc") + b"\x00\x00")
        reader.feed_eof()
        size = await read_size(reader)
        body = await reader.readexactly(size or 0)
        return size, body, await read_size(reader)  # a header cut short: end of stream

    assert asyncio.run(read()) == (4, b"\x01abc", None)

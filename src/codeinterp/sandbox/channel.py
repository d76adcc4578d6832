"""Framing for the session channel: a 4-byte big-endian length, then the body.

Requests from the host are JSON objects (`encode`, `recv_message`), up to MAX_FRAME. Frames from
the kernel are small, because untrusted code shares the kernel's process and can write anything
to its socket: at most MAX_KERNEL_FRAME bytes each, and the body's first byte says what it holds:

- `{`: a JSON object (ready, pong, result, error, done; see `frames.py`);
- TAG_STDOUT / TAG_STDERR: raw UTF-8 output, decoded by the host (no JSON at all);
- TAG_PART: one slice of a long string value of the next result or error frame: a byte with the
  length of its key, the key (a MIME type, or `value` / `traceback`), then raw UTF-8;
- TAG_BLOB: raw bytes of a snapshot the host asked for (see snapshot.py), which it stores
  without reading.

So the host never decodes JSON larger than MAX_KERNEL_FRAME, and long values (a PNG, a page of
HTML) arrive as slices it decodes one at a time. The kernel side (inside the jail) is blocking;
the host reads with asyncio streams (`read_size`, then the body).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

MAX_FRAME = 16 * 1024 * 1024  # a request from the host (code to run can be long)
MAX_KERNEL_FRAME = 64 * 1024  # any frame from the kernel; longer values travel as parts
TAG_STDOUT = 0x01
TAG_STDERR = 0x02
TAG_PART = 0x03
TAG_BLOB = 0x04
JSON_START = ord("{")
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return _HEADER.pack(len(body)) + body


def encode_output(tag: int, data: bytes) -> bytes:
    """One frame of raw output (TAG_STDOUT or TAG_STDERR); at most MAX_KERNEL_FRAME - 1 bytes."""
    return _HEADER.pack(len(data) + 1) + bytes((tag,)) + data


def encode_blob(data: bytes) -> bytes:
    """One frame of a snapshot's bytes; at most MAX_KERNEL_FRAME - 1 of them."""
    return _HEADER.pack(len(data) + 1) + bytes((TAG_BLOB,)) + data


def encode_part(key: bytes, data: bytes) -> bytes:
    """One slice of a long value; `key` is at most 255 bytes of UTF-8."""
    return _HEADER.pack(len(data) + 2 + len(key)) + bytes((TAG_PART, len(key))) + key + data


def part_room(key: bytes) -> int:
    """How many bytes of value one part frame with this key can carry."""
    return MAX_KERNEL_FRAME - 2 - len(key)


def split_part(body: bytes) -> tuple[str, memoryview]:
    """The key and the data of a part frame's body; ProtocolError if it is not one."""
    if len(body) < 3 or body[0] != TAG_PART or len(body) < 2 + body[1] or not body[1]:
        raise ProtocolError("malformed part frame")
    end = 2 + body[1]
    try:
        key = body[2:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("part frame key is not UTF-8") from None
    return key, memoryview(body)[end:]


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None at end of stream."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME} byte limit")
    body = _recv_exact(sock, size)
    if body is None:
        return None
    message: dict[str, Any] = json.loads(body)
    return message


async def read_size(reader: asyncio.StreamReader) -> int | None:
    """The size of the next frame's body, or None at end of stream; the body is left unread."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None
    size: int = _HEADER.unpack(header)[0]
    return size


def decode_object(body: bytes) -> dict[str, Any]:
    """A JSON object frame's body; ProtocolError if it is anything else."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:  # hostile nesting raises RecursionError
        raise ProtocolError(f"frame is not usable JSON: {type(exc).__name__}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message from an asyncio stream, or None at end of stream."""
    message, _ = await read_frame(reader)
    return message


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any] | None, int]:
    """The next message and its size in bytes, or (None, 0) at end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME} byte limit")
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None, 0
    return decode_object(body), size

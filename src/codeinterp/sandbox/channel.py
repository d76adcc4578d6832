"""Framing for the session channel: a 4-byte big-endian length, then one JSON object.

The kernel side (inside the jail) is blocking and single-threaded; the host side reads with
asyncio streams (`read_message`). A frame larger than MAX_FRAME is a protocol violation: the host
never buffers more than that for one message.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

MAX_FRAME = 16 * 1024 * 1024  # the kernel sends at most 8 MiB of rich output per frame
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return _HEADER.pack(len(body)) + body


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
    try:
        message: dict[str, Any] = json.loads(body)
    except (ValueError, RecursionError) as exc:  # hostile nesting raises RecursionError
        raise ProtocolError(f"frame is not usable JSON: {type(exc).__name__}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message, size

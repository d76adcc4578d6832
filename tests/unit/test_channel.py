"""Channel framing: what one side encodes the other decodes, and bad frames are refused."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeinterp.sandbox.channel import (
    MAX_FRAME,
    ProtocolError,
    encode,
    read_message,
    recv_message,
    send_message,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
messages = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


@given(messages)
def test_blocking_round_trip(message: dict[str, Any]) -> None:
    """Any JSON object sent by send_message is received unchanged by recv_message."""
    a, b = socket.socketpair()
    with a, b:
        send_message(a, message)
        assert recv_message(b) == message


@given(st.lists(messages, min_size=1, max_size=5))
def test_async_reader_splits_a_stream_into_messages(batch: list[dict[str, Any]]) -> None:
    """Frames written back to back come out one by one, then None at end of stream."""

    async def read_all() -> list[dict[str, Any] | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(encode(m) for m in batch))
        reader.feed_eof()
        return [await read_message(reader) for _ in range(len(batch) + 1)]

    assert asyncio.run(read_all()) == [*batch, None]


def test_oversized_frame_is_refused_without_reading_it() -> None:
    """A length header above MAX_FRAME raises ProtocolError instead of buffering."""

    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack(">I", MAX_FRAME + 1))
        await read_message(reader)

    with pytest.raises(ProtocolError):
        asyncio.run(read())


def test_non_object_frame_is_refused() -> None:
    """A frame holding JSON that is not an object is a protocol error."""

    async def read() -> None:
        reader = asyncio.StreamReader()
        body = b"[1, 2]"
        reader.feed_data(struct.pack(">I", len(body)) + body)
        await read_message(reader)

    with pytest.raises(ProtocolError):
        asyncio.run(read())


def test_truncated_frame_reads_as_end_of_stream() -> None:
    """A peer that dies mid-frame looks like end of stream, not a crash."""

    async def read() -> dict[str, Any] | None:
        reader = asyncio.StreamReader()
        reader.feed_data(encode({"ev": "ready"})[:-2])
        reader.feed_eof()
        return await read_message(reader)

    assert asyncio.run(read()) is None

"""A Responses stream that fails after it began ends with OpenAI's error event (the spec's
``ResponseErrorEvent``): ``event: error`` with ``{"type": "error", "code", "message", "param",
"sequence_number"}``, numbered after the events before it.

A failing model does not get here: the response fails, and the stream ends with
``response.failed`` (test_responses.py). What does is a failure of the server itself; here the
server cannot store the finished response, because a trigger in its SQLite database refuses
every new row of the ``responses`` table (as a full disk or a broken database would).

The official SDK yields the event (``ResponseErrorEvent``) from ``responses.create(stream=True)``
and from the ``responses.stream`` helper; it raises ``APIError`` only for the ``{"error": {...}}``
form, which is the Assistants and Chat Completions one.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseErrorEvent

from codeinterp.store.database import DATABASE_FILE
from tests.contract.helpers import raw_client
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream, Text

pytestmark = pytest.mark.root

MODEL = "gpt-4.1-test"
ERROR_EVENT_KEYS = {"type", "code", "message", "param", "sequence_number"}


@pytest.fixture
def store_refuses_responses(server: ServerProcess) -> Iterator[None]:
    """Every INSERT into the server's `responses` table fails while the test runs."""
    database = server.data_dir / DATABASE_FILE
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.execute(
            "CREATE TRIGGER refuse_responses BEFORE INSERT ON responses "
            "BEGIN INSERT INTO no_such_table VALUES (1); END"
        )
        try:
            yield
        finally:
            db.execute("DROP TRIGGER refuse_responses")


@pytest.mark.usefixtures("store_refuses_responses")
def test_sdk_yields_the_error_event_numbered_after_the_others(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.script = [Text("Hello there.")]
    with client.responses.create(model=MODEL, input="Hi", stream=True) as stream:
        events = list(stream)
    *before, last = events
    assert before and before[0].type == "response.created", [e.type for e in events]
    assert isinstance(last, ResponseErrorEvent), last
    assert last.type == "error"
    assert last.code == "server_error"
    assert last.message and last.param is None
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(events))), numbers


@pytest.mark.usefixtures("store_refuses_responses")
def test_stream_helper_passes_the_error_event_on(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.script = [Text("Hello there.")]
    with client.responses.stream(model=MODEL, input="Hi") as stream:
        events = list(stream)
    assert isinstance(events[-1], ResponseErrorEvent), events[-1]
    assert events[-1].sequence_number == events[-2].sequence_number + 1


@pytest.mark.usefixtures("store_refuses_responses")
def test_error_frame_on_the_wire(server: ServerProcess, upstream: ScriptedUpstream) -> None:
    """The last frame is exactly `event: error` with the spec's five fields, and nothing
    follows it."""
    upstream.reset([Text("Hello there.")])
    body = {"model": MODEL, "input": "Hi", "stream": True}
    with raw_client(server) as http:
        response = http.post("/responses", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = _frames(response.text)
    previous, (event, data) = frames[-2], frames[-1]
    assert event == "error"
    assert set(data) == ERROR_EVENT_KEYS, data
    assert data["type"] == "error" and data["code"] == "server_error"
    assert isinstance(data["message"], str) and data["message"]
    assert data["param"] is None
    assert data["sequence_number"] == previous[1]["sequence_number"] + 1
    assert response.text.endswith("\n\n")


def _frames(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The stream's (event, data) pairs; keep-alive comments are skipped."""
    frames = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        fields = dict(line.split(": ", 1) for line in lines)
        if "event" in fields:
            frames.append((fields["event"], json.loads(fields["data"])))
    return frames

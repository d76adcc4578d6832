"""Cursor pagination as the SDK uses it: ``limit``, ``order``, ``after``, ``before``, filters.

Every list returns ``{"object": "list", "data", "first_id", "last_id", "has_more"}``; the SDK's
auto-pagination follows ``after=<last id>`` while ``has_more`` is true.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from tests.contract.helpers import assert_envelope, raw_client
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream, Text

pytestmark = pytest.mark.root

COUNT = 25
MODEL = "gpt-test"


@pytest.fixture(scope="module")
def assistant_ids(server: ServerProcess) -> list[str]:
    """25 assistants, in the order they were created."""
    with server.client() as sdk:
        return [
            sdk.beta.assistants.create(model=MODEL, name=f"assistant {i:02d}").id
            for i in range(COUNT)
        ]


@pytest.fixture(scope="module")
def thread_messages(server: ServerProcess) -> tuple[str, list[str]]:
    """A thread with 25 user messages; its id and the message ids in creation order."""
    with server.client() as sdk:
        thread = sdk.beta.threads.create()
        ids = [
            sdk.beta.threads.messages.create(thread.id, role="user", content=f"message {i:02d}").id
            for i in range(COUNT)
        ]
    return thread.id, ids


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx2.Client]:
    with raw_client(server) as client:
        yield client


def _page(http: httpx2.Client, path: str, **params: Any) -> dict[str, Any]:
    response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= {"object", "data", "first_id", "last_id", "has_more"}, body
    assert body["object"] == "list"
    return body


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["data"]]


# --------------------------------------------------------------------------- auto-pagination


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_messages_auto_pagination_yields_each_once_in_order(
    client: openai.OpenAI, thread_messages: tuple[str, list[str]], order: str
) -> None:
    """Iterating a limit=10 message list yields all 25 messages once, in the order asked for."""
    thread_id, ids = thread_messages
    expected = ids if order == "asc" else ids[::-1]
    first = client.beta.threads.messages.list(thread_id, limit=10, order=order)  # type: ignore[arg-type]
    assert [len(page.data) for page in first.iter_pages()] == [10, 10, 5]
    seen = list(client.beta.threads.messages.list(thread_id, limit=10, order=order))  # type: ignore[arg-type]
    assert [m.id for m in seen] == expected
    numbers = [int(m.content[0].text.value.split()[-1]) for m in seen]  # type: ignore[union-attr]
    assert numbers == (list(range(COUNT)) if order == "asc" else list(range(COUNT))[::-1])


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_assistants_auto_pagination_yields_each_once_in_order(
    client: openai.OpenAI, assistant_ids: list[str], order: str
) -> None:
    """Iterating a limit=10 assistant list yields all 25 assistants once, in the order asked for."""
    expected = assistant_ids if order == "asc" else assistant_ids[::-1]
    first = client.beta.assistants.list(limit=10, order=order)  # type: ignore[arg-type]
    assert [len(page.data) for page in first.iter_pages()] == [10, 10, 5]
    seen = [a.id for a in client.beta.assistants.list(limit=10, order=order)]  # type: ignore[arg-type]
    assert seen == expected


def test_default_message_page_is_20_newest_first(
    http: httpx2.Client, thread_messages: tuple[str, list[str]]
) -> None:
    """Without parameters a message list is the 20 newest messages, newest first."""
    thread_id, ids = thread_messages
    body = _page(http, f"/threads/{thread_id}/messages")
    assert _ids(body) == ids[::-1][:20]
    assert body["has_more"] is True


# --------------------------------------------------------------------------- one raw page


def test_raw_pages_have_correct_envelope(
    http: httpx2.Client, thread_messages: tuple[str, list[str]]
) -> None:
    """Each page's first_id, last_id and has_more describe exactly that page."""
    thread_id, ids = thread_messages
    path = f"/threads/{thread_id}/messages"

    body = _page(http, path, limit=10, order="asc")
    assert _ids(body) == ids[:10]
    assert (body["first_id"], body["last_id"], body["has_more"]) == (ids[0], ids[9], True)

    body = _page(http, path, limit=10, order="asc", after=ids[19])
    assert _ids(body) == ids[20:]
    assert (body["first_id"], body["last_id"], body["has_more"]) == (ids[20], ids[24], False)

    body = _page(http, path, limit=25, order="asc")
    assert _ids(body) == ids and body["has_more"] is False

    body = _page(http, path, limit=10, order="desc")
    assert _ids(body) == ids[::-1][:10]
    assert (body["first_id"], body["last_id"], body["has_more"]) == (ids[24], ids[15], True)

    body = _page(http, path, limit=10, order="asc", after=ids[24])
    assert body["data"] == []
    assert (body["first_id"], body["last_id"], body["has_more"]) == (None, None, False)


def test_assistant_raw_page_envelope(http: httpx2.Client, assistant_ids: list[str]) -> None:
    """The assistants list describes its pages the same way."""
    body = _page(http, "/assistants", limit=10, order="desc", after=assistant_ids[10])
    assert _ids(body) == assistant_ids[9::-1]
    assert (body["first_id"], body["last_id"], body["has_more"]) == (
        assistant_ids[9],
        assistant_ids[0],
        False,
    )


# --------------------------------------------------------------------------- cursors


def test_after_and_before_cursors_ascending(
    client: openai.OpenAI, thread_messages: tuple[str, list[str]]
) -> None:
    """In ascending order ``after`` gives the next items and ``before`` the ones just before."""
    thread_id, ids = thread_messages
    messages = client.beta.threads.messages

    page = messages.list(thread_id, order="asc", limit=5, after=ids[9])
    assert [m.id for m in page.data] == ids[10:15] and page.has_more is True

    page = messages.list(thread_id, order="asc", limit=5, before=ids[10])
    assert [m.id for m in page.data] == ids[5:10] and page.has_more is True

    page = messages.list(thread_id, order="asc", limit=5, before=ids[3])
    assert [m.id for m in page.data] == ids[0:3] and page.has_more is False

    page = messages.list(thread_id, order="asc", limit=20, after=ids[5], before=ids[12])
    assert [m.id for m in page.data] == ids[6:12] and page.has_more is False


def test_after_and_before_cursors_descending(
    client: openai.OpenAI, thread_messages: tuple[str, list[str]]
) -> None:
    """In descending order ``after`` walks to older items and ``before`` to the newer ones."""
    thread_id, ids = thread_messages
    messages = client.beta.threads.messages

    page = messages.list(thread_id, order="desc", limit=5, after=ids[15])
    assert [m.id for m in page.data] == ids[14:9:-1] and page.has_more is True

    page = messages.list(thread_id, order="desc", limit=5, before=ids[15])
    assert [m.id for m in page.data] == ids[20:15:-1] and page.has_more is True

    page = messages.list(thread_id, order="desc", limit=5, before=ids[21])
    assert [m.id for m in page.data] == ids[24:21:-1] and page.has_more is False

    page = messages.list(thread_id, order="desc", limit=20, after=ids[12], before=ids[5])
    assert [m.id for m in page.data] == ids[11:5:-1] and page.has_more is False


def test_assistant_cursors(client: openai.OpenAI, assistant_ids: list[str]) -> None:
    """``after`` and ``before`` work on the assistants list too."""
    page = client.beta.assistants.list(order="asc", limit=3, after=assistant_ids[20])
    assert [a.id for a in page.data] == assistant_ids[21:24] and page.has_more is True
    page = client.beta.assistants.list(order="asc", limit=3, before=assistant_ids[20])
    assert [a.id for a in page.data] == assistant_ids[17:20] and page.has_more is True


@pytest.mark.parametrize("cursor", ["after", "before"])
def test_unknown_cursor_is_bad_request(
    http: httpx2.Client, thread_messages: tuple[str, list[str]], cursor: str
) -> None:
    """A cursor that is not an id from the list is a 400 naming the cursor parameter."""
    thread_id, _ = thread_messages
    response = http.get(f"/threads/{thread_id}/messages", params={cursor: "msg_nope"})
    error = assert_envelope(response, 400, param=cursor)
    assert cursor in error["message"], error


# --------------------------------------------------------------------------- filters


def test_run_id_filter_on_messages(
    client: openai.OpenAI, upstream: ScriptedUpstream, assistant_ids: list[str]
) -> None:
    """``run_id`` lists only the messages that run wrote; the run list pages through both runs."""
    upstream.script = [Text("first answer"), Text("second answer")]
    thread = client.beta.threads.create()
    runs = []
    for question in ("first question", "second question"):
        client.beta.threads.messages.create(thread.id, role="user", content=question)
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant_ids[0], poll_interval_ms=20
        )
        assert run.status == "completed", run.last_error
        runs.append(run)

    for run, answer in zip(runs, ("first answer", "second answer"), strict=True):
        written = client.beta.threads.messages.list(thread.id, run_id=run.id).data
        assert [(m.role, m.run_id) for m in written] == [("assistant", run.id)]
        assert written[0].content[0].text.value == answer  # type: ignore[union-attr]

    everything = client.beta.threads.messages.list(thread.id, order="asc").data
    assert [m.role for m in everything] == ["user", "assistant", "user", "assistant"]
    assert [m.run_id for m in everything] == [None, runs[0].id, None, runs[1].id]

    listed = [r.id for r in client.beta.threads.runs.list(thread.id, limit=1, order="asc")]
    assert listed == [r.id for r in runs]
    newest = client.beta.threads.runs.list(thread.id, limit=1)
    assert [r.id for r in newest.data] == [runs[1].id] and newest.has_more is True


# --------------------------------------------------------------------------- files

PURPOSES = ("assistants", "user_data", "batch")


@pytest.fixture(scope="module")
def file_ids(server: ServerProcess) -> list[tuple[str, str]]:
    """25 uploaded files with mixed purposes: (id, purpose) in upload order."""
    uploaded = []
    with server.client() as sdk:
        for i in range(COUNT):
            purpose = PURPOSES[i % len(PURPOSES)]
            content = f"file {i}\n".encode()
            name = f"f{i:02d}.jsonl" if purpose == "batch" else f"f{i:02d}.txt"
            file = sdk.files.create(file=(name, content), purpose=purpose)  # type: ignore[arg-type]
            uploaded.append((file.id, purpose))
    return uploaded


def test_files_default_limit_returns_all(
    http: httpx2.Client, client: openai.OpenAI, file_ids: list[tuple[str, str]]
) -> None:
    """The files list defaults to limit 10000: one request returns all 25, newest first."""
    ids = [file_id for file_id, _ in file_ids]
    body = _page(http, "/files")
    assert _ids(body) == ids[::-1]
    assert (body["first_id"], body["last_id"], body["has_more"]) == (ids[-1], ids[0], False)
    page = client.files.list()
    assert [f.id for f in page.data] == ids[::-1] and page.has_more is False


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_files_auto_pagination(
    client: openai.OpenAI, file_ids: list[tuple[str, str]], order: str
) -> None:
    """Iterating a limit=10 files list yields all 25 files once, in the order asked for."""
    ids = [file_id for file_id, _ in file_ids]
    first = client.files.list(limit=10, order=order)  # type: ignore[arg-type]
    assert [len(page.data) for page in first.iter_pages()] == [10, 10, 5]
    seen = [f.id for f in client.files.list(limit=10, order=order)]  # type: ignore[arg-type]
    assert seen == (ids if order == "asc" else ids[::-1])


@pytest.mark.parametrize("purpose", PURPOSES)
def test_files_purpose_filter(
    client: openai.OpenAI, http: httpx2.Client, file_ids: list[tuple[str, str]], purpose: str
) -> None:
    """``purpose`` lists only that purpose's files, also across pages."""
    expected = [file_id for file_id, p in file_ids if p == purpose]
    page = client.files.list(purpose=purpose)
    assert [f.id for f in page.data] == expected[::-1]
    assert {f.purpose for f in page.data} == {purpose}
    paged = [f.id for f in client.files.list(purpose=purpose, limit=3, order="asc")]
    assert paged == expected
    body = _page(http, "/files", purpose=purpose, limit=3, order="asc")
    assert _ids(body) == expected[:3] and body["has_more"] is True


def test_files_purpose_filter_without_matches_is_empty(
    http: httpx2.Client, file_ids: list[tuple[str, str]]
) -> None:
    """A purpose no file has gives an empty list, not an error."""
    body = _page(http, "/files", purpose="vision")
    assert body["data"] == []
    assert (body["first_id"], body["last_id"], body["has_more"]) == (None, None, False)

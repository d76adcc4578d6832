"""The server's own trace store and its viewer, /ui: every trace kept in the database for its
project's keys, read back as pages over real HTTP. The run is made with the official `openai`
SDK against a server in a subprocess; the pages are read with `httpx2` (tests/ui drives them in
Chromium)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import httpx2
import pytest

from tests.contract.helpers import server_env
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream, Text, python_call

pytestmark = pytest.mark.root

KEYS = "sk-alpha-key-0001:proj_alpha,sk-beta-key-0002:proj_beta"
ALPHA, BETA = "sk-alpha-key-0001", "sk-beta-key-0002"
TYPO = "numbers = [5, 6]\nprint(sum(numbrs))"
FIXED = "print(sum(numbers))"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces")


@pytest.fixture(scope="module")
def server(upstream: ScriptedUpstream, data_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(server_env(upstream, api_keys=KEYS), data_dir=data_dir) as process:
        yield process


def viewer(server: ServerProcess, key: str | None = ALPHA) -> httpx2.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx2.Client(base_url=server.url, headers=headers, timeout=30)


def text_of(html: str) -> str:
    """The page's text, roughly as a reader sees it (tags dropped, entities decoded)."""
    return unescape(re.sub(r"<[^>]+>", "", html))


def wait_for_trace(client: httpx2.Client, item_id: str, timeout: float = 10.0) -> str:
    """The id of the stored trace of `item_id`, once the store has it."""
    deadline = time.monotonic() + timeout
    while True:
        page = client.get("/ui", params={"item_id": item_id})
        assert page.status_code == 200, page.text
        found = re.findall(r'data-trace="([0-9a-f]{16})"', page.text)
        if found:
            assert len(found) == 1, found
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no trace of {item_id} stored within {timeout} s")
        time.sleep(0.1)


def run_with_a_fix(server: ServerProcess, upstream: ScriptedUpstream, key: str) -> tuple[str, str]:
    """A run whose code fails once and is fixed; (run id, thread id)."""
    upstream.reset(
        [
            python_call(TYPO, id="call_typo"),
            python_call(FIXED, id="call_fixed"),
            Text("The sum is 11.", usage=(40, 7)),
        ]
    )
    with server.client(api_key=key) as client:
        assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "5 + 6?"}])
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
    assert run.status == "completed", run.last_error
    return run.id, thread.id


def test_a_run_that_fails_then_fixes_its_code_in_the_viewer(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    """One stored trace: the prompt, three model turns, two executions with the code, the
    traceback and the fixed output, the tokens and the session's price, and a waterfall."""
    run_id, thread_id = run_with_a_fix(server, upstream, ALPHA)
    with viewer(server) as client:
        trace_id = wait_for_trace(client, run_id)
        listed = client.get("/ui", params={"thread_id": thread_id})
        page = client.get(f"/ui/traces/{trace_id}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy  # no script may run
    assert run_id in listed.text and trace_id in listed.text
    shown = text_of(page.text)
    assert "5 + 6?" in shown  # the prompt
    assert shown.count("Model turn") == 3 and shown.count("Execution ") == 2
    assert TYPO.replace("\n", "") in shown.replace("\n", "")  # the code, highlighted
    assert "NameError: name 'numbrs' is not defined" in shown  # the traceback
    assert "Traceback" in shown and "11\n" in shown  # the fixed output
    assert "$0.0300" in shown  # the session's price
    assert "invoke_agent codeinterp" in shown and "execute_tool python" in shown  # waterfall
    turns = re.findall(r"(\d+) in / (\d+) out", shown)
    assert ("40", "7") in turns
    # the code comes first, its output beside it: one grid per execution
    first = page.text.index('class="code-side"')
    assert first < page.text.index("NameError") < page.text.index('class="code-side"', first + 1)


def test_traces_are_seen_only_by_their_project(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    run_id, _ = run_with_a_fix(server, upstream, ALPHA)
    with viewer(server) as alpha:
        trace_id = wait_for_trace(alpha, run_id)
    with viewer(server, BETA) as beta:
        assert run_id not in beta.get("/ui").text
        assert beta.get("/ui", params={"item_id": run_id}).text.count("data-trace=") == 0
        assert beta.get(f"/ui/traces/{trace_id}").status_code == 404
    with viewer(server, key=None) as anonymous:
        page = anonymous.get(f"/ui/traces/{trace_id}")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/ui/login?next=")
    with viewer(server, "sk-not-a-key") as stranger:
        assert stranger.get("/ui").status_code == 303


def test_login_sets_a_cookie_that_holds_no_key(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    run_id, _ = run_with_a_fix(server, upstream, ALPHA)
    with viewer(server, key=None) as browser:
        wrong = browser.post("/ui/login", data={"key": "sk-wrong-0000", "next": "/ui"})
        assert wrong.status_code == 401
        assert "Incorrect API key" in text_of(wrong.text)
        assert "codeinterp_ui" not in browser.cookies
        answer = browser.post("/ui/login", data={"key": ALPHA, "next": "https://evil.example/"})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Path=/ui" in cookie and "SameSite=lax" in cookie
        assert ALPHA not in cookie and ALPHA[-6:] not in cookie
        trace_id = wait_for_trace(browser, run_id)
        assert browser.get(f"/ui/traces/{trace_id}").status_code == 200
        browser.post("/ui/logout")
        assert browser.get("/ui").status_code == 303


def test_traces_survive_a_restart_and_go_past_the_retention(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    env = server_env(upstream, api_keys=KEYS)
    with ServerProcess(env, data_dir=tmp_path) as process:
        run_id, _ = run_with_a_fix(process, upstream, ALPHA)
        with viewer(process) as client:
            trace_id = wait_for_trace(client, run_id)
    with ServerProcess(env, data_dir=tmp_path) as process, viewer(process) as client:
        assert client.get(f"/ui/traces/{trace_id}").status_code == 200
    time.sleep(1.1)
    short = {**env, "CODEINTERP_TRACE_RETENTION_HOURS": "0.0002"}  # 0.72 s
    with ServerProcess(short, data_dir=tmp_path) as process, viewer(process) as client:
        deadline = time.monotonic() + 10
        while client.get(f"/ui/traces/{trace_id}").status_code != 404:
            assert time.monotonic() < deadline, "the trace outlived its retention"
            time.sleep(0.1)


def test_no_trace_store_no_traces(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    env = server_env(upstream, trace_store="false")
    with ServerProcess(env, data_dir=tmp_path) as process, viewer(process, None) as client:
        page = client.get("/ui")
        assert page.status_code == 503
        assert "CODEINTERP_TRACE_STORE" in text_of(page.text)


def test_responses_chat_completions_and_executions_are_listed_by_kind_and_container(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    with server.client(api_key=ALPHA) as client:
        upstream.reset([python_call("print(6 * 7)"), Text("42")])
        response = client.responses.create(
            model="m",
            input="6*7?",
            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        )
        upstream.reset([python_call("print(2 ** 10)"), Text("1024")])
        chat = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "2**10?"}],
            tools=[{"type": "code_interpreter"}],
        )
        box = client.containers.create(name="traced")
    assert response.status == "completed", response.error
    with viewer(server) as http:
        executed = http.post(f"/v1/containers/{box.id}/execute", json={"code": "1 / 0"})
        assert executed.json()["status"] == "error"
        assert wait_for_trace(http, response.id) and wait_for_trace(http, chat.id)
        execute_id = wait_for_trace(http, box.id)
        kinds = {
            kind: re.findall(
                r'data-trace="([0-9a-f]{16})"', http.get("/ui", params={"kind": kind}).text
            )
            for kind in ("response", "chat", "execute")
        }
        assert execute_id in kinds["execute"] and len(kinds["response"]) >= 1
        in_box = http.get("/ui", params={"container_id": box.id, "status": "error"}).text
        assert re.findall(r'data-trace="([0-9a-f]{16})"', in_box) == [execute_id]
        page = text_of(http.get(f"/ui/traces/{execute_id}").text)
    assert "1 / 0" in page and "ZeroDivisionError: division by zero" in page
    assert "Execution " in page and "Model turn" not in page


HOSTILE = "</pre><script>alert(1)</script><img src=x onerror=alert(2)>"


def test_what_the_code_printed_is_shown_as_text_and_its_images_to_its_project_only(
    server: ServerProcess,
) -> None:
    """Output a program chose is escaped, never markup; a figure it drew is served to the
    trace's project alone, as an image, a page it wrote only as a download, and looking at
    them does not count as using the container."""
    with viewer(server) as alpha:
        box = alpha.post("/v1/containers", json={"name": "hostile"}).json()["id"]
        code = (
            f"print({HOSTILE!r})\nopen('/mnt/data/page.html', 'w').write({HOSTILE!r})\n"
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
        )
        done = alpha.post(f"/v1/containers/{box}/execute", json={"code": code}).json()
        assert done["status"] == "ok", done
        trace_id = wait_for_trace(alpha, box)
        page = alpha.get(f"/ui/traces/{trace_id}").text
        assert "<script>" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        (link,) = re.findall(r'<a href="([^"]+)">/mnt/data/page.html</a>', page)
        download = alpha.get(link)
        assert download.status_code == 200 and download.text == HOSTILE
        assert download.headers["content-type"] == "application/octet-stream"
        assert download.headers["content-disposition"].startswith("attachment;")
        (image,) = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)

        def last_active() -> int:  # the list shows it without touching the container
            (entry,) = alpha.get("/v1/containers", params={"name": "hostile"}).json()["data"]
            return int(entry["last_active_at"])

        before = last_active()
        time.sleep(1.1)  # last_active_at is kept to the second
        shown = alpha.get(image)
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
        assert shown.content.startswith(b"\x89PNG")
        assert shown.headers["x-content-type-options"] == "nosniff"
        # the container was looked at, not used
        assert last_active() == before
    with viewer(server, BETA) as beta:
        assert beta.get(image).status_code == 404
    with viewer(server, key=None) as anonymous:
        assert anonymous.get(image).status_code == 401

"""The trace viewer (/ui) in a real headless Chromium, as a person uses it: log in with an API
key, find the failed run at the top of the list, open it, and see its code beside its
traceback; a figure the code drew shows as an image. Screenshots are kept in artifacts/ui/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.contract.helpers import server_env
from tests.support.browser import artifacts_dir, chromium
from tests.support.server import ServerProcess
from tests.support.upstream import Fail, ScriptedUpstream, Text, python_call

pytestmark = [pytest.mark.root, pytest.mark.slow]

KEY = "sk-viewer-test-0001"
PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.show()"
TYPO = "rows = [3, 4]\ntotal = sum(rowz)"


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = server_env(upstream, api_keys=f"{KEY}:proj_viewer")
    with ServerProcess(env, data_dir=tmp_path_factory.mktemp("viewer")) as process:
        yield process


def make_runs(server: ServerProcess, upstream: ScriptedUpstream) -> tuple[str, str]:
    """A run that draws a figure, then one whose code fails and whose model then fails too."""
    with server.client(api_key=KEY) as client:
        assistant = client.beta.assistants.create(model="m", tools=[{"type": "code_interpreter"}])
        upstream.reset([python_call(PLOT), Text("Here is the plot.")])
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "Plot squares"}])
        drawn = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        assert drawn.status == "completed", drawn.last_error
        upstream.reset([python_call(TYPO), Fail(400, "The model refused to go on.")])
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "Sum rows"}])
        failed = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        assert failed.status == "failed"
    return drawn.id, failed.id


def test_find_a_failed_run_and_see_its_code_beside_its_traceback(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    drawn_id, failed_id = make_runs(server, upstream)
    shots = artifacts_dir()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server.url}/ui")
        expect(page).to_have_url(f"{server.url}/ui/login?next=%2Fui")
        page.fill("input[name=key]", "sk-wrong-key-9999")
        page.click("button[type=submit]")
        expect(page.get_by_role("alert")).to_contain_text("Incorrect API key")
        page.fill("input[name=key]", KEY)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{server.url}/ui")

        first = _wait_for_rows(page, server, 2).first  # failures come first
        expect(first).to_have_class("failed")
        expect(first).to_contain_text(failed_id)
        page.screenshot(path=shots / "list.png", full_page=True)

        first.get_by_role("link", name=failed_id).click()
        expect(page.locator("h1")).to_contain_text("failed")
        execution = page.locator("section.execution").first
        code = execution.locator(".code-side")
        output = execution.locator(".output-side")
        expect(code).to_contain_text("sum(rowz)")
        expect(output.locator(".traceback")).to_contain_text(
            "NameError: name 'rowz' is not defined"
        )
        _assert_side_by_side(code.bounding_box(), output.bounding_box())
        expect(page.get_by_role("alert")).to_contain_text("refused")
        page.screenshot(path=shots / "failed-run.png", full_page=True)

        page.goto(f"{server.url}/ui?item_id={drawn_id}")
        page.get_by_role("link", name=drawn_id).click()
        image = page.locator("section.execution .images img").first
        expect(image).to_be_visible()
        assert image.evaluate("img => img.complete && img.naturalWidth") > 100
        page.screenshot(path=shots / "figure-run.png", full_page=True)
    assert (shots / "failed-run.png").stat().st_size > 10_000


def _wait_for_rows(page: Page, server: ServerProcess, count: int):  # type: ignore[no-untyped-def]
    """The list's rows, once the store has the `count` traces (it writes every half second)."""
    rows = page.locator("table.traces tbody tr")
    for _ in range(50):
        if rows.count() >= count:
            return rows
        page.wait_for_timeout(200)
        page.reload()
    raise AssertionError(f"fewer than {count} traces listed")


def _assert_side_by_side(code: dict[str, float] | None, output: dict[str, float] | None) -> None:
    assert code is not None and output is not None
    assert code["x"] + code["width"] <= output["x"] + 1, (code, output)  # code on the left
    assert code["y"] < output["y"] + output["height"] and output["y"] < code["y"] + code["height"]

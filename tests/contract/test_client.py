"""codeinterp.Client and AsyncClient against the server: containers, runs with streaming
callbacks, files in and out, interrupt, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from codeinterp import APIError, AsyncClient, Client
from tests.support.server import ServerProcess


def test_run_returns_the_value_and_keeps_state(server: ServerProcess) -> None:
    with Client(server.base_url) as client, client.container(memory="1g") as box:
        assert box.info["memory_limit"] == "1g"
        first = box.run("x = 20\nx + 1")
        assert (first.status, first.text, first.ok) == ("ok", "21", True)
        second = box.run("x * 2")
        assert second.text == "40"
        assert second.execution_count == first.execution_count + 1  # type: ignore[operator]


def test_the_container_is_deleted_when_the_block_ends(server: ServerProcess) -> None:
    with Client(server.base_url) as client:
        with client.container() as box:
            box_id = box.id
        with pytest.raises(APIError) as raised:
            client.attach(box_id)
        assert raised.value.status == 404


def test_callbacks_get_output_as_the_code_produces_it(server: ServerProcess) -> None:
    """on_stdout is called with the first line while the code is still sleeping."""
    seen: list[tuple[str, float]] = []
    results: list[dict[str, object]] = []
    code = "import time\nprint('early', flush=True)\ntime.sleep(1.0)\nprint('late')\n'done'"
    with Client(server.base_url) as client, client.container() as box:
        started = time.monotonic()
        result = box.run(
            code,
            on_stdout=lambda text: seen.append((text, time.monotonic() - started)),
            on_result=results.append,
        )
    assert [text for text, _ in seen] == ["early\n", "late\n"]
    assert seen[0][1] < 0.8 < seen[1][1]
    assert results[0]["data"] == {"text/plain": "'done'"}
    assert (result.status, result.text, result.stdout) == ("ok", "'done'", "early\nlate\n")


def test_errors_reach_on_error_and_the_result(server: ServerProcess) -> None:
    errors: list[dict[str, str]] = []
    with Client(server.base_url) as client, client.container() as box:
        result = box.run("{}['missing']", on_error=errors.append)
    assert result.status == "error"
    assert result.error is not None and result.error["name"] == "KeyError"
    assert errors == [result.error]


def test_upload_download_and_files(server: ServerProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "prices.csv"
    local.write_text("p\n3\n4\n")
    with Client(server.base_url) as client, client.container() as box:
        uploaded = box.upload(local)
        assert uploaded["path"] == "/mnt/data/prices.csv"
        assert box.upload(b"raw bytes", "notes/raw.bin")["path"] == "/mnt/data/notes/raw.bin"
        made = box.run(
            "import pandas as pd\n"
            "pd.read_csv('/mnt/data/prices.csv').p.mul(2).to_csv('/mnt/data/doubled.csv')"
        )
        assert made.ok, made.error
        assert [f["name"] for f in made.files] == ["doubled.csv"]
        assert box.download("doubled.csv").decode().splitlines() == [",p", "0,6", "1,8"]
        assert box.download("/mnt/data/notes/raw.bin") == b"raw bytes"
        by_path = {f["path"]: f["source"] for f in box.files()}
        assert by_path == {
            "/mnt/data/prices.csv": "user",
            "/mnt/data/notes/raw.bin": "user",
            "/mnt/data/doubled.csv": "assistant",
        }
        with pytest.raises(APIError) as missing:
            box.download("nope.txt")
        assert missing.value.status == 404


def test_interrupt_stops_a_running_execution(server: ServerProcess) -> None:
    with Client(server.base_url) as client, client.container() as box:
        outcome: list[str] = []
        runner = threading.Thread(
            target=lambda: outcome.append(box.run("import time\ntime.sleep(30)").status)
        )
        runner.start()
        deadline = time.monotonic() + 10
        while not box.interrupt():  # true once the code is running
            assert time.monotonic() < deadline
            time.sleep(0.05)
        runner.join(timeout=10)
        assert outcome == ["interrupted"]
        assert box.run("1").text == "1"  # the container works on


def test_server_errors_raise_api_error_with_status_and_code(server: ServerProcess) -> None:
    with Client(server.base_url) as client:
        with pytest.raises(APIError) as bad_tier:
            client.container(memory="3g")
        assert bad_tier.value.status == 400
        with pytest.raises(APIError) as unknown:
            client.attach("cntr_doesnotexist")
        assert unknown.value.status == 404
        assert "cntr_doesnotexist" in unknown.value.message


def test_async_client_mirrors_the_sync_one(server: ServerProcess) -> None:
    async def scenario() -> tuple[str | None, list[str], bytes]:
        printed: list[str] = []
        async with AsyncClient(server.base_url) as client:
            async with client.container() as box:
                await box.upload(b"1,2,3", "n.txt")
                value = await box.run(
                    "print(open('/mnt/data/n.txt').read())\nsum([1, 2, 3])",
                    on_stdout=printed.append,
                )
                await box.run("open('/mnt/data/out.txt', 'w').write('six')")
                data = await box.download("out.txt")
            plain = await client.container()
            try:
                assert (await plain.run("2 ** 10")).text == "1024"
            finally:
                await plain.delete()
        return value.text, printed, data

    text, printed, data = asyncio.run(scenario())
    assert (text, printed, data) == ("6", ["1,2,3\n"], b"six")

"""The throughput door end to end: `POST /v1/executions` and `/v1/executions/batch`.

One-shot tasks through a real server: the official ``openai`` SDK's generic ``client.post`` for
single tasks (as a user of the SDK would call an extension), ``httpx2`` for the NDJSON batch
stream (read line by line as it arrives) and for the error envelopes. The isolation test runs
hostile tasks side by side and one after another, and checks from inside each that nothing of
the others shows: files, variables, processes, shared memory, user.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.contract.helpers import assert_envelope, assert_sdk_error, raw_client, server_env
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("executions")
    env = server_env(upstream, pool_size=2, task_concurrency=4, sse_heartbeat_seconds=0.3)
    with ServerProcess(env, data_dir=data_dir) as process:
        yield process


def run(client: openai.OpenAI, **body: Any) -> dict[str, Any]:
    result = client.post("/executions", body=body, cast_to=object)
    assert isinstance(result, dict), result
    return result


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def batch_lines(server: ServerProcess, body: dict[str, Any]) -> Iterator[tuple[float, Any]]:
    """(arrival time, parsed line) for every line of a batch's stream; empty lines too (None)."""
    with raw_client(server) as http, http.stream("POST", "/executions/batch", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        for line in resp.iter_lines():
            yield time.monotonic(), (json.loads(line) if line.strip() else None)


def test_a_task_gets_its_files_and_stdin_and_returns_what_it_wrote(client: openai.OpenAI) -> None:
    body = run(
        client,
        code=(
            "import os, sys\n"
            "text = sys.stdin.read()\n"
            "print(text.upper(), end='')\n"
            "os.makedirs('out', exist_ok=True)\n"
            "open('out/result.txt', 'w').write(open('in.csv').read() * 2)\n"
            "6 * 7"
        ),
        stdin="hello\nworld\n",
        files={"in.csv": b64(b"a,b\n")},
        expected_output="HELLO\nWORLD",
        return_files=True,
    )
    assert body["object"] == "execution" and body["id"].startswith("exec_")
    assert isinstance(body["created_at"], int)
    assert body["status"] == "ok", body
    assert body["stdout"] == "HELLO\nWORLD\n"
    assert body["passed"] is True  # "lines": the trailing newline does not matter
    assert body["results"][0]["data"]["text/plain"] == "42"
    files = {f["name"]: f for f in body["files"]}
    assert set(files) == {"out/result.txt"}  # in.csv was there before the code ran
    assert base64.b64decode(files["out/result.txt"]["content"]) == b"a,b\na,b\n"


def test_stdin_reaches_input_and_binary_readers(client: openai.OpenAI) -> None:
    body = run(client, code="print(input(), input())", stdin="first\nsecond é\n")
    assert body["stdout"] == "first second é\n", body
    body = run(client, code="print(__import__('sys').stdin.buffer.read())", stdin="é\n")
    assert body["stdout"] == "b'\\xc3\\xa9\\n'\n", body
    # descriptor 0 itself: a child process reads the same input
    body = run(client, code="import subprocess; subprocess.run(['wc', '-c'])", stdin="12345")
    assert body["stdout"].strip() == "5", body
    # without stdin the code reads end of file at once, as before
    body = run(client, code="print(repr(__import__('sys').stdin.read()))")
    assert body["stdout"] == "''\n"


def test_expected_output_comparisons(client: openai.OpenAI) -> None:
    assert run(client, code="print(' 1 2  ')", expected_output="1 2")["passed"] is False
    assert run(client, code="print(' 1 2  ')", expected_output=" 1 2")["passed"] is True
    exact = run(client, code="print(3)", expected_output="3", output_match="exact")
    assert exact["passed"] is False  # "exact" counts the newline
    failed = run(client, code="print(3); 1/0", expected_output="3")
    assert failed["status"] == "error" and failed["passed"] is False
    assert failed["error"]["name"] == "ZeroDivisionError"
    assert run(client, code="1")["passed"] is None  # nothing expected


def test_images_stay_inline(client: openai.OpenAI) -> None:
    body = run(client, code="import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
    images = [r for r in body["results"] if "image/png" in r["data"]]
    assert len(images) == 1 and "file_id" not in images[0]
    assert base64.b64decode(images[0]["data"]["image/png"]).startswith(b"\x89PNG")


def test_uploaded_files_by_id(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("numbers.txt", b"1\n2\n3\n"), purpose="assistants")
    body = run(
        client,
        code="print(sum(int(x) for x in open('/mnt/data/numbers.txt')))",
        file_ids=[uploaded.id],
        expected_output="6",
    )
    assert body["passed"] is True, body


def test_a_timeout_is_the_tasks_status_not_an_error(client: openai.OpenAI) -> None:
    started = time.monotonic()
    body = run(client, code="import time; time.sleep(30)", timeout=0.5)
    assert body["status"] == "timeout", body
    assert time.monotonic() - started < 10


def test_bad_input_is_refused_with_the_envelope(server: ServerProcess) -> None:
    with raw_client(server) as http:
        for body, param in (
            ({"code": "1", "files": {"x": "!!not base64"}}, "files.x"),
            ({"code": "1", "files": {"../escape": b64(b"x")}}, Any),
            ({"code": "1", "output_match": "fuzzy"}, "output_match"),
            ({"code": "1", "timeout": -1}, "timeout"),
            ({"code": 5}, "code"),
            ({}, "code"),
        ):
            assert_envelope(http.post("/executions", json=body), 400, param=param)
        error = assert_envelope(
            http.post("/executions", json={"code": "1", "file_ids": ["file-missing"]}), 404
        )
        assert "file-missing" in error["message"]
        assert_envelope(http.post("/executions/batch", json={"tasks": []}), 400, param="tasks")


def test_sdk_sees_a_clear_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        run(client, code="1", files={"a": "@@@"})
    assert_sdk_error(caught.value, 400, param="files.a")


def test_batch_streams_results_as_they_finish(server: ServerProcess) -> None:
    tasks = [
        {"code": "import time; time.sleep(1.5); print('slow')", "expected_output": "slow"},
        *({"code": f"print({i} * {i})", "expected_output": str(i * i)} for i in range(1, 8)),
        {"code": "1", "file_ids": ["file-missing"]},
    ]
    started = time.monotonic()
    lines = list(batch_lines(server, {"tasks": tasks, "concurrency": 2}))
    results = [(at, line) for at, line in lines if line is not None]
    assert sorted(line["index"] for _, line in results) == list(range(len(tasks)))
    by_index = {line["index"]: (at, line) for at, line in results}
    # the slow task did not hold back the others: they came while it slept
    slow_at = by_index[0][0]
    assert all(by_index[i][0] < slow_at for i in range(1, 8)), [line for _, line in results]
    assert slow_at - started >= 1.5
    assert all(by_index[i][1]["passed"] is True for i in range(8))
    error = by_index[8][1]["error"]
    assert set(error) >= {"message", "type", "param", "code"} and "file-missing" in error["message"]
    # the stream said it was alive while the slow task was the only one left (heartbeat 0.3 s)
    assert any(line is None for _, line in lines)


def test_tasks_cannot_see_each_other(client: openai.OpenAI, server: ServerProcess) -> None:
    """A task leaves files (workspace, /tmp, /dev/shm, home), a variable, a process and a SysV
    shared memory segment behind while it sleeps; tasks next to it and after it look for each."""
    leave_traces = (
        "import os, subprocess, ctypes, time\n"
        "SECRET_VARIABLE = 'pssst'\n"
        "for path in ('/mnt/data/secret.txt', '/tmp/secret.txt', '/dev/shm/secret',\n"
        "             os.path.expanduser('~/secret.txt')):\n"
        "    open(path, 'w').write('pssst')\n"
        "subprocess.Popen(['sleep', '417'])\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.shmget(0x5EC2E7, 4096, 0o1666) >= 0\n"
        "print(os.getuid())\n"
        "time.sleep(3)\n"
    )
    look = (
        "import os, ctypes, json\n"
        "def listing(path):\n"
        "    return sorted(os.listdir(path)) if os.path.isdir(path) else []\n"
        "def cmdlines():\n"
        "    found = []\n"
        "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "        try:\n"
        "            found.append(open(f'/proc/{pid}/cmdline', 'rb').read().decode())\n"
        "        except (OSError, UnicodeDecodeError):\n"
        "            pass\n"
        "    return found\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(json.dumps({\n"
        "    'files': listing('/mnt/data') + listing('/tmp') + listing('/dev/shm')\n"
        "             + listing(os.path.expanduser('~')),\n"
        "    'variable': 'SECRET_VARIABLE' in globals(),\n"
        # the argv of the leaver's `sleep 417`: '417' alone also matches the task's own pid 1,
        # whose cmdline is the zygote's (the server's pid, the sandbox's instance id)
        "    'process': any(c.split(chr(0))[:2] == ['sleep', '417'] for c in cmdlines()),\n"
        "    'shm': libc.shmget(0x5EC2E7, 0, 0) >= 0,\n"
        "    'uid': os.getuid(),\n"
        "}))\n"
    )
    owner: dict[str, Any] = {}
    leaver = threading.Thread(target=lambda: owner.update(run(client, code=leave_traces)))
    leaver.start()
    time.sleep(1.0)  # the leaver's traces are in place (it sleeps 3 s)
    beside = [run(client, code=look) for _ in range(3)]
    leaver.join()
    after = [run(client, code=look) for _ in range(3)]
    assert owner["status"] == "ok", owner
    leaver_uid = int(owner["stdout"])
    for body in beside + after:
        assert body["status"] == "ok", body
        seen = json.loads(body["stdout"])
        assert not any("secret" in name for name in seen["files"]), seen
        assert seen["variable"] is False and seen["process"] is False and seen["shm"] is False
        assert seen["uid"] != leaver_uid, seen


def test_a_full_server_answers_503_with_retry_after(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    env = server_env(upstream, pool_size=1, task_concurrency=1, queue_wait_seconds=0.5)
    with ServerProcess(env, data_dir=tmp_path) as server, raw_client(server) as http:

        def sleeper() -> None:
            with raw_client(server) as own:
                own.post("/executions", json={"code": "import time; time.sleep(3)"})

        busy = threading.Thread(target=sleeper)
        busy.start()
        time.sleep(0.8)  # the sleeper holds the only slot
        started = time.monotonic()
        refused = http.post("/executions", json={"code": "1"})
        waited = time.monotonic() - started
        error = assert_envelope(refused, 503, type_="server_error")
        assert error["code"] == "server_overloaded" and "capacity" in error["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert int(refused.headers["retry-after-ms"]) >= 1
        assert 0.4 <= waited < 3, waited  # it waited its turn for queue_wait_seconds, no more
        busy.join()
        # and once the slot is free, the next task runs
        assert http.post("/executions", json={"code": "1"}).json()["status"] == "ok"


async def test_the_python_client_runs_tasks_and_batches(server: ServerProcess) -> None:
    from codeinterp import AsyncClient, Client

    with Client(server.url) as client:
        single = client.run_task("print(input())", stdin="hi", expected_output="hi")
        assert single["passed"] is True
    async with AsyncClient(server.url) as aclient:
        made = await aclient.run_task(
            {"code": "open('b.bin', 'wb').write(b'\\x00\\xff')"},
            return_files=True,
            files={"a.bin": b"\x01"},
        )
        assert base64.b64decode(made["files"][0]["content"]) == b"\x00\xff"
        seen = [r async for r in aclient.map(["1/0", {"code": "print(1)"}], concurrency=2)]
    assert sorted(r["index"] for r in seen) == [0, 1]
    statuses = {r["index"]: r["status"] for r in seen}
    assert statuses == {0: "error", 1: "ok"}


def test_a_client_leaving_a_batch_stops_its_tasks(server: ServerProcess) -> None:
    """Four sleepers hold all four task slots; the client reads one line and leaves. Their
    sessions are closed, so the next task gets a slot at once instead of queueing."""
    tasks = [{"code": "print('quick')"}] + [{"code": "import time; time.sleep(60)"}] * 4
    with raw_client(server) as http:
        body = {"tasks": tasks, "concurrency": 4}
        with http.stream("POST", "/executions/batch", json=body) as response:
            for line in response.iter_lines():
                if line.strip():
                    assert json.loads(line)["stdout"] == "quick\n"
                    break
        time.sleep(0.5)  # the sleepers are running; the stream is closed
        started = time.monotonic()
        after = http.post("/executions", json={"code": "print('next')"}, timeout=30)
        assert after.status_code == 200 and after.json()["stdout"] == "next\n", after.text
        assert time.monotonic() - started < 10

"""The `codeinterp` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

pytestmark = pytest.mark.root

CLI = [sys.executable, "-m", "codeinterp.cli.main"]


def run_cli(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120
    )


def test_exec_prints_output_and_saves_images_and_files(tmp_path: Path) -> None:
    """Output and the value are printed; the figure and the written file land in --out."""
    data = tmp_path / "numbers.csv"
    data.write_text("n\n1\n2\n3\n")
    code = (
        "import pandas as pd, matplotlib.pyplot as plt\n"
        "df = pd.read_csv('/mnt/data/numbers.csv')\n"
        "print('sum', df.n.sum())\n"
        "df.plot()\n"
        "df.assign(sq=df.n ** 2).to_csv('/mnt/data/squares.csv', index=False)\n"
        "int(df.n.max())"
    )
    done = run_cli("exec", code, "--upload", str(data), "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "sum 6"
    assert "3" in lines
    assert "[image] out/image-1.png" in lines
    assert "[file] out/squares.csv" in lines
    assert (tmp_path / "out/image-1.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "out/squares.csv").read_text().splitlines()[-1] == "3,9"


def test_exec_json_has_the_shared_shape(tmp_path: Path) -> None:
    """--json prints one object with status, streams, results, error, files, count, duration."""
    script = tmp_path / "job.py"
    script.write_text(
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\n"
        "open('/mnt/data/r.txt', 'w').write('12345')\n6 * 7\n"
    )
    done = run_cli("exec", "-f", str(script), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["status"] == "ok"
    assert document["stdout"] == "out\n" and document["stderr"] == "err\n"
    assert document["results"][0]["data"]["text/plain"] == "42"
    assert document["error"] is None
    assert document["files"] == [
        {"path": "/mnt/data/r.txt", "name": "r.txt", "size": 5, "change": "created"}
    ]
    assert document["execution_count"] == 1
    assert document["duration_ms"] > 0


def test_exec_error_exits_non_zero_and_shows_the_traceback(tmp_path: Path) -> None:
    """A failing program exits 1 with the traceback on stderr; a timeout exits 124."""
    failed = run_cli("exec", "-", cwd=tmp_path, stdin="x = 1\nx / 0\n")
    assert failed.returncode == 1
    assert "ZeroDivisionError" in failed.stderr and "x / 0" in failed.stderr
    slow = run_cli("exec", "import time; time.sleep(20)", "--timeout", "0.5", cwd=tmp_path)
    assert slow.returncode == 124
    assert "time limit" in slow.stderr


def test_bad_usage_gives_one_line_and_exit_2(tmp_path: Path) -> None:
    """A missing file or a bad option value is one clear line on stderr and exit status 2."""
    missing = run_cli("exec", "-f", "nope.py", cwd=tmp_path)
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == "codeinterp: error: cannot read nope.py: No such file or directory"
    )
    both = run_cli("exec", "1", "-f", "x.py", cwd=tmp_path)
    assert both.returncode == 2 and both.stderr.count("\n") == 1
    bad_timeout = run_cli("exec", "1", "--timeout", "0", cwd=tmp_path)
    assert bad_timeout.returncode == 2 and "--timeout" in bad_timeout.stderr
    assert not os.path.exists(tmp_path / "outputs")


def test_doctor_lists_every_protection(tmp_path: Path) -> None:
    """doctor reports namespaces, cgroups and seccomp as available here and exits 0."""
    done = run_cli("doctor", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    for name in ("namespaces", "cgroups", "seccomp", "privileges"):
        assert any(line.startswith("ok") and name in line for line in done.stdout.splitlines())


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server for `exec --server` (no model needed); its URL."""
    from tests.support.server import ServerProcess

    with ServerProcess({}, data_dir=tmp_path_factory.mktemp("server")) as server:
        yield server.base_url.removesuffix("/v1")


def test_exec_on_a_server_prints_and_saves_like_a_local_run(tmp_path: Path, remote: str) -> None:
    """--server: the same output, images and files, from a container on the server."""
    data = tmp_path / "numbers.csv"
    data.write_text("n\n1\n2\n3\n")
    code = (
        "import pandas as pd\n"
        "df = pd.read_csv('/mnt/data/numbers.csv')\n"
        "print('sum', df.n.sum())\n"
        "df.plot()\n"
        "df.to_csv('/mnt/data/copy.csv', index=False)\n"
        "int(df.n.max())"
    )
    done = run_cli("exec", "--server", remote, code, "--upload", str(data), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "sum 6"
    assert "3" in lines
    assert "[image] outputs/image-1.png" in lines
    assert "[file] outputs/copy.csv" in lines
    assert (tmp_path / "outputs/image-1.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "outputs/copy.csv").read_text() == "n\n1\n2\n3\n"


def test_exec_on_a_server_keeps_exit_statuses_and_json(tmp_path: Path, remote: str) -> None:
    failed = run_cli("exec", "--server", remote, "--json", "1/0", cwd=tmp_path)
    assert failed.returncode == 1
    document = json.loads(failed.stdout)
    assert document["status"] == "error"
    assert document["error"]["name"] == "ZeroDivisionError"
    slow = run_cli(
        "exec", "--server", remote, "--timeout", "0.5", "import time; time.sleep(5)", cwd=tmp_path
    )
    assert slow.returncode == 124


def test_exec_on_an_unreachable_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run_cli("exec", "--server", "http://127.0.0.1:9", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("codeinterp: error: cannot reach http://127.0.0.1:9")
    assert len(done.stderr.strip().splitlines()) == 1


# Three names of one 300 MiB sparse file (no room in the workspace, 900 MiB to copy out), and a
# small file.
SPARSE_FILES = (
    "import os\n"
    "with open('/mnt/data/sparse.bin', 'wb') as f:\n"
    "    f.truncate(300 * 2**20)\n"
    "os.link('/mnt/data/sparse.bin', '/mnt/data/link-1.bin')\n"
    "os.link('/mnt/data/sparse.bin', '/mnt/data/link-2.bin')\n"
    "open('/mnt/data/small.txt', 'w').write('small')\n"
    "print('made')\n"
)
DEFAULT_OUT_BUDGET = 512 * 2**20  # --max-out-bytes: the bytes --out may take for one run


def _bytes_under(directory: Path) -> int:
    """Bytes written under `directory`, by apparent size and by blocks, whichever is more."""
    total = 0
    for path in directory.rglob("*") if directory.exists() else ():
        if path.is_file():
            st = path.stat()
            total += max(st.st_size, st.st_blocks * 512)
    return total


@pytest.mark.parametrize("where", ["local", "server"])
def test_exec_out_keeps_to_its_total_budget(tmp_path: Path, where: str, request: Any) -> None:
    """Files the code wrote are saved within a total budget counted by apparent size: 900 MiB
    of sparse files and hard links are refused in one line, exit 2, and --out gets none of it
    (the code's own output was shown as usual)."""
    args = ("--server", request.getfixturevalue("remote")) if where == "server" else ()
    done = run_cli("exec", *args, SPARSE_FILES, "--out", "out", cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout.splitlines()[0] == "made"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("codeinterp: error: "), done.stderr
    assert "--max-out-bytes" in lines[0] and str(DEFAULT_OUT_BUDGET) in lines[0], lines[0]
    assert _bytes_under(tmp_path / "out") <= DEFAULT_OUT_BUDGET


@pytest.mark.parametrize("where", ["local", "server"])
def test_exec_out_keeps_to_its_per_file_budget(tmp_path: Path, where: str, request: Any) -> None:
    """A file over --max-file-bytes (by apparent size) is refused by name; a budget that fits
    saves everything."""
    args = ("--server", request.getfixturevalue("remote")) if where == "server" else ()
    code = (
        "with open('/mnt/data/wide.bin', 'wb') as f:\n"
        "    f.truncate(3_000_000)\n"
        "open('/mnt/data/small.txt', 'w').write('small')\n"
    )
    refused = run_cli(
        "exec", *args, code, "--out", "out", "--max-file-bytes", "1000000", cwd=tmp_path
    )
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "wide.bin" in lines[0] and "--max-file-bytes" in lines[0], lines
    assert _bytes_under(tmp_path / "out") <= 1_000_000
    saved = run_cli("exec", *args, code, "--out", "ok", "--max-file-bytes", "3000000", cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "ok/wide.bin").stat().st_size == 3_000_000
    assert (tmp_path / "ok/small.txt").read_text() == "small"


BATCH = [
    {"code": "print(input()[::-1])", "stdin": "abc", "expected_output": "cba"},
    {"code": "import time; time.sleep(1); print('late')", "expected_output": "late"},
    {
        "code": "open('o.txt', 'w').write(open('i.txt').read() + '!')",
        "files": {"i.txt": "aGk="},
        "return_files": True,
    },
    {"code": "print(6 * 7)", "expected_output": "41"},
]


def batch_results(stdout: str) -> dict[int, dict[str, Any]]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    return {line["index"]: line for line in lines}


@pytest.mark.parametrize("where", ["local", "server"])
def test_exec_batch_runs_every_task_and_reports_each(
    tmp_path: Path, where: str, request: Any
) -> None:
    """--batch: one JSON line per task as it finishes (the slow one last), passed or not, files
    returned; exit 1 because one task failed its expected output."""
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(json.dumps(t) for t in BATCH) + "\n\n")
    server = ["--server", request.getfixturevalue("remote")] if where == "server" else []
    done = run_cli("exec", "--batch", str(tasks), "--concurrency", "2", *server, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    results = batch_results(done.stdout)
    assert sorted(results) == [0, 1, 2, 3]
    assert [json.loads(line)["index"] for line in done.stdout.splitlines()][-1] == 1
    assert results[0]["passed"] is True and results[1]["passed"] is True
    assert results[3]["status"] == "ok" and results[3]["passed"] is False
    (written,) = results[2]["files"]
    assert written["name"] == "o.txt" and written["content"] == "aGkh"  # "hi!"
    assert done.stderr.strip().splitlines()[-1] == "4 tasks: 4 ok, 1 failed the expected output"
    # all passing: exit 0
    tasks.write_text(json.dumps(BATCH[0]) + "\n")
    assert run_cli("exec", "--batch", str(tasks), *server, cwd=tmp_path).returncode == 0


def test_exec_batch_refuses_a_bad_line_before_running_anything(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"code": "open(\'/mnt/data/x\', \'w\')"}\n{"code": "1", "timeout": "soon"}\n')
    done = run_cli("exec", "--batch", str(tasks), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and f"{tasks}:2: timeout" in done.stderr
    done = run_cli("exec", "--batch", str(tasks), "print(1)", cwd=tmp_path)
    assert done.returncode == 2 and "--batch" in done.stderr
    tasks.write_text('{"code": "1", "file_ids": ["file-abc"]}\n')
    done = run_cli("exec", "--batch", str(tasks), cwd=tmp_path)
    assert done.returncode == 2 and "--server" in done.stderr


@pytest.mark.parametrize("where", ["local", "server"])
def test_exec_carries_state_from_one_run_to_the_next_through_a_snapshot(
    tmp_path: Path, where: str, request: Any
) -> None:
    """--snapshot-out saves the session after the run; --snapshot-in starts the next run from
    it: variables, files and the execution count come back (locally, or through a server,
    which keeps none of the snapshot files afterwards)."""
    args = ["--server", request.getfixturevalue("remote")] if where == "server" else []
    saved = tmp_path / "state.snapshot"
    code = (
        "answer = 41\n"
        "open('/mnt/data/kept.txt', 'w').write('kept')\n"
        "numbers = (n for n in range(3))"
    )
    first = run_cli("exec", *args, "--snapshot-out", str(saved), code, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert saved.stat().st_size > 0
    assert "[snapshot] numbers not saved" in first.stderr  # a generator: cannot be pickled
    second = run_cli(
        "exec", *args, "--snapshot-in", str(saved), "--json",
        "print(answer + 1, open('/mnt/data/kept.txt').read())",
        cwd=tmp_path,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    body = json.loads(second.stdout)
    assert body["stdout"] == "42 kept\n" and body["execution_count"] == 2, body
    if where == "server":
        files = httpx2.get(f"{args[1]}/v1/files", params={"purpose": "snapshot"}).json()
        assert files["data"] == [], files
    missing = run_cli("exec", *args, "--snapshot-in", str(tmp_path / "nope"), "1", cwd=tmp_path)
    assert missing.returncode == 2 and "no snapshot at" in missing.stderr

"""A new user's first minutes: the README's Quick start, verbatim, on a new clone, and the wheel
installed into an empty venv.

Each test builds a whole environment from the package index (a minute or two: under
``.ci/fresh-machine`` there is no pip cache), hence the ``install`` marker;
``pytest -m "not install"`` leaves them out of a quick local run. CI runs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, free_port

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.install]

CHECKOUT = Path(__file__).resolve().parents[2]
SETUP_TIMEOUT = 900.0  # a cold install of the sandbox's library set, with margin


def run(command: list[str], cwd: Path, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def git_files(*options: str) -> list[str]:
    listed = run(["git", "ls-files", "-z", *options], cwd=CHECKOUT)
    assert listed.returncode == 0, listed.stderr
    return [name for name in listed.stdout.split("\0") if name]


def clone_checkout(destination: Path) -> Path:
    """A new clone of this checkout's last commit, with the working tree's uncommitted edits laid
    on top (there are none in CI), so a local run tests what is on disk."""
    cloned = run(["git", "clone", "-q", "--no-local", str(CHECKOUT), str(destination)], CHECKOUT)
    assert cloned.returncode == 0, cloned.stderr
    for name in git_files("--modified", "--others", "--exclude-standard"):
        source, target = CHECKOUT / name, destination / name
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            target.unlink(missing_ok=True)
    return destination


def quickstart(clone: Path, which: str) -> str:
    """A command from the clone's README (scripts/quickstart reads it)."""
    printed = run([str(clone / "scripts/quickstart"), which], cwd=clone)
    assert printed.returncode == 0, printed.stderr
    return printed.stdout.strip()


def exec_json(codeinterp: Path, *args: str, cwd: Path) -> dict[str, object]:
    done = run([str(codeinterp), "exec", "--json", *args], cwd=cwd)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    document: dict[str, object] = json.loads(done.stdout)
    return document


def assert_group_gone(server: ServerProcess, timeout: float = 15.0) -> None:
    """Stopping the server's process group left nothing behind (no server, no sandbox)."""
    assert server.pid is not None
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "processes of the stopped server are still running"
        time.sleep(0.1)


def test_readme_quick_start_on_a_new_clone(tmp_path: Path) -> None:
    """The first command sets up and serves; the README's example and a remote exec both run."""
    clone = clone_checkout(tmp_path / "codeinterp")
    assert not (clone / ".venv").exists()
    data_dir = tmp_path / "data"
    port = free_port()
    # The command is the README's, word for word; only the port and data dir come from settings.
    env = {"CODEINTERP_PORT": str(port), "CODEINTERP_DATA_DIR": str(data_dir)}
    server = ServerProcess(
        env,
        data_dir=data_dir,
        port=port,
        command=["bash", "-c", quickstart(clone, "serve")],
        cwd=clone,
        startup_timeout=SETUP_TIMEOUT,
        stop_timeout=15.0,
    )
    with server:
        setup_lines = [line for line in server.logs().splitlines() if line.startswith("setup:")]
        stages = [line.split(":")[1].strip() for line in setup_lines]
        assert stages == ["python", "venv", "packages", "sandbox", "ready"], setup_lines

        example = run(["bash", "-c", quickstart(clone, "try")], cwd=clone)
        assert example.returncode == 0, example.stderr
        assert example.stdout.strip(), "the README's exec example printed nothing"

        codeinterp = clone / ".venv/bin/codeinterp"
        remote = exec_json(codeinterp, "--server", server.url, "print(6 * 7)", cwd=tmp_path)
        assert (remote["status"], remote["stdout"]) == ("ok", "42\n")
    assert_group_gone(server)


def test_wheel_installs_into_an_empty_venv_and_serves(tmp_path: Path) -> None:
    """A wheel built from the checkout, installed with pip into an empty venv elsewhere, has a
    working doctor, exec (the sandbox binds that venv, not the checkout) and serve."""
    source = clone_checkout(tmp_path / "source")
    dist = tmp_path / "dist"
    built = run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), "."],
        cwd=source,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("codeinterp-*.whl")

    venv = tmp_path / "elsewhere" / "env"
    base_python = getattr(sys, "_base_executable", sys.executable)
    made = run([base_python, "-m", "venv", str(venv)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    # The wheel's own dependency metadata is resolved against the lock in hash-checking mode: a
    # dependency the wheel declares but the lock lacks fails here.
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        (source / "requirements/server.txt").read_text()
        + f"codeinterp @ {wheel.as_uri()} --hash=sha256:{digest}\n"
    )
    pip = [str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check"]
    installed = run([*pip, "install", "--require-hashes", "-r", str(requirements)], tmp_path, 900)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    shutil.rmtree(source)  # nothing may depend on the source tree any more

    codeinterp = venv / "bin/codeinterp"
    doctor = run([str(codeinterp), "doctor"], cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr

    probe = "import codeinterp, pandas, sys\nprint(sys.prefix)\nprint(codeinterp.__file__)"
    local = exec_json(codeinterp, probe, cwd=tmp_path)
    assert local["status"] == "ok", local
    prefix, module = str(local["stdout"]).splitlines()
    assert prefix == str(venv)
    assert module.startswith(str(venv / "lib")), module

    data_dir = tmp_path / "data"
    port = free_port()
    serve = [str(codeinterp), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    server = ServerProcess({}, data_dir=data_dir, port=port, command=serve, cwd=tmp_path)
    with server:
        remote = exec_json(codeinterp, "--server", server.url, "print(6 * 7)", cwd=tmp_path)
        assert (remote["status"], remote["stdout"]) == ("ok", "42\n")
    assert_group_gone(server)

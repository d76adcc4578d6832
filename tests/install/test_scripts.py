"""The install scripts on small copies of the project: the lock check, the README reader, and
setup's messages and its refusal to trust an unfinished venv, setup-bench's stop. Seconds each,
no root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def copy_project(destination: Path, *names: str) -> Path:
    for name in names:
        source = CHECKOUT / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------------------- scripts/check-lock


def test_the_lock_in_the_checkout_passes() -> None:
    checked = run([str(CHECKOUT / "scripts/check-lock")], cwd=CHECKOUT)
    assert (checked.returncode, checked.stderr) == (0, "")


def test_a_file_url_in_the_lock_fails_naming_file_and_line(tmp_path: Path) -> None:
    project = copy_project(tmp_path, "scripts/check-lock", "pyproject.toml", "requirements")
    lock = project / "requirements/dev.txt"
    lines = lock.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if line.startswith("greenlet=="))
    lines[number] = "greenlet @ file:///tmp/gl/greenlet-3.5.6-cp311-cp311-linux_x86_64.whl \\"
    lock.write_text("\n".join(lines) + "\n")
    (project / "requirements/server.txt").write_text(
        (project / "requirements/server.txt").read_text()
        + "tool @ git+https://example.invalid/tool.git\nlocal @ /opt/wheels/local.whl\n"
    )

    checked = run([str(project / "scripts/check-lock")], cwd=project)

    assert checked.returncode == 1
    problems = checked.stderr.splitlines()
    assert f"requirements/dev.txt:{number + 1}: a file: URL: greenlet @ file:" in problems[0]
    assert ": a VCS URL: tool @ git+https://" in problems[1]
    assert ": a local path: local @ /opt/wheels/local.whl" in problems[2]
    assert "scripts/lock" in problems[-1]


def test_a_dependency_missing_from_the_lock_fails(tmp_path: Path) -> None:
    project = copy_project(tmp_path, "scripts/check-lock", "pyproject.toml", "requirements")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"tabulate>=0.9",', '"tabulate>=0.9",\n    "rich>=13",')
    )

    checked = run([str(project / "scripts/check-lock")], cwd=project)

    assert checked.returncode == 1
    assert "requirements/server.txt: rich (pyproject.toml) is not pinned" in checked.stderr


# ---------------------------------------------------------------------------- scripts/quickstart


def test_quickstart_reads_the_readme_commands() -> None:
    commands = {
        which: run([str(CHECKOUT / "scripts/quickstart"), which], cwd=CHECKOUT).stdout.strip()
        for which in ("serve", "test", "try")
    }
    readme = (CHECKOUT / "README.md").read_text()
    assert all(command and command in readme for command in commands.values()), commands
    assert "codeinterp serve" in commands["serve"]
    assert commands["try"].startswith(".venv/bin/codeinterp exec ")


def test_quickstart_fails_clearly_when_the_section_is_gone(tmp_path: Path) -> None:
    project = copy_project(tmp_path, "scripts/quickstart", "README.md")
    readme = project / "README.md"
    readme.write_text(readme.read_text().replace("## Quick start", "## Getting going"))

    printed = run([str(project / "scripts/quickstart"), "test"], cwd=project)

    assert printed.returncode == 1
    assert printed.stderr == "quickstart: README.md has no '## Quick start' section\n"


# ---------------------------------------------------------------------------- scripts/setup

# pip with no configuration of this machine, and an index that refuses at once.
UNREACHABLE_INDEX = {
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_FIND_LINKS": "",
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_RETRIES": "0",
    "PIP_TIMEOUT": "2",
    "PIP_NO_CACHE_DIR": "1",
}


def test_setup_names_a_missing_python_and_the_fix(tmp_path: Path) -> None:
    project = copy_project(tmp_path, "scripts/setup", "pyproject.toml", "requirements")

    done = run([str(project / "scripts/setup")], cwd=project, PYTHON="/nonexistent/python3.11")

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "setup: FAILED: no '/nonexistent/python3.11' on PATH; fix: install Python 3.11+ "
        "(Debian 12: apt-get install python3) or set PYTHON=/path/to/python3.11"
    ]
    assert not (project / ".venv").exists()


def test_setup_bench_stops_at_a_failed_setup_with_its_cause_and_one_line(tmp_path: Path) -> None:
    project = copy_project(
        tmp_path, "scripts/setup", "scripts/setup-bench", "pyproject.toml", "requirements"
    )

    done = run([str(project / "scripts/setup-bench")], cwd=project, PYTHON="/nonexistent/python3")

    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert "setup: FAILED: no '/nonexistent/python3' on PATH" in lines[-2]
    assert lines[-1] == (
        "setup-bench: FAILED: scripts/setup --dev failed; fix: read its last lines above"
    )


def test_setup_without_the_index_fails_with_the_cause_and_never_trusts_that_venv(
    tmp_path: Path,
) -> None:
    project = copy_project(tmp_path, "scripts/setup", "pyproject.toml", "requirements")

    first = run([str(project / "scripts/setup")], cwd=project, **UNREACHABLE_INDEX)

    assert first.returncode == 1
    assert first.stdout.splitlines()[1] == "setup: venv: created .venv"
    assert first.stderr.splitlines()[-1] == (
        "setup: FAILED: the package index offered no release of aiosqlite: it is unreachable "
        "or lacks it; fix: check the network (or PIP_INDEX_URL for a mirror) and run "
        "scripts/setup again"
    )
    assert (project / ".venv/bin/python").exists()
    assert not (project / ".venv/.codeinterp-setup").exists()

    second = run([str(project / "scripts/setup")], cwd=project, **UNREACHABLE_INDEX)

    assert second.returncode == 1
    assert second.stdout.splitlines()[1:3] == [
        "setup: venv: .venv is unfinished or broken (no stamp from a completed setup); "
        "making it anew",
        "setup: venv: created .venv",
    ]

"""`codeinterp env`: environments built from local wheels (no package index), as a subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.wheels import make_demo_wheels, make_wheel

CLI = [sys.executable, "-m", "codeinterp.cli.main", "env"]


def env_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """ci_demo 1.0 (needs ci_helper) and ci_helper 1.2, 1.3."""
    return make_demo_wheels(tmp_path / "wheels")


def requirements(tmp_path: Path, text: str) -> str:
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return str(path)


def build(data: Path, tmp_path: Path, wheels: Path, text: str) -> subprocess.CompletedProcess[str]:
    return env_cli(
        data, "build", "demo", "-r", requirements(tmp_path, text),
        "--no-index", "--find-links", str(wheels),
    )  # fmt: skip


def test_an_environment_is_built_locked_listed_and_versioned(tmp_path: Path, wheels: Path) -> None:
    data = tmp_path / "data"
    done = build(data, tmp_path, wheels, "ci_demo==1.0\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("built demo@1: 2 package(s)")

    shown = json.loads(env_cli(data, "show", "demo", "--json").stdout)
    assert shown["id"] == "demo@1" and shown["requirements"] == ["ci_demo==1.0"]
    assert shown["packages"] == [
        {"name": "ci_demo", "version": "1.0", "requested": True},
        {"name": "ci_helper", "version": "1.2", "requested": False},
    ]
    assert shown["modules"] == ["ci_demo", "ci_helper"]
    root = data / "environments" / "demo" / "1"
    lock = (root / "lock.txt").read_text().splitlines()[1:]
    assert [line.split(" ")[0] for line in lock] == ["ci-demo==1.0", "ci-helper==1.2"]
    assert all(" --hash=sha256:" in line for line in lock)
    site = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    package = site / "site-packages" / "ci_demo" / "__init__.py"
    assert not os.stat(package).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert not os.stat(root).st_mode & stat.S_IWUSR
    # what the build installed works on the server's own interpreter
    check = subprocess.run(
        [sys.executable, "-c", f"import site; site.addsitedir({str(site / 'site-packages')!r}); "
         "import ci_demo; print(ci_demo.VALUE)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.stdout.strip() == "42", check.stderr

    make_wheel(wheels, "ci_helper", "1.3", {"ci_helper.py": "H = 3\n"})
    again = build(data, tmp_path, wheels, "ci_demo==1.0\nci_helper==1.3\n")
    assert again.returncode == 0, again.stderr
    listed = json.loads(env_cli(data, "list", "--json").stdout)
    assert [e["id"] for e in listed] == ["demo@1", "demo@2"]
    assert json.loads(env_cli(data, "show", "demo", "--json").stdout)["id"] == "demo@2"
    first = json.loads(env_cli(data, "show", "demo@1", "--json").stdout)
    assert {p["name"]: p["version"] for p in first["packages"]}["ci_helper"] == "1.2"


def test_an_environment_cannot_replace_a_default_package(tmp_path: Path, wheels: Path) -> None:
    """A fake numpy of another version: refused with pip's reason, on one line, and nothing is
    left behind."""
    make_wheel(wheels, "numpy", "1.0.0", {"numpy/__init__.py": "FAKE = True\n"})
    data = tmp_path / "data"
    done = build(data, tmp_path, wheels, "numpy==1.0.0\n")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("codeinterp: error: pip could not build the environment:")
    assert "cannot replace a package the default set has" in line
    assert len(done.stderr.strip().splitlines()) == 2  # "building ..." and the error
    assert os.listdir(data / "environments") == []


def test_bad_input_gets_one_line_and_a_non_zero_exit(tmp_path: Path, wheels: Path) -> None:
    data = tmp_path / "data"
    cases = {
        ("build", "Bad Name", "-r", requirements(tmp_path, "x\n")): "is not an environment name",
        ("build", "demo", "-r", str(tmp_path / "missing.txt")): "cannot read",
        ("show", "demo"): "No environment 'demo'",
        ("show", "demo@x"): "is not an environment",
    }
    for args, words in cases.items():
        done = env_cli(data, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert words in done.stderr.strip().splitlines()[-1], (args, done.stderr)
    empty = build(data, tmp_path, wheels, "# nothing\n")
    assert empty.returncode == 2 and "names no package to install" in empty.stderr
    make_wheel(wheels, "numpy", "2.0.0", {"numpy/__init__.py": ""})  # never chosen: pinned
    already = build(data, tmp_path, wheels, "numpy\n")  # the default set's numpy satisfies it
    assert already.returncode == 2
    assert "every requirement is already in the default package set" in already.stderr

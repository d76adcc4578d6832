"""Wheels made on the spot, for tests that install packages with no package index.

    path = make_wheel(tmp_path, "ci_demo", "1.0", {"ci_demo/__init__.py": "VALUE = 42\n"},
                      requires=["ci_helper>=1"])

A wheel is a zip with the package's files and a `.dist-info` directory (METADATA, WHEEL,
top_level.txt and RECORD with each file's sha256), named `NAME-VERSION-py3-none-any.whl`: what
pip installs from `--find-links DIR --no-index`.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    files: Mapping[str, str],
    *,
    requires: Sequence[str] = (),
) -> Path:
    """Write a pure-Python wheel of `files` (path in site-packages -> text) into `directory`."""
    dist_info = f"{name}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {requirement}" for requirement in requires]
    top_level = sorted({path.split("/")[0].removesuffix(".py") for path in files})
    contents: dict[str, bytes] = {path: text.encode() for path, text in files.items()}
    contents[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    contents[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    contents[f"{dist_info}/top_level.txt"] = ("\n".join(top_level) + "\n").encode()
    record = [_record_line(path, data) for path, data in contents.items()]
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in contents.items():
            wheel.writestr(member, data)
    return path


def make_demo_wheels(directory: Path) -> Path:
    """`directory` with ci_demo 1.0 (`ci_demo.VALUE` is 42; it needs ci_helper>=1) and ci_helper
    1.2: the package set the environment tests build."""
    directory.mkdir(parents=True, exist_ok=True)
    make_wheel(
        directory,
        "ci_demo",
        "1.0",
        {"ci_demo/__init__.py": "from ci_helper import H\nVALUE = 40 + H\n"},
        requires=["ci_helper>=1"],
    )
    make_wheel(directory, "ci_helper", "1.2", {"ci_helper.py": "H = 2\n"})
    return directory

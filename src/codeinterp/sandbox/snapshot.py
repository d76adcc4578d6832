"""Session snapshots, the side inside the jail: a live session's state as one archive, and a
fresh session's state from one.

Both run in the session's own process, as its uid, in its jail: a snapshot is untrusted data
(its pickle can run any code, its tar can name any path), so it is only ever unpacked where
that code is already confined. The host moves the bytes and never looks inside.

The archive is an uncompressed tar stream:

    snapshot.json    {"format", "python", "execution_count", "history", "cwd", "saved",
                      "skipped": {name: why}}
    namespace.pkl    cloudpickle of {name: value} for every saved variable, in one pickle so
                     that two names for one object stay one object
    data/...         the files under /mnt/data
    home/...         the files under the session's home

What cannot be pickled (open files, sockets, locks and threads, generators, running processes,
objects of C extensions that refuse it) is skipped, named with the reason; so are IPython's own
names (`In`, `Out`, `_`, `_i1`, ...). Modules are saved by name and imported again.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tarfile
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import cloudpickle

FORMAT = 1
MAX_REASON_CHARS = 300
MAX_HISTORY = 10_000  # inputs kept, the latest
# IPython's bookkeeping in the namespace: history and output caches, made again by the shell.
_IPYTHON_NAME = re.compile(r"_+|_i+|_i\d+|_\d+|_ih|_oh|_dh|In|Out|exit|quit|get_ipython")


class TooLarge(Exception):
    """The archive went over the size the host accepts."""


class BlobWriter(io.RawIOBase):
    """A write-only stream that hands its bytes to `send` in pieces of `chunk` bytes, and
    raises TooLarge past `limit` bytes in all."""

    def __init__(self, send: Callable[[bytes], None], chunk: int, limit: int | None) -> None:
        self._send = send
        self._chunk = chunk
        self._limit = limit
        self._buffer = bytearray()
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.written += len(view)
        if self._limit is not None and self.written > self._limit:
            raise TooLarge(f"the snapshot is over the limit of {self._limit} bytes")
        self._buffer += view
        while len(self._buffer) >= self._chunk:
            self._send(bytes(self._buffer[: self._chunk]))
            del self._buffer[: self._chunk]
        return len(view)

    def flush(self) -> None:
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()


def session_home(workspace: str) -> str:
    """The home directory a snapshot saves and restores: the jail's (HOME); none without a jail
    (`workspace` is then a host directory, and HOME the host user's)."""
    home = os.environ.get("HOME", "") if workspace == "/mnt/data" else ""
    return home or "/nonexistent"


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def user_variables(shell: Any) -> dict[str, Any]:
    """The names the user made: the namespace less IPython's own and the shell's start-up
    names (unless the user bound them to something else)."""
    hidden = shell.user_ns_hidden
    return {
        name: value
        for name, value in shell.user_ns.items()
        if not name.startswith("__")
        and not _IPYTHON_NAME.fullmatch(name)
        and not (name in hidden and hidden[name] is value)
    }


def _picklable(variables: dict[str, Any]) -> tuple[bytes, list[str], dict[str, str]]:
    """One pickle of every variable that pickles; the names saved; the others with why."""
    try:
        return cloudpickle.dumps(variables), sorted(variables), {}
    except Exception:  # find which ones, then pickle the rest together
        pass
    keep: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, value in variables.items():
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            skipped[name] = _reason(exc)
        else:
            keep[name] = value
    try:
        return cloudpickle.dumps(keep), sorted(keep), skipped
    except Exception as exc:  # each pickles alone but not together: save none
        for name in keep:
            skipped[name] = _reason(exc)
        return cloudpickle.dumps({}), [], skipped


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    archive.addfile(info, io.BytesIO(data))


def _add_tree(archive: tarfile.TarFile, root: str, prefix: str) -> list[str]:
    """Regular files, directories and symbolic links under `root` (not followed); anything
    else (a FIFO, a socket) is skipped and named."""
    skipped: list[str] = []
    if not os.path.isdir(root):
        return skipped
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            info = archive.gettarinfo(path, f"{prefix}/{relative}")
            if not (info.isreg() or info.isdir() or info.issym()):
                skipped.append(relative)
                continue
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as f:
                    archive.addfile(info, f)
            else:
                archive.addfile(info)
    return skipped


def write_archive(
    shell: Any, out: BinaryIO | BlobWriter, workspace: str, home: str
) -> dict[str, Any]:
    """Write the session's snapshot to `out`; what was saved and what was skipped."""
    pickled, saved, skipped = _picklable(user_variables(shell))
    history = shell.history_manager
    inputs = list(history.input_hist_raw[-MAX_HISTORY:]) if history is not None else []
    cwd = os.getcwd()
    manifest = {
        "format": FORMAT,
        "python": sys.version.split()[0],
        "execution_count": shell.execution_count,
        "history": inputs,
        "cwd": cwd if cwd.startswith((workspace, home)) else workspace,
        "saved": saved,
        "skipped": skipped,
    }
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, "namespace.pkl", pickled)
        for name in _add_tree(archive, workspace, "data"):
            skipped[f"/mnt/data/{name}"] = "not a regular file, directory or link"
        for name in _add_tree(archive, home, "home"):
            skipped[f"~/{name}"] = "not a regular file, directory or link"
        _add_bytes(archive, "snapshot.json", json.dumps(manifest).encode())
    return {"saved": saved, "skipped": skipped}


def restore_archive(shell: Any, source: BinaryIO, workspace: str, home: str) -> dict[str, Any]:
    """Unpack a snapshot into this (fresh) session: files first, then the variables, the
    count, the history and the working directory. What could not be restored is reported,
    never raised: a bad archive leaves a working session with whatever it managed."""
    report: dict[str, Any] = {"variables": 0, "skipped": {}, "errors": []}
    pickled: bytes | None = None
    manifest: dict[str, Any] = {}
    try:
        with tarfile.open(fileobj=source, mode="r|", bufsize=1 << 20) as archive:
            for member in archive:
                if member.name == "namespace.pkl" and member.isreg():
                    extracted = archive.extractfile(member)
                    pickled = extracted.read() if extracted else None
                elif member.name == "snapshot.json" and member.isreg():
                    extracted = archive.extractfile(member)
                    manifest = json.loads(extracted.read()) if extracted else {}
                elif member.name.startswith(("data/", "home/")):
                    top, _, rest = member.name.partition("/")
                    target = workspace if top == "data" else home
                    member.name = rest
                    try:
                        # The "data" filter refuses absolute paths, `..`, links out of the
                        # tree, devices and FIFOs, and drops set-uid bits and ownership.
                        archive.extract(member, target, filter="data")
                    except (tarfile.FilterError, OSError) as exc:
                        report["errors"].append(f"{top}/{rest}: {_reason(exc)}")
                elif member.name not in ("data", "home"):
                    report["errors"].append(f"{member.name[:200]}: not part of a snapshot")
    except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
        report["errors"].append(f"the archive is not a readable snapshot: {_reason(exc)}")
    if pickled is not None:
        try:
            variables = cloudpickle.loads(pickled)
            if not isinstance(variables, dict):
                raise TypeError("the namespace is not a mapping")
            shell.user_ns.update({str(k): v for k, v in variables.items()})
            report["variables"] = len(variables)
        except BaseException as exc:  # a hostile or broken pickle: the session lives on
            report["errors"].append(f"the variables could not be restored: {_reason(exc)}")
    report["skipped"] = manifest.get("skipped") or {}
    count = manifest.get("execution_count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        shell.execution_count = count
    history = shell.history_manager
    inputs = manifest.get("history")
    if history is not None and isinstance(inputs, list):
        inputs = [i for i in inputs if isinstance(i, str)]
        history.input_hist_raw[:] = inputs
        history.input_hist_parsed[:] = inputs
    cwd = manifest.get("cwd")
    if isinstance(cwd, str) and cwd.startswith((workspace, home)) and os.path.isdir(cwd):
        os.chdir(cwd)
    return report

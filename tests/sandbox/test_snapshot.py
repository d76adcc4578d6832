"""Session snapshots through the engine: `Session.snapshot` and `create_session(restore_from=)`.

A snapshot is made and unpacked inside the session's jail; these tests check what comes back,
what is left out and why, and that a hostile or broken archive stays confined to its session.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import secrets
import tarfile
from pathlib import Path

import pytest

from codeinterp.errors import QuotaExceeded, SessionDied, SnapshotFailed
from codeinterp.sandbox import Sandbox, SandboxConfig

pytestmark = pytest.mark.root

STATE = """
import os, pandas as pd, numpy as np
frame = pd.DataFrame({'a': range(1000), 'b': [str(i) for i in range(1000)]})
same = frame
array = np.arange(12).reshape(3, 4)
scale = 3
def times(x):
    return x * scale
def counter():
    n = [0]
    def bump():
        n[0] += 1
        return n[0]
    return bump
bump = counter(); bump()
class Point:
    def __init__(self, x): self.x = x
    def double(self): return Point(self.x * 2)
point = Point(21)
os.makedirs('/mnt/data/deep/er', exist_ok=True)
open('/mnt/data/deep/er/bytes.bin', 'wb').write(bytes(range(256)))
open('/mnt/data/note.txt', 'w').write('kept')
open(os.path.expanduser('~/.config'), 'w').write('home file')
os.chdir('/mnt/data/deep')
"""

CHECK = """
import json, os
print(json.dumps({
    'frame': int(frame.a.sum()), 'b': frame.b.iloc[-1], 'same': same is frame,
    'array': array.tolist(), 'times': times(2), 'bump': bump(), 'point': point.double().x,
    'bytes': list(open('/mnt/data/deep/er/bytes.bin', 'rb').read()) == list(range(256)),
    'note': open('/mnt/data/note.txt').read(), 'home': open(os.path.expanduser('~/.config')).read(),
    'cwd': os.getcwd(), 'pd': pd.__name__, 'inputs': len(_ih),
}))
"""


async def test_a_restored_session_has_the_variables_files_count_and_history(
    tmp_path: Path,
) -> None:
    archive = str(tmp_path / "state.snapshot")
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session()
        assert (await session.run(STATE)).status == "ok"
        info = await session.snapshot(archive)
        assert info.bytes == os.path.getsize(archive) and info.skipped == {}
        assert info.variables >= 10
        await session.close()
        restored = await sandbox.create_session(restore_from=archive)
        assert restored.restore_report == {"variables": info.variables, "skipped": {}, "errors": []}
        execution = await restored.run(CHECK)
        assert execution.status == "ok", execution.error
        assert execution.execution_count == 2  # the count goes on from the snapshot's
        seen = json.loads(execution.stdout)
        assert seen == {
            "frame": 499500,
            "b": "999",
            "same": True,  # two names for one object are still one object
            "array": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]],
            "times": 6,
            "bump": 2,  # the closure's state came along
            "point": 42,
            "bytes": True,
            "note": "kept",
            "home": "home file",
            "cwd": "/mnt/data/deep",
            "pd": "pandas",
            "inputs": 3,  # the empty entry, the first cell and this one
        }
        await restored.close()


async def test_a_session_finds_the_snapshot_code_already_imported() -> None:
    """The zygote imports what a save and a restore run, before it forks: a session that had
    to import it paid for it at every save (and, without cached bytecode, compiled it)."""
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session()
        names = "'codeinterp.sandbox.snapshot', 'cloudpickle', 'tarfile'"
        execution = await session.run(f"import sys\nprint([n in sys.modules for n in ({names})])")
        assert execution.stdout == "[True, True, True]\n", execution
        await session.close()


async def test_what_cannot_be_saved_is_named_with_the_reason(tmp_path: Path) -> None:
    archive = str(tmp_path / "partial.snapshot")
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session()
        code = (
            "import socket, threading\n"
            "kept = [1, 2, 3]\n"
            "handle = open('/mnt/data/open.txt', 'w')\n"
            "sock = socket.socket()\n"
            "lock = threading.Lock()\n"
            "gen = (i for i in range(3))\n"
        )
        assert (await session.run(code)).status == "ok"
        info = await session.snapshot(archive)
        assert set(info.skipped) == {"handle", "sock", "lock", "gen"}, info.skipped
        assert "generator" in info.skipped["gen"] and "socket" in info.skipped["sock"]
        restored = await sandbox.create_session(restore_from=archive)
        assert restored.restore_report is not None
        assert set(restored.restore_report["skipped"]) == set(info.skipped)
        execution = await restored.run("print(kept, 'handle' in globals())")
        assert execution.stdout == "[1, 2, 3] False\n"
        # The first execution says what did not come back, and why; the next says nothing.
        assert execution.message.startswith("This session was restored from a snapshot")
        assert all(f"{name} (" in execution.message for name in info.skipped)
        assert (await restored.run("1")).message == ""


async def test_two_sessions_from_one_snapshot_are_independent(tmp_path: Path) -> None:
    archive = str(tmp_path / "fork.snapshot")
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session()
        await session.run("items = []\nopen('/mnt/data/log', 'w').write('start')")
        await session.snapshot(archive)
        left = await sandbox.create_session(restore_from=archive)
        right = await sandbox.create_session(restore_from=archive)
        await left.run("items.append('left')\nopen('/mnt/data/log', 'a').write(' left')")
        await right.run("items.append('right')")
        seen = [
            (await s.run("print(items, open('/mnt/data/log').read())")).stdout
            for s in (left, right, session)
        ]
        assert seen == ["['left'] start left\n", "['right'] start\n", "[] start\n"]


async def test_a_snapshot_over_its_limit_fails_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "big.snapshot"
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session()
        await session.run("blob = bytes(5_000_000)")
        with pytest.raises(QuotaExceeded, match="over 1000000 bytes"):
            await session.snapshot(str(archive), max_bytes=1_000_000)
        assert list(tmp_path.iterdir()) == []
        execution = await session.run("print(len(blob))")  # the session lives on
        assert execution.stdout == "5000000\n"


class _Hostile:
    """Unpickled, runs a shell command: in the jail that restores it, nowhere else."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def _archive(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


async def test_a_hostile_archive_stays_in_its_jail(tmp_path: Path) -> None:
    token = secrets.token_hex(6)
    host_marker = Path(f"/tmp/pwned-{token}")
    escape = Path(f"/tmp/escaped-{token}")
    command = f"touch {host_marker}; id -u > /tmp/who; ls -l /proc/$PPID/fd > /tmp/fds 2>&1"
    namespace = pickle.dumps({"planted": _Hostile(command)})
    manifest = json.dumps({"format": 1, "execution_count": 7, "cwd": "/etc"}).encode()
    hostile = _archive(
        [
            _member("namespace.pkl", data=namespace),
            _member("snapshot.json", data=manifest),
            _member(f"data/../../../../tmp/escaped-{token}"),
            _member(f"/tmp/escaped-{token}"),
            _member("data/link", tarfile.SYMTYPE, link="/etc"),
            _member("data/hard", tarfile.LNKTYPE, link="/etc/passwd"),
            _member("data/device", tarfile.CHRTYPE),
            _member("data/fine.txt", data=b"fine"),
            _member("elsewhere/file"),
        ]
    )
    archive = tmp_path / "hostile.snapshot"
    archive.write_bytes(hostile)
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session(restore_from=str(archive))
        report = session.restore_report
        assert report is not None
        errors = "\n".join(report["errors"])
        for refused in ("escaped", "link", "hard", "device", "elsewhere"):
            assert refused in errors, (refused, errors)
        assert not host_marker.exists() and not escape.exists()
        execution = await session.run(
            "import os\n"
            f"print(sorted(os.listdir('/mnt/data')), os.path.exists('{host_marker}'),"
            " open('/tmp/who').read().strip() == str(os.getuid()), os.getcwd())"
        )
        # The pickle ran, as the session's user, in the session's own /tmp; the only file
        # that reached the workspace is the plain one; the working directory stayed put.
        assert execution.stdout == "['fine.txt'] True True /mnt/data\n", execution
        # The archive reached the session through a pipe: no host path in its descriptors.
        fds = (await session.run("print(open('/tmp/fds').read())")).stdout
        assert "pipe:" in fds and str(tmp_path) not in fds, fds
        assert execution.execution_count == 7  # the next count, as the manifest says


async def test_a_corrupt_archive_gives_a_working_session_and_says_why(tmp_path: Path) -> None:
    archive = tmp_path / "corrupt.snapshot"
    archive.write_bytes(secrets.token_bytes(10_000))
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session(restore_from=str(archive))
        assert session.restore_report is not None
        assert "not a readable snapshot" in session.restore_report["errors"][0]
        assert (await session.run("print(1 + 1)")).stdout == "2\n"


LIAR = """
import sys
from codeinterp.sandbox import channel
from codeinterp.sandbox.kernel import Kernel
kernel = Kernel.current
def liar(message):
    frame = channel.encode_blob(bytes(65000))
    for _ in range({frames}):
        kernel.sock.sendall(frame)
    kernel.send({{"ev": "saved", "id": message["id"], "status": "ok", "bytes": {claim},
                 "saved": 0, "skipped": {{}}, "error": ""}})
for frame in sys._current_frames().values():
    while frame is not None:
        if frame.f_code.co_name == "serve" and "handlers" in frame.f_locals:
            frame.f_locals["handlers"]["snapshot"] = liar
        frame = frame.f_back
"""


async def test_a_kernel_that_lies_about_its_snapshot_is_stopped(tmp_path: Path) -> None:
    """Code that takes over its kernel's snapshot answer: more bytes than the host asked for
    get the session killed as soon as they pass the limit (the host writes no more than the
    limit, and keeps nothing); fewer than it claims are refused. Nothing is left on disk."""
    archive = tmp_path / "lie.snapshot"
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session()
        flood = LIAR.format(frames=400, claim=400 * 65000)  # 26 MB against a 1 MB limit
        assert (await session.run(flood)).status == "ok"
        with pytest.raises(SessionDied, match="over 1000000 bytes"):
            await session.snapshot(str(archive), max_bytes=1_000_000)
        assert list(tmp_path.iterdir()) == []
        after = await session.run("print('back')")
        assert after.stdout == "back\n" and after.state_lost
        assert "snapshot of over 1000000 bytes" in after.message

        short = LIAR.format(frames=2, claim=10_000_000)
        assert (await session.run(short)).status == "ok"
        with pytest.raises(SnapshotFailed, match="130000 bytes came"):
            await session.snapshot(str(archive))
        assert list(tmp_path.iterdir()) == []

"""Refusing to run without isolation, and the explicit opt-out."""

from __future__ import annotations

import os

import pytest

from codeinterp.errors import IsolationUnavailable
from codeinterp.sandbox import Sandbox, SandboxConfig, doctor


async def test_start_refuses_when_a_protection_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a protection missing, Sandbox.start fails with an error naming the problem and the
    explicit way out, and starts no zygote."""
    monkeypatch.setattr(
        doctor, "isolation_problems", lambda: ["seccomp: not supported on this kernel"]
    )
    with pytest.raises(IsolationUnavailable) as caught:
        await Sandbox.start(SandboxConfig(pool_size=0))
    message = str(caught.value)
    assert "seccomp: not supported on this kernel" in message
    assert "codeinterp doctor" in message and "unsafe_no_sandbox=True" in message


def test_doctor_names_the_fix_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not being root is reported with what to do about it."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    problems = doctor.isolation_problems()
    assert any("run the server as root" in p for p in problems)


async def test_unsafe_sessions_run_unsandboxed_when_asked() -> None:
    """unsafe_no_sandbox runs code as the host user in the workspace's host directory."""
    config = SandboxConfig(pool_size=0, unsafe_no_sandbox=True)
    async with await Sandbox.start(config) as sandbox, await sandbox.create_session() as session:
        ex = await session.run(
            "import os\nopen('made.txt', 'w').write('x')\nos.getuid(), os.getcwd()"
        )
        assert ex.status == "ok", ex.error
        assert ex.text == repr((os.getuid(), session.workspace.path))
        assert [f.name for f in ex.files] == ["made.txt"]
        assert await session.download("made.txt") == b"x"

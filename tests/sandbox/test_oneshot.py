"""One-shot tasks through the engine's own API: `Sandbox.run_task` and `Sandbox.map`."""

from __future__ import annotations

import pytest

from codeinterp.errors import InvalidRequest
from codeinterp.sandbox import Sandbox, SandboxConfig, Task

pytestmark = pytest.mark.root


async def test_map_runs_each_task_in_a_session_of_its_own() -> None:
    async with await Sandbox.start(SandboxConfig(pool_size=2)) as sandbox:
        tasks: list[Task | str] = [
            Task("import os; print(os.getuid()); x = 1", expected_output=None),
            "print('x' in globals())",
            Task("print(input())", stdin="from stdin\n", expected_output="from stdin"),
            Task("open('made.txt', 'w').write('abc')", return_files=True),
            Task("1", files={"../out": b""}),  # refused before any session is made
        ]
        results = {i: r async for i, r in sandbox.map(tasks, concurrency=3)}
        assert sorted(results) == [0, 1, 2, 3, 4]
        assert isinstance(results[4], InvalidRequest)
        ok = {i: r for i, r in results.items() if i != 4}
        assert all(not isinstance(r, Exception) and r.status == "ok" for r in ok.values()), ok
        assert results[1].stdout == "False\n"  # type: ignore[union-attr]
        assert results[2].passed is True  # type: ignore[union-attr]
        assert results[3].files == {"made.txt": b"abc"}  # type: ignore[union-attr]
        # every session was closed when its task ended
        assert sandbox.sessions == {}


async def test_run_task_closes_its_session_even_when_the_code_fails() -> None:
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        result = await sandbox.run_task("raise SystemExit(3)")
        assert result.status == "error" and result.execution["error"]["name"] == "SystemExit"
        assert sandbox.sessions == {}
        result = await sandbox.run_task(Task("import time; time.sleep(5)", timeout=0.3))
        assert result.status == "timeout"
        assert sandbox.sessions == {}

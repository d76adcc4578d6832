"""The blocking wrapper runs the same engine for code without an event loop."""

from __future__ import annotations

import threading
import time

from codeinterp.sandbox import End, SandboxConfig, Stdout, SyncSandbox


def test_sync_sandbox_runs_streams_transfers_files_and_interrupts() -> None:
    """SyncSandbox/SyncSession: run, stream events, upload/download, interrupt, close."""
    with SyncSandbox(SandboxConfig(pool_size=0)) as sandbox, sandbox.create_session() as session:
        assert session.run("x = 20\nx * 2").text == "40"
        events = list(session.execute("print('a')\nprint('b')"))
        # One Stdout per line, or one for both: lines that arrive while the consumer is behind
        # join the item still waiting (session._Output).
        assert isinstance(events[-1], End) and events[:-1]
        assert all(isinstance(e, Stdout) for e in events[:-1])
        assert "".join(e.text for e in events[:-1] if isinstance(e, Stdout)) == "a\nb\n"
        assert session.upload("in.txt", b"hello") == "/mnt/data/in.txt"
        session.run("open('out.txt', 'w').write(open('in.txt').read().upper())")
        assert session.download("out.txt") == b"HELLO"
        assert [f.name for f in session.list_files()] == ["in.txt", "out.txt"]
        timer = threading.Timer(0.5, session.interrupt)
        timer.start()
        started = time.monotonic()
        ex = session.run("import time\ntime.sleep(30)")
        timer.join()
        assert ex.status == "interrupted" and time.monotonic() - started < 5
        assert session.run("x").text == "20"

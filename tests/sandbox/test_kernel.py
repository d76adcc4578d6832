"""The kernel through the host API: state, streaming, rich output, errors, timeouts, interrupts."""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import time

from codeinterp.sandbox import End, Result, Sandbox, SandboxPolicy, Session, Stdout


async def assert_untouched_first_cell(session: Session) -> None:
    """The session's first cell is In[1] of an untouched IPython namespace: no count, history,
    output or name left behind by anything run before it."""
    code = "_i, _ii, _iii, _, __, ___, In, Out, sorted(k for k in dir() if k[0] != '_')"
    first = await session.run(code)
    assert first.status == "ok", first.error
    assert first.execution_count == 1
    names = ["In", "Out", "exit", "get_ipython", "open", "quit"]
    assert ast.literal_eval(first.text) == ("", "", "", "", "", "", ["", code], {}, names)


async def test_state_persists_between_executions(session: Session) -> None:
    """A variable, an import and a function defined in one execution are there in the next."""
    first = await session.run("import math\nx = 41\ndef inc(v): return v + 1")
    assert first.status == "ok"
    second = await session.run("inc(x), math.pi > 3")
    assert second.status == "ok"
    assert second.text == "(42, True)"
    assert second.execution_count == first.execution_count + 1  # type: ignore[operator]


async def test_a_pooled_session_starts_with_a_fresh_shell(sandbox: Sandbox) -> None:
    """The pool warms each session with a hidden execution: it leaves no count, history,
    output or name behind, so the first cell is In[1] of an untouched IPython namespace."""
    await sandbox.wait_pool_full()
    session = await sandbox.create_session()
    try:
        await assert_untouched_first_cell(session)
    finally:
        await session.close()


async def test_a_forked_session_shows_no_trace_of_the_zygotes_rehearsal(sandbox: Sandbox) -> None:
    """The zygote runs a few cells before it serves (kernel.rehearse); a session forked from it
    (not from the pool: another policy) still starts at In[1] with an untouched namespace, no
    open figure and no output history."""
    async with await sandbox.create_session(SandboxPolicy(hostname="rehearsed")) as session:
        await assert_untouched_first_cell(session)
        left = await session.run(
            "import sys, matplotlib.pyplot as plt\nplt.get_fignums(), hasattr(sys, 'last_value')"
        )
        assert left.text == "([], False)"


async def test_the_shell_keeps_no_second_copy_of_each_cell(session: Session) -> None:
    """History is disabled, yet IPython queues each cell for its database; the kernel drops
    that queue, so a long session holds its code once (in `In`), not twice."""
    for i in range(3):
        await session.run(f"x = {i}")
    ex = await session.run("h = get_ipython().history_manager\nlen(h.db_input_cache), len(In)")
    assert ex.text == "(1, 5)"  # only the cell that is running now is queued


async def test_stdout_streams_while_code_runs(session: Session) -> None:
    """Output printed before a pause arrives before the code finishes."""
    code = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"
    started = time.monotonic()
    arrivals: list[tuple[str, float]] = []
    async for event in session.execute(code):
        if isinstance(event, Stdout):
            arrivals.append((event.text, time.monotonic() - started))
    assert arrivals[0][0].startswith("first")
    assert arrivals[0][1] < 1.0  # long before the sleep ends
    assert "second" in "".join(text for text, _ in arrivals)


async def test_events_keep_the_order_the_code_produced(session: Session) -> None:
    """stdout, a displayed result, stderr and more stdout arrive in program order, then End."""
    code = (
        "import sys\nfrom IPython.display import display\n"
        "print('a')\ndisplay('shown')\nprint('b', file=sys.stderr)\nprint('c')\n'last'"
    )
    events = [e async for e in session.execute(code)]
    kinds = [
        (type(e).__name__, getattr(e, "text", None) or getattr(e, "data", {}).get("text/plain"))
        for e in events
    ]
    assert kinds[:-1] == [
        ("Stdout", "a\n"),
        ("Result", "'shown'"),
        ("Stderr", "b\n"),
        ("Stdout", "c\n"),
        ("Result", "'last'"),
    ]
    assert isinstance(events[-1], End) and events[-1].status == "ok"


async def test_output_from_c_code_and_subprocesses_is_captured(session: Session) -> None:
    """Writes to file descriptor 1 and 2 (C libraries, child processes) reach the host."""
    ex = await session.run(
        "import os, subprocess\nos.write(1, b'raw\\n')\n"
        "subprocess.run(['sh', '-c', 'echo child; echo oops >&2'])"
    )
    assert ex.stdout == "raw\nchild\n"
    assert ex.stderr == "oops\n"


MIME_CODE = """
from IPython.display import display, HTML, Markdown, Latex, JSON, SVG, Image
import base64
display(HTML('<b>bold</b>'))
display(Markdown('# title'))
display(Latex(r'$x^2$'))
display(JSON({'k': [1, 2]}))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'))
png = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWj'
                       'R9awAAAABJRU5ErkJggg==')
display(Image(data=png, format='png'))
"""


async def test_each_mime_type_comes_back(session: Session) -> None:
    """HTML, Markdown, LaTeX, JSON, SVG and PNG displays each arrive as their MIME type."""
    ex = await session.run(MIME_CODE)
    assert ex.status == "ok", ex.error
    by_type = {mime: r.data[mime] for r in ex.results for mime in r.data if mime != "text/plain"}
    assert by_type["text/html"] == "<b>bold</b>"
    assert by_type["text/markdown"] == "# title"
    assert by_type["text/latex"] == "$x^2$"
    assert by_type["application/json"] == {"k": [1, 2]}
    assert by_type["image/svg+xml"].startswith("<svg")
    assert base64.b64decode(by_type["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert all(r.kind == "display_data" for r in ex.results)


async def test_open_matplotlib_figures_come_back_as_png_and_are_closed(session: Session) -> None:
    """Two figures left open become two PNG results; none stays open for the next execution."""
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.figure(); plt.plot([1, 2, 3])\n"
        "fig, ax = plt.subplots(); ax.bar(['a', 'b'], [3, 4])\n"
        "print('drawn')"
    )
    ex = await session.run(code)
    pngs = [base64.b64decode(r.data["image/png"]) for r in ex.results if "image/png" in r.data]
    assert len(pngs) == 2
    assert all(p.startswith(b"\x89PNG") and len(p) > 1000 for p in pngs)
    after = await session.run("len(plt.get_fignums())")
    assert after.text == "0"
    assert not [r for r in after.results if "image/png" in r.data]


async def test_plt_show_displays_at_the_point_it_is_called(session: Session) -> None:
    """plt.show() sends the figure before later output."""
    code = "import matplotlib.pyplot as plt\nplt.plot([1])\nplt.show()\nprint('after')"
    events = [e async for e in session.execute(code)]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Result", "Stdout", "End"]
    first = events[0]
    assert isinstance(first, Result) and "image/png" in first.data


async def test_dataframe_as_last_expression_gives_html_and_text(session: Session) -> None:
    """A DataFrame value comes back as an execute_result with an HTML table and plain text."""
    ex = await session.run("import pandas as pd\npd.DataFrame({'city': ['Oslo'], 'n': [7]})")
    (result,) = ex.results
    assert result.kind == "execute_result"
    assert "<table" in result.data["text/html"] and "Oslo" in result.data["text/html"]
    assert "Oslo" in result.data["text/plain"] and "city" in result.data["text/plain"]


async def test_error_gives_name_value_and_traceback(session: Session) -> None:
    """An exception ends as `error` with its name, message and the failing line."""
    ex = await session.run("def f(d):\n    return d['missing']\n\nf({})")
    assert ex.status == "error"
    assert ex.error is not None
    assert ex.error.name == "KeyError"
    assert ex.error.value == "'missing'"
    assert "return d['missing']" in ex.error.traceback
    assert "\x1b[" not in ex.error.traceback  # plain text, no terminal colours


async def test_syntax_error_is_an_error_result(session: Session) -> None:
    """Code that does not parse ends as `error` with SyntaxError, and the session goes on."""
    ex = await session.run("def broken(:\n    pass")
    assert ex.status == "error"
    assert ex.error is not None and ex.error.name == "SyntaxError"
    assert (await session.run("2 * 21")).text == "42"


async def test_shell_escape_runs_inside_the_jail(session: Session) -> None:
    """`!cmd` runs in the sandbox: it sees the sandbox hostname and /mnt/data."""
    ex = await session.run("!hostname && pwd && id -un")
    assert ex.status == "ok"
    assert ex.stdout.split() == ["sandbox", "/mnt/data", "sandbox"]


async def test_pip_install_fails_fast_with_a_clear_message(session: Session) -> None:
    """%pip install of a missing package explains there is no network, within seconds."""
    started = time.monotonic()
    ex = await session.run("%pip install surely-not-a-real-package-xyz")
    assert time.monotonic() - started < 5
    assert ex.status == "error"
    assert ex.error is not None and "no network access" in ex.error.value
    present = await session.run("%pip install numpy")
    assert present.status == "ok"
    assert "Requirement already satisfied: numpy" in present.stdout


async def test_workspace_changes_are_reported(session: Session) -> None:
    """Files created, modified and deleted under /mnt/data are listed after the execution."""
    await session.upload("old.txt", b"old")
    await session.upload("keep.txt", b"keep")
    ex = await session.run(
        "import os\nopen('new.csv', 'w').write('a,b\\n')\n"
        "open('keep.txt', 'a').write('more')\nos.remove('old.txt')\n"
        "os.makedirs('sub', exist_ok=True); open('sub/x.bin', 'wb').write(b'123')"
    )
    changes = {(f.name, f.change, f.size) for f in ex.files}
    assert changes == {
        ("new.csv", "created", 4),
        ("keep.txt", "modified", 8),
        ("old.txt", "deleted", 0),
        ("sub/x.bin", "created", 3),
    }
    assert {f.path for f in ex.files} >= {"/mnt/data/new.csv", "/mnt/data/sub/x.bin"}


async def test_timeout_interrupts_and_the_session_keeps_its_state(session: Session) -> None:
    """A sleeping cell past its time limit ends as `timeout`; earlier state is still there."""
    await session.run("kept = 'yes'")
    started = time.monotonic()
    ex = await session.run("import time\ntime.sleep(30)", timeout=0.5)
    assert ex.status == "timeout"
    assert time.monotonic() - started < 3
    assert not ex.state_lost
    assert "time limit" in ex.message
    assert (await session.run("kept")).text == "'yes'"


async def test_timeout_kills_code_that_ignores_interrupts(session: Session) -> None:
    """Code that ignores SIGINT is killed after the grace period; the session works again."""
    await session.run("lost = 1")
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    ex = await session.run(code, timeout=0.5)
    assert ex.status == "timeout"
    assert ex.state_lost
    again = await session.run("'lost' in globals(), 1 + 1")
    assert again.status == "ok"
    assert again.text == "(False, 2)"


async def test_interrupt_keeps_state(session: Session) -> None:
    """interrupt() stops running code as `interrupted` and variables survive."""
    await session.run("total = 5")
    task = asyncio.create_task(session.run("import time\nwhile True: time.sleep(0.05)"))
    await asyncio.sleep(0.5)
    await session.interrupt()
    ex = await asyncio.wait_for(task, 5)
    assert ex.status == "interrupted"
    assert not ex.state_lost
    assert (await session.run("total * 2")).text == "10"


async def test_an_interrupt_before_the_code_starts_still_stops_it(session: Session) -> None:
    """An interrupt as soon as the execution holds the session (before the kernel has the code,
    when SIGINT is ignored) is not lost: the code is stopped as it starts, state kept. And
    interrupt() says whether there was an execution to stop."""
    assert await session.interrupt() is False  # nothing running
    await session.run("total = 5")
    for _ in range(5):
        task = asyncio.create_task(session.run("import time\ntime.sleep(30)"))
        while not await session.interrupt():
            await asyncio.sleep(0)
        ex = await asyncio.wait_for(task, 5)
        assert ex.status == "interrupted" and not ex.state_lost
    assert (await session.run("total * 2")).text == "10"


async def test_leaving_the_stream_early_interrupts_the_code(session: Session) -> None:
    """Closing the event stream mid-execution stops the code; the next execution runs normally."""
    await session.run("flag = 'kept'")
    stream = session.execute(
        "import time\nfor i in range(100):\n    print(i, flush=True)\n    time.sleep(0.1)"
    )
    first = await stream.__anext__()
    assert isinstance(first, Stdout)
    await stream.aclose()
    started = time.monotonic()
    ex = await session.run("flag")
    assert time.monotonic() - started < 3
    assert ex.text == "'kept'"
    assert "99" not in ex.stdout


async def test_code_that_exits_the_interpreter_is_reported_as_killed(session: Session) -> None:
    """os._exit ends the session's interpreter: `killed` with the exit code, then a fresh one."""
    ex = await session.run("import os\nos._exit(3)")
    assert ex.status == "killed"
    assert ex.exit_code == 3
    assert ex.state_lost
    assert (await session.run("1 + 1")).text == "2"


async def test_stdin_is_empty(session: Session) -> None:
    """input() does not hang: stdin is at end of file."""
    ex = await session.run("input('name? ')", timeout=5)
    assert ex.status == "error"
    assert ex.error is not None and ex.error.name in ("EOFError", "StdinNotImplementedError")


async def test_execution_serialises_to_the_shared_json_shape(session: Session) -> None:
    """to_dict() has the fields the CLI and the HTTP API promise, and is valid JSON."""
    ex = await session.run("print('out')\n7")
    document = json.loads(json.dumps(ex.to_dict()))
    assert document["status"] == "ok"
    assert document["stdout"] == "out\n" and document["stderr"] == ""
    assert document["results"] == [
        {"type": "execute_result", "data": {"text/plain": "7"}, "metadata": {}}
    ]
    assert document["error"] is None and document["files"] == []
    assert isinstance(document["execution_count"], int)
    assert document["duration_ms"] > 0


async def test_concurrent_executions_in_one_session_run_one_at_a_time(session: Session) -> None:
    """Two executions started together do not interleave: the second sees the first's effect."""
    first = asyncio.create_task(session.run("import time\ntime.sleep(0.3)\nshared = 1"))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(session.run("shared + 1"))
    assert (await first).status == "ok"
    assert (await second).text == "2"


async def test_warm_pool_hands_out_ready_sessions(sandbox: Sandbox) -> None:
    """With the pool full, a new session comes from it and answers at once."""
    await sandbox.wait_pool_full()
    before = sandbox.pool_ready
    created = await sandbox.create_session()
    try:
        assert sandbox.pool_ready == before - 1
        first = await created.run("1 + 1")
        # Pooled sessions were warmed invisibly: the caller's first execution is number 1.
        assert (first.text, first.execution_count, first.stdout) == ("2", 1, "")
    finally:
        await created.close()
    await sandbox.wait_pool_full()


async def test_stats_report_memory_and_cpu(session: Session) -> None:
    """Per-session stats show the memory peak and CPU time the code used."""
    await session.run(
        "import numpy as np\na = np.ones(50_000_000, dtype=np.uint8)\n"
        "s = 0\nfor i in range(2_000_000): s += i"
    )
    stats = session.stats()
    assert stats.memory_peak_bytes > 50_000_000
    assert stats.cpu_seconds > 0.05
    assert stats.executions == 1


async def test_stopping_right_after_the_end_event_keeps_the_session(session: Session) -> None:
    """A caller that stops iterating once it has the End event does not interrupt anything:
    the session keeps its state and answers at once."""
    await session.run("kept = 'still here'")
    async for event in session.execute("1 + 1"):
        if isinstance(event, End):
            break
    started = time.monotonic()
    ex = await session.run("kept")
    assert time.monotonic() - started < 0.5
    assert (ex.text, ex.state_lost) == ("'still here'", False)
    assert session.restarts == 0


async def test_ping_is_a_round_trip_without_code(session: Session) -> None:
    """ping() answers between executions without touching the execution count."""
    first = await session.run("1")
    await session.ping()
    await session.ping()
    second = await session.run("2")
    assert second.execution_count == first.execution_count + 1  # type: ignore[operator]


async def test_magics_that_keep_state_write_it_in_the_sessions_home(session: Session) -> None:
    """%cd - and %bookmark keep a database, IPython's `db`: in a session it is in its own home,
    not in the zygote's profile directory (a read-only host path inside the jail)."""
    for code in ("%cd /tmp", "%cd -", "%bookmark scratch /tmp", "%cd -b scratch"):
        ex = await session.run(code)
        assert ex.status == "ok", (code, ex.error)
    ex = await session.run("str(get_ipython().db.root)")
    assert ex.text == "'/home/sandbox/.ipython/profile_default/db'"

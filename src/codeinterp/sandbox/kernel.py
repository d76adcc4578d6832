"""The REPL that runs inside the jail: IPython's InteractiveShell over a framed socket.

No ZMQ and no threads, so the zygote can build the shell once and fork it into every session.
Output travels two ways:

- Python's `sys.stdout` and `sys.stderr` send `stream` frames on the session socket, in order with
  results and errors, so a program's prints, displays and warnings arrive as it made them.
- File descriptors 1 and 2 are pipes read by the host: output of C code and of child processes
  (`!ls`, subprocess) goes there, and the host drains them before it handles each frame.

Messages (host -> kernel): {"op": "execute", "id": int, "code": str} | {"op": "ping", "id": int}
  | {"op": "warm", "id": int} (answered with a pong)
Messages (kernel -> host): {"ev": "ready", "timings": {step: ms}} | {"ev": "pong", "id"}
  | {"ev": "stream", "name": "stdout" | "stderr", "text": str}
  | {"ev": "result", "id", "type": "execute_result" | "display_data", "data": {mime: value},
     "metadata": {}}
  | {"ev": "error", "id", "name", "value", "traceback"}
  | {"ev": "done", "id", "status": "ok" | "error" | "interrupted", "execution_count",
     "files": [...]}
Frames carry the id of the execution they belong to, so the host can drop stale ones.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from .channel import recv_message, send_message

WORKSPACE = "/mnt/data"
MAX_BUNDLE_BYTES = 8 * 1024 * 1024
MAX_TRACKED_FILES = 10_000

PREINSTALLED = (
    "numpy pandas matplotlib scipy scikit-learn Pillow openpyxl pypdf PyPDF2 seaborn sympy"
)

# Snapshot of the workspace: relative path -> (size, mtime_ns, inode)
Snapshot = dict[str, tuple[int, int, int]]


def _jsonable_bundle(data: dict[str, Any]) -> dict[str, Any]:
    """Binary MIME values (PNG, JPEG, PDF) travel as base64 text, as in Jupyter's messages."""
    return {
        mime: base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
        for mime, value in data.items()
    }


class ChannelStream(io.TextIOBase):
    """sys.stdout / sys.stderr of the session: line-buffered text sent as `stream` frames.

    In a process forked by user code (where the kernel must stay silent) it writes to its file
    descriptor instead, which the host also reads.
    """

    FLUSH_AT = 8192

    def __init__(self, name: str, fd: int) -> None:
        super().__init__()
        self.stream_name = name
        self._fd = fd
        self._parts: list[str] = []
        self._size = 0

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._parts.append(text)
        self._size += len(text)
        if "\n" in text or self._size >= self.FLUSH_AT:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        kernel = Kernel.current
        if kernel is None:
            os.write(self._fd, text.encode("utf-8", "replace"))
        else:
            kernel.send_frame({"ev": "stream", "name": self.stream_name, "text": text})


class _HostPublisher(DisplayPublisher):
    """`display(...)` and inline figures: sent to the host as display_data results."""

    def publish(  # type: ignore[no-untyped-def]
        self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs
    ) -> None:
        kernel = Kernel.current
        if kernel is not None:
            kernel.send_result("display_data", data, metadata)

    def clear_output(self, wait: bool = False) -> None:
        pass


class _HostDisplayHook(DisplayHook):
    """The value of a cell's last expression: sent to the host as its execute_result."""

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict[str, Any], md_dict: Any = None) -> None:
        kernel = Kernel.current
        if kernel is not None:
            kernel.send_result("execute_result", format_dict, md_dict)

    def finish_displayhook(self) -> None:
        pass


class SandboxShell(InteractiveShell):
    """InteractiveShell with results and errors routed to the host instead of printed."""

    displayhook_class = _HostDisplayHook
    display_pub_class = _HostPublisher

    def _showtraceback(self, etype: type[BaseException], evalue: BaseException, stb: Any) -> None:
        kernel = Kernel.current
        text = self.InteractiveTB.stb2text(stb)
        value = str(evalue)
        if isinstance(evalue, OSError) and evalue.errno == errno.ENOSPC:
            value += " (a size quota is full: /mnt/data, /tmp or /home/sandbox)"
        if kernel is not None:
            kernel.report_error(etype.__name__, value, text)
        else:
            print(text, file=sys.stderr)

    def enable_gui(self, gui: str | None = None) -> None:
        pass  # figures are rendered inline; there is no GUI event loop to start

    def system_piped(self, cmd: str) -> None:
        # `!cmd`: the command writes straight to our stdout and stderr pipes; no pseudo-terminal
        # (the jail has none) and no copying through Python.
        sys.stdout.flush()
        sys.stderr.flush()
        self.system_raw(cmd)

    system = system_piped


def _pip_magic(line: str) -> None:
    """%pip: there is no network in the sandbox, so say so at once instead of retrying."""
    from importlib import metadata

    words = line.split()
    if words[:1] == ["install"]:
        wanted = [w for w in words[1:] if not w.startswith("-")]
        missing = []
        for requirement in wanted:
            name = requirement.split("[")[0].split("=")[0].split("<")[0].split(">")[0]
            try:
                version = metadata.version(name)
                print(f"Requirement already satisfied: {name}=={version}")
            except metadata.PackageNotFoundError:
                missing.append(requirement)
        if missing:
            raise RuntimeError(
                f"cannot install {', '.join(missing)}: this sandbox has no network access. "
                f"Preinstalled libraries include {PREINSTALLED}."
            )
        return
    import subprocess

    sys.stdout.flush()
    subprocess.call([sys.executable, "-m", "pip", *words])


def build_shell() -> SandboxShell:
    """Create the shell once, in the zygote, before any session exists."""
    config = Config()
    config.HistoryManager.enabled = False  # its SQLite writer is a thread; forks need none
    config.InteractiveShell.colors = "nocolor"  # tracebacks are read by models and people
    config.InteractiveShell.autocall = 0
    config.InteractiveShell.cache_size = 100
    shell: SandboxShell = SandboxShell.instance(config=config)
    shell.register_magic_function(_pip_magic, "line", "pip")  # type: ignore[arg-type]
    shell.enable_matplotlib("inline")
    return shell


def snapshot_workspace(root: str = WORKSPACE) -> Snapshot:
    """Every regular file under `root` (symbolic links are listed, never followed)."""
    found: Snapshot = {}
    stack = [""]
    while stack and len(found) < MAX_TRACKED_FILES:
        relative = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, relative)))
        except OSError:
            continue
        for entry in entries:
            path = f"{relative}/{entry.name}" if relative else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)
            else:
                found[path] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return found


def diff_workspace(
    before: Snapshot, after: Snapshot, root: str = WORKSPACE
) -> list[dict[str, Any]]:
    """Files created, modified or deleted between two snapshots, sorted by path."""
    changes: list[dict[str, Any]] = []
    for name, meta in after.items():
        if name not in before:
            change = "created"
        elif before[name] != meta:
            change = "modified"
        else:
            continue
        changes.append({"path": f"{root}/{name}", "name": name, "size": meta[0], "change": change})
    for name in before.keys() - after.keys():
        changes.append({"path": f"{root}/{name}", "name": name, "size": 0, "change": "deleted"})
    changes.sort(key=lambda c: str(c["path"]))
    return changes


class _ShellState:
    """What an execution changes in the shell, saved so that it can be put back."""

    def __init__(self, shell: SandboxShell) -> None:
        self.shell = shell
        self.count = shell.execution_count
        self.namespace = dict(shell.user_ns)
        self.hidden = dict(shell.user_ns_hidden)
        history = shell.history_manager
        assert history is not None
        self.inputs = len(history.input_hist_parsed), len(history.input_hist_raw)
        self.input_names = history._i, history._ii, history._iii, history._i00
        hook = shell.displayhook
        self.output_names = hook._, hook.__, hook.___

    def restore(self) -> None:
        shell, history, hook = self.shell, self.shell.history_manager, self.shell.displayhook
        assert history is not None
        shell.execution_count = self.count
        shell.last_execution_succeeded = True
        shell.last_execution_result = None
        shell.user_ns.clear()
        shell.user_ns.update(self.namespace)
        shell.user_ns_hidden.clear()
        shell.user_ns_hidden.update(self.hidden)
        del history.input_hist_parsed[self.inputs[0] :]
        del history.input_hist_raw[self.inputs[1] :]
        for cache in (history.output_hist, history.output_hist_reprs, history.outputs):
            cache.clear()
        history.exceptions.clear()
        history.db_input_cache.clear()
        history.db_output_cache.clear()
        history._i, history._ii, history._iii, history._i00 = self.input_names
        hook._, hook.__, hook.___ = self.output_names


class _Discard:
    """Stands in for the session socket during the warm-up: its frames reach nobody."""

    def sendall(self, data: bytes) -> None:
        pass


class Kernel:
    """Serves one session: reads requests from the socket, runs them in the shell."""

    current: Kernel | None = None

    def __init__(
        self, shell: SandboxShell, sock: socket.socket, workspace: str = WORKSPACE
    ) -> None:
        self.shell = shell
        self.sock = sock
        self.workspace = workspace
        self.pid = os.getpid()
        self._error: dict[str, str] | None = None
        self._execution_id = 0
        Kernel.current = self
        # Code that forks without exec runs on in a copy of this kernel: that copy must never
        # speak on the channel (see `execute`).
        os.register_at_fork(after_in_child=Kernel._forget)

    @staticmethod
    def _forget() -> None:
        Kernel.current = None

    # -- output -----------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Send a frame after any text still buffered in stdout and stderr."""
        sys.stdout.flush()
        sys.stderr.flush()
        send_message(self.sock, message)

    def send_frame(self, message: dict[str, Any]) -> None:
        send_message(self.sock, message)

    def send_result(self, kind: str, data: dict[str, Any], metadata: Any) -> None:
        bundle = _jsonable_bundle(data)
        message = {
            "ev": "result",
            "id": self._execution_id,
            "type": kind,
            "data": bundle,
            "metadata": metadata or {},
        }
        try:
            size = len(json.dumps(message))
        except (TypeError, ValueError):
            text = data.get("text/plain", "")
            message["data"], message["metadata"], size = {"text/plain": str(text)}, {}, 0
        if size > MAX_BUNDLE_BYTES:
            message["data"] = {
                "text/plain": f"[output of {size} bytes dropped: over the "
                f"{MAX_BUNDLE_BYTES // (1024 * 1024)} MiB limit for one result]"
            }
            message["metadata"] = {}
        self.send(message)

    def report_error(self, name: str, value: str, traceback: str) -> None:
        self._error = {"name": name, "value": value, "traceback": traceback}
        self.send({"ev": "error", "id": self._execution_id, **self._error})

    # -- requests ---------------------------------------------------------------------------

    def serve(self, timings: dict[str, float] | None = None) -> None:
        # SIGINT interrupts user code only: it is ignored between executions, and while code
        # runs the C default handler raises KeyboardInterrupt with no frame of ours in the
        # traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.send({"ev": "ready", "timings": timings or {}})
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "execute": self.execute,
            "ping": lambda message: self.send({"ev": "pong", "id": message.get("id")}),
            "warm": self.warm,
        }
        while True:
            message = recv_message(self.sock)
            if message is None:
                return
            handler = handlers.get(message.get("op", ""))
            if handler is None:
                self.send({"ev": "done", "status": "error", "execution_count": None, "files": []})
                continue
            handler(message)

    def warm(self, message: dict[str, Any]) -> None:
        """Run one execution through the whole path, unseen, then forget it.

        A forked session pays for its first touch of every page it shares with the zygote (a
        copy on write); doing that here, while the session waits in the pool, takes ~1 ms off
        its first real execution. The frames go nowhere, and the shell is put back as it was
        (count, history, namespace), so the user sees no trace of the cell.
        """
        saved = _ShellState(self.shell)
        sock, self.sock = self.sock, _Discard()  # type: ignore[assignment]
        try:
            self.execute({"id": 0, "code": "print(1 + 1)\n1 + 1"})
        finally:
            self.sock = sock
            saved.restore()
            self._error = None
            self._execution_id = 0
        self.send({"ev": "pong", "id": message.get("id")})

    def execute(self, message: dict[str, Any]) -> None:
        code = str(message.get("code", ""))
        self._execution_id = int(message.get("id", 0))
        before = snapshot_workspace(self.workspace)
        self._error = None
        interrupted = False
        started = time.perf_counter()
        count = self.shell.execution_count
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            result = self.shell.run_cell(code, store_history=True)
            count = result.execution_count
            self._forget_history_cache()
            self._flush_open_figures()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if os.getpid() != self.pid:
            os._exit(0)  # a fork of the kernel made by user code: its cell is over, so is it
        failure = None if interrupted else (result.error_before_exec or result.error_in_exec)
        if interrupted or isinstance(failure, KeyboardInterrupt):
            status = "interrupted"
        elif failure is not None or self._error is not None:
            status = "error"
        else:
            status = "ok"
        self.send(
            {
                "ev": "done",
                "id": self._execution_id,
                "status": status,
                "execution_count": count,
                "files": diff_workspace(before, snapshot_workspace(self.workspace), self.workspace),
                "kernel_ms": (time.perf_counter() - started) * 1000,
            }
        )

    def _forget_history_cache(self) -> None:
        """History is never written (it is disabled), yet IPython queues every cell's source
        for the database: drop the queue so a long session does not keep its code twice."""
        history = self.shell.history_manager
        if history is not None:
            history.db_input_cache.clear()
            history.db_output_cache.clear()

    def _flush_open_figures(self) -> None:
        """Show and close every figure still open (the inline backend shows those it drew)."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None or not pyplot.get_fignums():
            return
        from IPython.display import display

        for number in pyplot.get_fignums():
            display(pyplot.figure(number))
        pyplot.close("all")

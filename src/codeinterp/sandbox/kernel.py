"""The REPL that runs inside the jail: IPython's InteractiveShell over a framed socket.

No ZMQ and no threads, so the zygote can build the shell once and fork it into every session.
Output travels two ways:

- Python's `sys.stdout` and `sys.stderr` send output frames on the session socket, in order with
  results and errors, so a program's prints, displays and warnings arrive as it made them. Past
  the host's output cap (sent with each execution) they send nothing, and the end of the
  execution says how much they held back.
- File descriptors 1 and 2 are pipes read by the host: output of C code and of child processes
  (`!ls`, subprocess) goes there, and the host drains them before it handles each frame.

Messages (host -> kernel): {"op": "execute", "id": int, "code": str, "output_cap": int,
  "stdin"?: str (what the code reads on standard input during this execution)}
  | {"op": "ping", "id": int} | {"op": "warm", "id": int} (answered with a pong)
Messages (kernel -> host), framed as channel.py describes:
  {"ev": "ready", "timings": {step: ms}} | {"ev": "pong", "id"}
  | output frames (raw UTF-8, stdout or stderr)
  | {"ev": "result", "id", "type": "execute_result" | "display_data", "data": {mime: value},
     "metadata": {}, "parts": [mime, ...]}
  | {"ev": "error", "id", "name", "value", "traceback", "parts": [...]}
  | {"ev": "done", "id", "status": "ok" | "error" | "interrupted", "execution_count",
     "unsent": {stream: bytes}}
String values longer than INLINE_CHARS travel as part frames just before the frame they belong
to, which names them in `parts` instead of holding them. Frames carry the id of the execution
they belong to, so the host can drop stale ones. Which files changed is the host's own account
(it lists the workspace itself), never the kernel's.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from .channel import (
    MAX_KERNEL_FRAME,
    TAG_STDERR,
    TAG_STDOUT,
    encode_blob,
    encode_output,
    encode_part,
    part_room,
    recv_message,
)
from .frames import MAX_KEY_CHARS, MAX_PARTS, MAX_SKIPPED, is_json_type

# Imported here, so in the zygote before it forks: a session imported it at its first save,
# ~8 ms each where bytecode is not cached (500 sessions saved at a stop: 4 s of CPU).
from .snapshot import BlobWriter, TooLarge, session_home, write_archive
from .workspace import diff_workspace as diff_workspace  # the host's; kept importable here

WORKSPACE = "/mnt/data"
MAX_BUNDLE_BYTES = 8 * 1024 * 1024
INLINE_CHARS = 4096  # longer string values travel as part frames
MAX_ERROR_CHARS = 1024 * 1024  # of an exception's value or traceback; the middle is cut
MAX_ERROR_NAME = 200
LINE_FLUSH_FRAMES = 10_000  # output frames in one execution before output is block-buffered
_SIGINT = {signal.SIGINT}

PREINSTALLED = (
    "numpy pandas matplotlib scipy scikit-learn Pillow openpyxl pypdf PyPDF2 seaborn sympy"
)


def _jsonable_bundle(data: dict[str, Any]) -> dict[str, Any]:
    """Binary MIME values (PNG, JPEG, PDF) travel as base64 text, as in Jupyter's messages."""
    return {
        mime: base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
        for mime, value in data.items()
    }


class ChannelStream(io.TextIOBase):
    """sys.stdout / sys.stderr of the session: line-buffered text sent as output frames.

    Past LINE_FLUSH_FRAMES frames in one execution it flushes only every FLUSH_AT characters
    (and before any other frame): a loop printing a million short lines makes a few hundred
    frames, not a million. In a process forked by user code (where the kernel must stay silent)
    it writes to its file descriptor instead, which the host also reads.
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
        if self._size >= self.FLUSH_AT or ("\n" in text and _line_flush()):
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
            kernel.send_output(self.stream_name, text)


def _line_flush() -> bool:
    kernel = Kernel.current
    return kernel is None or kernel.output_frames < LINE_FLUSH_FRAMES


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

    @property
    def db(self) -> Any:
        """IPython's key/value store (`%cd -`, `%bookmark`, `%store`), made on first use in the
        session's own home: the profile directory is the zygote's, a host path that is read-only
        in the jail. (Making a new profile directory at start-up would cost each session ~0.5 ms.)
        """
        home = os.environ.get("HOME") or "/tmp"
        wanted = os.path.join(home, ".ipython", "profile_default", "db")
        # IPython 8 makes its store at start-up, in the zygote: one for another place is replaced.
        if self._db is None or str(getattr(self._db, "root", "")) != wanted:
            from IPython.external.pickleshare import PickleShareDB

            self._db = PickleShareDB(wanted)
        return self._db

    @db.setter
    def db(self, value: Any) -> None:
        self._db = value


def _pip_magic(line: str) -> None:
    """%pip. Where the session's network policy lets pip reach an index (PIP_TARGET is set),
    pip runs and installs into the session's own directory, which is on the import path at
    once; otherwise there is no network, and `install` says so at once instead of retrying."""
    from importlib import metadata

    words = line.split()
    if os.environ.get("PIP_TARGET"):
        _run_pip(words)
        return
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


def _run_pip(words: list[str]) -> None:
    import importlib
    import site
    import subprocess

    if words[:1] == ["install"]:
        _check_indexes_allowed(words)
    sys.stdout.flush()
    status = subprocess.call([sys.executable, "-m", "pip", *words])
    if words[:1] == ["install"]:
        target = os.environ["PIP_TARGET"]
        if target not in sys.path:
            site.addsitedir(target)
        importlib.invalidate_caches()  # the directory may be new: look again
    if status != 0:
        raise RuntimeError(f"pip {' '.join(words[:1])} failed (exit status {status}): see above")


# Where pip goes by default: the index, and the host PyPI serves its files from.
PYPI_HOSTS = ("https://pypi.org/simple", "https://files.pythonhosted.org/")


def _check_indexes_allowed(words: list[str]) -> None:
    """Refuse at once, with the reason, an install from an index the policy does not allow
    (pip would only say it found no such package)."""
    from urllib.parse import urlsplit

    from codeinterp.sandbox import domains

    urls = _index_urls(words)
    rules = [
        domains.Rule.parse(entry)
        for entry in os.environ.get("CODEINTERP_ALLOWED_DOMAINS", "").split(",")
        if entry
    ]
    for address in urls:
        parts = urlsplit(address)
        if parts.scheme not in domains.DEFAULT_PORTS or not parts.hostname:
            continue  # a local path or a file: URL: nothing to reach
        port = parts.port or domains.DEFAULT_PORTS[parts.scheme]
        refusal = domains.refusal(rules, parts.hostname, port, parts.scheme)
        if refusal is not None:
            allowed = os.environ.get("CODEINTERP_ALLOWED_DOMAINS", "").replace(",", ", ")
            raise RuntimeError(
                f"cannot install from {address}: {refusal} of this session's network policy "
                f"(allowed: {allowed})"
            )


def _index_urls(words: list[str]) -> list[str]:
    """The index URLs an install reads: its options, else pip's variables, else PyPI."""
    urls: list[str] = []
    primary: str | None = None
    for i, word in enumerate(words):
        for flag in ("--index-url", "-i", "--extra-index-url"):
            value = None
            if word == flag and i + 1 < len(words):
                value = words[i + 1]
            elif word.startswith(flag + "="):
                value = word.split("=", 1)[1]
            if value is not None:
                if flag == "--extra-index-url":
                    urls.append(value)
                else:
                    primary = value
    if "--no-index" in words:
        return urls
    primary = primary or os.environ.get("PIP_INDEX_URL")
    urls += os.environ.get("PIP_EXTRA_INDEX_URL", "").split()
    return [primary, *urls] if primary else [*PYPI_HOSTS, *urls]


def build_shell(matplotlib: bool = True) -> SandboxShell:
    """Create the shell once, in the zygote, before any session exists. `matplotlib`: set up
    its inline backend now (it imports matplotlib); otherwise a session that imports pyplot
    gets the backend from MPLBACKEND, and its figures are shown all the same (see
    `_flush_open_figures`)."""
    config = Config()
    config.HistoryManager.enabled = False  # its SQLite writer is a thread; forks need none
    config.InteractiveShell.colors = "nocolor"  # tracebacks are read by models and people
    # Python's own layout, one source line per frame (cells named "Cell In[N], line L"): the
    # context layout parses every file on the stack, 0.1-0.8 s for an error inside pandas
    # against ~5 ms, and spends the reader's tokens on library source.
    config.InteractiveShell.xmode = "Plain"
    config.InteractiveShell.autocall = 0
    config.InteractiveShell.cache_size = 100
    shell: SandboxShell = SandboxShell.instance(config=config)
    shell.register_magic_function(_pip_magic, "line", "pip")  # type: ignore[arg-type]
    if matplotlib:
        shell.enable_matplotlib("inline")
    return shell


def rehearse(shell: SandboxShell, cells: Iterable[str]) -> None:
    """Run `cells` through the whole execution path once, in the zygote, unseen; then put the
    shell back as it was (count, history, namespace, SIGINT).

    What the first execution builds lazily (caches, compiled patterns, formatter state) is then
    built once and shared by every session, instead of being built again in each one: measured
    here, a session after a first pandas cell holds ~2.7 MB less private memory.
    """
    kernel = Kernel(shell, _Discard())  # type: ignore[arg-type]
    saved = _ShellState(shell)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            for number, code in enumerate(cells, 1):
                kernel.execute({"id": number, "code": code})
    finally:
        saved.restore()
        signal.signal(signal.SIGINT, sigint)
        Kernel.current = None
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                delattr(sys, name)  # the error cell's, which IPython keeps there


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


def _bounded_report(report: dict[str, Any]) -> dict[str, Any]:
    """A restore or snapshot report small enough for one frame: the first MAX_SKIPPED names
    left out (reasons clipped), the first errors."""
    skipped = report.get("skipped") or {}
    return {
        **report,
        "skipped": {
            str(name)[:MAX_KEY_CHARS]: str(why)[:300]
            for name, why in list(skipped.items())[:MAX_SKIPPED]
        },
        "errors": [str(e)[:300] for e in (report.get("errors") or [])[:20]],
    }


def _request_id(message: dict[str, Any]) -> int:
    value = message.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _clip(text: str) -> str:
    """At most MAX_ERROR_CHARS: the start and the end, with the middle cut out."""
    if len(text) <= MAX_ERROR_CHARS:
        return text
    half = MAX_ERROR_CHARS // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


class _Discard:
    """Stands in for the session socket during the warm-up: its frames reach nobody."""

    def sendall(self, data: bytes) -> None:
        pass


def _attach_stdin(data: bytes | None) -> None:
    """Make `data` the session's standard input (descriptor 0, so child processes read it too),
    or /dev/null again with None. The bytes live in an anonymous memory file: no pipe to fill,
    nothing in /mnt/data."""
    if data is None:
        fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    else:
        fd = os.memfd_create("stdin", os.MFD_CLOEXEC)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    try:
        os.dup2(fd, 0)  # inheritable: a subprocess gets the same input
    finally:
        os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115


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
        # Output is counted per execution: past the host's cap it is not sent at all.
        self._output_cap = sys.maxsize
        self._output_sent = {"stdout": 0, "stderr": 0}
        self._output_unsent = {"stdout": 0, "stderr": 0}
        self.output_frames = 0
        # One frame (or one result with its parts) at a time, whichever thread sends it. While
        # code runs, the main thread blocks SIGINT as it sends (the host interrupts the main
        # thread only), so an interrupt never cuts a frame or a run of frames short.
        self._send_lock = threading.RLock()
        self._main_thread = threading.get_ident()
        self._sending = 0
        self._interruptible = False  # code is running: SIGINT raises KeyboardInterrupt
        self._output_deferred: list[tuple[str, str]] = []  # printed by a handler mid-send
        Kernel.current = self
        # Code that forks without exec runs on in a copy of this kernel: that copy must never
        # speak on the channel (see `execute`).
        os.register_at_fork(after_in_child=Kernel._forget)

    @staticmethod
    def _forget() -> None:
        Kernel.current = None

    # -- output -----------------------------------------------------------------------------

    def _send_frames(self, frames: Iterable[bytes]) -> None:
        """Send a run of frames, which no interrupt cuts short (a frame sent in part would
        break the channel): SIGINT, blocked meanwhile, lands once they are all sent."""
        main = threading.get_ident() == self._main_thread
        with self._send_lock:
            block = main and self._interruptible and not self._sending
            if block:
                mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
            if main:
                self._sending += 1
            try:
                for frame in frames:
                    self.sock.sendall(frame)
            finally:
                if main:
                    self._sending -= 1
                if block:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if main and not self._sending:
            while self._output_deferred:
                self.send_output(*self._output_deferred.pop(0))

    @staticmethod
    def _encode(message: dict[str, Any]) -> bytes:
        try:
            body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate: escape it as JSON does
            body = json.dumps(message, separators=(",", ":")).encode()
        return len(body).to_bytes(4, "big") + body

    def send(self, message: dict[str, Any]) -> None:
        """Send a frame after any text still buffered in stdout and stderr."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.send_frame(message)

    def send_frame(self, message: dict[str, Any]) -> None:
        self._send_frames((self._encode(message),))

    def send_output(self, name: str, text: str) -> None:
        """Text written to sys.stdout or sys.stderr, as raw output frames, up to the cap."""
        if self._sending and threading.get_ident() == self._main_thread:
            # A signal handler that prints while the main thread is part way through a frame:
            # the text follows once that frame is whole.
            self._output_deferred.append((name, text))
            return
        data = text.encode("utf-8", "backslashreplace")
        room = self._output_cap - self._output_sent[name]
        if len(data) > room:
            self._output_unsent[name] += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        if not data:
            return
        self._output_sent[name] += len(data)
        self.output_frames += 1
        tag = TAG_STDOUT if name == "stdout" else TAG_STDERR
        step = MAX_KERNEL_FRAME - 1
        if len(data) <= step:
            self._send_frames((encode_output(tag, data),))
        else:
            self._send_frames(
                encode_output(tag, data[i : i + step]) for i in range(0, len(data), step)
            )

    def _send_with_parts(self, frame: bytes, parts: dict[str, str]) -> None:
        """Send each long value as part frames, then `frame`, which names them."""
        sys.stdout.flush()
        sys.stderr.flush()
        # Encoded before the first frame goes: once a run has started, only a broken socket
        # may stop it, never a MemoryError half way.
        encoded = [(k.encode(), v.encode("utf-8", "backslashreplace")) for k, v in parts.items()]

        def frames() -> Iterator[bytes]:
            for name, data in encoded:
                room = part_room(name)
                for start in range(0, len(data), room):
                    yield encode_part(name, data[start : start + room])
            yield frame

        self._send_frames(frames() if parts else (frame,))

    def send_result(self, kind: str, data: dict[str, Any], metadata: Any) -> None:
        bundle = {
            mime: value
            for mime, value in _jsonable_bundle(data).items()
            if isinstance(mime, str)
            and 0 < len(mime) <= MAX_KEY_CHARS
            and (isinstance(value, str) or is_json_type(mime))
        }
        message: dict[str, Any] = {
            "ev": "result",
            "id": self._execution_id,
            "type": kind,
            "data": bundle,
            "metadata": metadata if isinstance(metadata, dict) else {},
        }
        try:
            size = len(json.dumps(message))
        except (TypeError, ValueError):
            text = data.get("text/plain", "")
            message["data"], message["metadata"], size = {"text/plain": str(text)}, {}, 0
        if not message["data"]:
            return  # nothing the host could show
        if size > MAX_BUNDLE_BYTES:
            message["data"] = {
                "text/plain": f"[output of {size} bytes dropped: over the "
                f"{MAX_BUNDLE_BYTES // (1024 * 1024)} MiB limit for one result]"
            }
            message["metadata"] = {}
        # Long text moves to part frames; then, while the frame is still too large, all text,
        # the metadata and the values that are JSON (not text) in turn; at worst, a marker.
        values: dict[str, Any] = message["data"]
        parts: dict[str, str] = {}

        def to_parts(longer_than: int) -> None:
            for mime in [m for m, v in values.items() if isinstance(v, str)]:
                if len(values[mime]) > longer_than and len(parts) < MAX_PARTS:
                    parts[mime] = values.pop(mime)

        to_parts(INLINE_CHARS)
        for shrink in ("text", "metadata", "json", "all"):
            frame = self._encode({**message, "parts": list(parts)} if parts else message)
            if len(frame) <= MAX_KERNEL_FRAME and (values or parts):
                break
            if shrink == "text":
                to_parts(0)
            elif shrink == "metadata":
                message["metadata"] = {}
            elif shrink == "json":
                for mime in [m for m, v in values.items() if not isinstance(v, str)]:
                    del values[mime]
            else:
                parts.clear()
                message["data"] = {"text/plain": "[output dropped: too large to send]"}
                frame = self._encode(message)
        self._send_with_parts(frame, parts)

    def report_error(self, name: str, value: str, traceback: str) -> None:
        self._error = {"name": name, "value": value, "traceback": traceback}
        fields = {"value": _clip(value), "traceback": _clip(traceback)}
        parts = {key: text for key, text in fields.items() if len(text) > INLINE_CHARS}
        message: dict[str, Any] = {
            "ev": "error",
            "id": self._execution_id,
            "name": name[:MAX_ERROR_NAME],
        }
        message.update((key, text) for key, text in fields.items() if key not in parts)
        if parts:
            message["parts"] = list(parts)
        self._send_with_parts(self._encode(message), parts)

    # -- requests ---------------------------------------------------------------------------

    def serve(
        self, timings: dict[str, float] | None = None, restored: dict[str, Any] | None = None
    ) -> None:
        # SIGINT interrupts user code only: it is ignored between executions, and while code
        # runs the C default handler raises KeyboardInterrupt with no frame of ours in the
        # traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ready: dict[str, Any] = {"ev": "ready", "timings": timings or {}}
        if restored is not None:
            ready["restored"] = _bounded_report(restored)
        self.send(ready)
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "execute": self.execute,
            "snapshot": self.snapshot,
            "ping": lambda message: self.send({"ev": "pong", "id": _request_id(message)}),
            "warm": self.warm,
        }
        while True:
            message = recv_message(self.sock)
            if message is None:
                return
            handler = handlers.get(message.get("op", ""))
            if handler is None:
                self.send(
                    {
                        "ev": "done",
                        "id": _request_id(message),
                        "status": "error",
                        "execution_count": None,
                        "unsent": {},
                    }
                )
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
        self.send({"ev": "pong", "id": _request_id(message)})

    def snapshot(self, message: dict[str, Any]) -> None:
        """Stream this session's snapshot (see snapshot.py) as blob frames, then say how it
        went. Up to `max_bytes`: past it the snapshot stops, with an error."""
        self._execution_id = _request_id(message)
        limit = message.get("max_bytes")
        writer = BlobWriter(
            lambda data: self._send_frames((encode_blob(data),)),
            MAX_KERNEL_FRAME - 1,
            limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        )
        saved, skipped, error, status = 0, {}, "", "ok"
        home = session_home(self.workspace)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                summary = write_archive(self.shell, writer, self.workspace, home)
            writer.flush()
            saved, skipped = len(summary["saved"]), summary["skipped"]
        except Exception as exc:
            error = _clip(f"{type(exc).__name__}: {exc}")
            status = "too_large" if isinstance(exc, TooLarge) else "error"
        self.send(
            {
                "ev": "saved",
                "id": self._execution_id,
                "status": status,
                "bytes": writer.written,
                "saved": saved,
                "skipped": _bounded_report({"skipped": skipped})["skipped"],
                "error": error[:2000],
            }
        )

    def execute(self, message: dict[str, Any]) -> None:
        code = str(message.get("code", ""))
        self._execution_id = _request_id(message)
        cap = message.get("output_cap")
        self._output_cap = cap if isinstance(cap, int) and cap >= 0 else sys.maxsize
        self._output_sent = {"stdout": 0, "stderr": 0}
        self._output_unsent = {"stdout": 0, "stderr": 0}
        self.output_frames = 0
        self._error = None
        interrupted = False
        count = self.shell.execution_count
        stdin = message.get("stdin")
        try:
            if isinstance(stdin, str):
                _attach_stdin(stdin.encode())
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._interruptible = True
            result = self.shell.run_cell(code, store_history=True)
            count = result.execution_count
            self._forget_history_cache()
            self._flush_open_figures()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self._interruptible = False
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if isinstance(stdin, str) and os.getpid() == self.pid:
                _attach_stdin(None)
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
                "execution_count": count if isinstance(count, int) and count >= 0 else None,
                "unsent": {k: v for k, v in self._output_unsent.items() if v},
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
